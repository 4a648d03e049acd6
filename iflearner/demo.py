"""`iflearner-operator demo`: the whole product on a local cluster.

Starts the local control plane, bootstraps it with the top-level Pulumi
project (real CLI), runs the operator as a local process against it, applies
the example federation (a server and two parties), waits until all three are
Running and prints a status table. Without ``--keep`` (and on Ctrl-C) it
deletes the jobs, destroys the bootstrap stack and stops everything.
Re-runnable from any state: what an unclean stop leaves behind is detected
and removed, never reused.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.desired import ClusterSettings
from iflearner.localcluster import LocalCluster
from iflearner.operator_record import read_operator_record
from iflearner.toolchain import REPO_ROOT

EXAMPLES = ("server.yaml", "party-a.yaml", "party-b.yaml")
GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"
NAMESPACE = "default"


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


class DemoError(RuntimeError):
    """The demo cannot start; the message says what to do."""


class Demo:
    """The demo's processes and state, all under ``data_dir``.

    Everything the demo keeps besides the cluster (the bootstrap stack's
    state, the job stacks' state, the operator's work directories) describes
    one cluster, identified by its ``kube-system`` namespace UID (new at every
    ``cluster up``). State of a cluster that is gone is never reused.
    """

    def __init__(self, data_dir: Path, timeout: float) -> None:
        self.data_dir = data_dir
        self.timeout = timeout
        self.cluster = LocalCluster(data_dir / "cluster")
        self.controller: subprocess.Popen[bytes] | None = None
        self.passphrase_file = data_dir / "passphrase"
        self.identity_file = data_dir / "cluster-identity"
        self.pid_file = data_dir / "operator.pid"
        self.job_state = data_dir / "job-state"
        # Per-cluster state, removed with the cluster.
        self.cluster_state_dirs = (data_dir / "bootstrap-state", self.job_state, data_dir / "operator-state")

    @property
    def backend_url(self) -> str:
        return f"file://{self.job_state.resolve()}"

    def bootstrap(self, kubeconfig: Path) -> BootstrapProject:
        return BootstrapProject("local", kubeconfig, self.data_dir / "bootstrap-state", self._passphrase())

    def run(self, keep: bool) -> int:
        """Run the demo; clean up unless ``keep`` (always on failure or Ctrl-C)."""
        running = self.cluster.running_state()
        if running is not None:
            raise DemoError(f"a demo is already running (KUBECONFIG={running.kubeconfig}); "
                            "stop it first with: .venv/bin/python -m iflearner demo --down")
        # An operator left by a demo whose cluster was stopped some other way.
        stop_pid_file(self.pid_file)
        started = time.monotonic()
        try:
            kubeconfig = self._bring_up()
        except KeyboardInterrupt:
            say("interrupted; cleaning up")
            self.down()
            return 130
        except BaseException:
            self.down()
            raise
        say(f"the federation is Running ({time.monotonic() - started:.0f}s in all)")
        if keep:
            say(f"left running; explore it with: export KUBECONFIG={kubeconfig}; kubectl get iflearnerjobs")
            say("stop it with: .venv/bin/python -m iflearner demo --down")
        else:
            self.down()
        return 0

    def _bring_up(self) -> Path:
        say("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
        state = self.cluster.up(progress=lambda m: say(f"  {m}"))
        self._forget_state_of_other_clusters(state.kubeconfig)
        bootstrap = self.bootstrap(state.kubeconfig)
        say("bootstrapping the cluster with `pulumi up` (CRD, operator RBAC, ingress-nginx, CoreDNS, CA)")
        bootstrap.ensure_stack()
        # Recorded by the bootstrap in the cluster, so `preview` uses the operator's stacks.
        bootstrap.set_config("iflearner:stateBackendUrl", self.backend_url)
        bootstrap.set_config("iflearner:statePassphrase", self._passphrase(), secret=True)
        bootstrap.up(progress=lambda line: say(f"  {line}") if _is_step(line) else None)
        self._start_controller(state.kubeconfig)
        api = self._custom_objects(state.kubeconfig)
        for name in EXAMPLES:
            manifest = yaml.safe_load((REPO_ROOT / "examples" / name).read_text())
            api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest)
            say(f"applied examples/{name} ({manifest['metadata']['name']})")
        print(_table(self._wait_running(api)), flush=True)
        return state.kubeconfig

    def _forget_state_of_other_clusters(self, kubeconfig: Path) -> None:
        identity = cluster_identity(kubeconfig)
        recorded = self.identity_file.read_text().strip() if self.identity_file.exists() else None
        if recorded != identity and any(d.exists() for d in self.cluster_state_dirs):
            say("the demo's earlier state belongs to a cluster that is gone (it was stopped without "
                "`demo --down`); starting clean")
            self._remove_cluster_state()
        self.identity_file.write_text(identity)

    def _remove_cluster_state(self) -> None:
        for directory in self.cluster_state_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self.identity_file.unlink(missing_ok=True)

    def _passphrase(self) -> str:
        if not self.passphrase_file.exists():
            self.passphrase_file.touch(mode=0o600)
            self.passphrase_file.write_text(secrets.token_urlsafe(24))
        return self.passphrase_file.read_text()

    def _start_controller(self, kubeconfig: Path) -> None:
        # The settings the bootstrap recorded for the operator: one source of truth.
        record = read_operator_record(kubeconfig.read_text(), ClusterSettings().operator_namespace)
        if record is None or not record.cluster_settings_yaml:
            raise RuntimeError("the bootstrap recorded no operator settings in the cluster")
        settings_file = self.data_dir / "cluster-settings.yaml"
        settings_file.write_text(record.cluster_settings_yaml)
        self.job_state.mkdir(parents=True, exist_ok=True)
        self._passphrase()
        log = (self.data_dir / "operator.log").open("ab")
        say(f"starting the operator as a local process (log: {self.data_dir / 'operator.log'})")
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "iflearner", "run", "--kubeconfig", str(kubeconfig),
             "--backend-url", self.backend_url, "--state-dir", str(self.data_dir / "operator-state"),
             "--passphrase-file", str(self.passphrase_file), "--cluster-settings", str(settings_file),
             "--metrics-address", "127.0.0.1:0", "--health-address", "127.0.0.1:0"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid_file.write_text(str(self.controller.pid))

    @staticmethod
    def _custom_objects(kubeconfig: Path) -> Any:
        from kubernetes import client, config

        return client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))

    def _wait_running(self, api: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + self.timeout
        last = ""
        while True:
            jobs = api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
            phases = {j["metadata"]["name"]: (j.get("status") or {}).get("phase", "Unknown") for j in jobs}
            summary = ", ".join(f"{n}={p}" for n, p in sorted(phases.items()))
            if summary != last:
                say(f"  {summary}")
                last = summary
            if len(jobs) == len(EXAMPLES) and all(p == "Running" for p in phases.values()):
                return jobs
            if self.controller is not None and self.controller.poll() is not None:
                log = self.data_dir / "operator.log"
                raise RuntimeError(f"the operator exited ({self.controller.returncode}); see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs not Running after {self.timeout:.0f}s: {summary}")
            time.sleep(1)

    def down(self) -> bool:
        """Delete the jobs of every namespace (their stacks destroyed by the
        operator), destroy the bootstrap stack, stop the cluster and forget its
        state. True when all of it succeeded or nothing was left to clean."""
        state = self.cluster.running_state()
        if state is None:
            stop_pid_file(self.pid_file)
            if any(d.exists() for d in self.cluster_state_dirs):
                say("the demo's cluster is not running; removing the state it left behind")
                self._remove_cluster_state()
            self.cluster.down()  # records of processes that died with a reboot
            say("nothing left to clean")
            return True
        clean = True
        try:
            if not pid_alive(self.pid_file):
                self._start_controller(state.kubeconfig)  # its finalizers need an operator
            self._delete_jobs(state.kubeconfig)
        except Exception as error:  # noqa: BLE001 - cleanup goes on regardless
            say(f"  could not delete jobs cleanly: {error}")
            clean = False
        stop_pid_file(self.pid_file)
        if (self.data_dir / "bootstrap-state").exists():
            try:
                say("destroying the bootstrap stack")
                self.bootstrap(state.kubeconfig).destroy()
            except Exception as error:  # noqa: BLE001
                say(f"  bootstrap destroy failed: {error}")
                clean = False
        say("stopping the local control plane")
        self.cluster.down()
        # Whatever failed above, that state described a cluster that is gone now.
        self._remove_cluster_state()
        return clean

    def _delete_jobs(self, kubeconfig: Path) -> None:
        from kubernetes.client.rest import ApiException

        api = self._custom_objects(kubeconfig)

        def jobs() -> list[dict[str, Any]]:
            try:
                return list(api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])
            except ApiException as error:
                if error.status == 404:  # no CRD: the bootstrap never ran
                    return []
                raise

        found = jobs()
        for job in found:
            meta = job["metadata"]
            api.delete_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
        if found:
            say(f"deleting {len(found)} job(s) in every namespace (the operator destroys their stacks)")
        deadline = time.monotonic() + 300
        while remaining := jobs():
            if time.monotonic() > deadline:
                names = ", ".join(f"{j['metadata']['namespace']}/{j['metadata']['name']}" for j in remaining)
                raise TimeoutError(f"jobs were not finalized within 300s: {names}")
            time.sleep(1)


def cluster_identity(kubeconfig: Path) -> str:
    """The UID of the cluster's ``kube-system`` namespace: new with every cluster."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        return str(client.CoreV1Api(api).read_namespace("kube-system").metadata.uid)
    finally:
        api.close()


def pid_alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def stop_pid_file(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_file.unlink(missing_ok=True)


_DONE_STEP = re.compile(r"^\s*[-+~]\s+\S+ \S+ (created|updated|deleted)\b")


def _is_step(line: str) -> bool:
    """Lines worth showing a newcomer: finished resources, not every await message."""
    return bool(_DONE_STEP.match(line))


def _table(jobs: list[dict[str, Any]]) -> str:
    rows = [("NAME", "ROLE", "HOST", "PHASE", "READY", "SERVICE")]
    for job in sorted(jobs, key=lambda j: j["metadata"]["name"]):
        status = job.get("status") or {}
        ready = next((c["status"] for c in status.get("conditions", []) if c["type"] == "Ready"), "Unknown")
        rows.append((job["metadata"]["name"], job["spec"]["role"], job["spec"]["host"], status.get("phase", ""),
                     ready, (status.get("outputs") or {}).get("service", "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def default_data_dir() -> Path:
    return Path.home() / ".cache" / "iflearner-operator" / "demo"
