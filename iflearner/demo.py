"""`iflearner-operator demo`: the whole product on a local cluster.

Starts the local control plane, bootstraps it with the top-level Pulumi
project (real CLI), runs the operator as a local process against it, applies
the example federation (a server and two parties), waits until all three are
Running and prints a status table. Without ``--keep`` (and on Ctrl-C) it
deletes the jobs, destroys the bootstrap stack and stops everything.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.localcluster import LocalCluster
from iflearner.toolchain import REPO_ROOT

EXAMPLES = ("server.yaml", "party-a.yaml", "party-b.yaml")
GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"
NAMESPACE = "default"


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


class Demo:
    def __init__(self, data_dir: Path, timeout: float) -> None:
        self.data_dir = data_dir
        self.timeout = timeout
        self.cluster = LocalCluster(data_dir / "cluster")
        self.controller: subprocess.Popen[bytes] | None = None
        self.bootstrap: BootstrapProject | None = None

    def run(self, keep: bool) -> int:
        """Run the demo; clean up unless ``keep`` (always on failure or Ctrl-C)."""
        started = time.monotonic()
        try:
            kubeconfig = self._bring_up()
        except KeyboardInterrupt:
            say("interrupted; cleaning up")
            self.cleanup()
            return 130
        except BaseException:
            self.cleanup()
            raise
        say(f"the federation is Running ({time.monotonic() - started:.0f}s in all)")
        if keep:
            say(f"left running; explore it with: export KUBECONFIG={kubeconfig}; kubectl get iflearnerjobs")
            say("stop it with: .venv/bin/python -m iflearner demo --down")
        else:
            self.cleanup()
        return 0

    def _bring_up(self) -> Path:
        say("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
        state = self.cluster.up(progress=lambda m: say(f"  {m}"))
        passphrase_file = self.data_dir / "passphrase"
        if not passphrase_file.exists():
            passphrase_file.write_text(secrets.token_urlsafe(24))
            passphrase_file.chmod(0o600)
        self.bootstrap = BootstrapProject("local", state.kubeconfig, self.data_dir / "bootstrap-state",
                                          passphrase_file.read_text())
        say("bootstrapping the cluster with `pulumi up` (CRD, operator RBAC, ingress-nginx, CoreDNS, CA)")
        self.bootstrap.up(progress=lambda line: say(f"  {line}") if _is_step(line) else None)
        self._start_controller(state.kubeconfig, passphrase_file)
        api = self._custom_objects(state.kubeconfig)
        for name in EXAMPLES:
            manifest = yaml.safe_load((REPO_ROOT / "examples" / name).read_text())
            api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest)
            say(f"applied examples/{name} ({manifest['metadata']['name']})")
        print(_table(self._wait_running(api)), flush=True)
        return state.kubeconfig

    def _start_controller(self, kubeconfig: Path, passphrase_file: Path) -> None:
        settings_file = self.data_dir / "cluster-settings.yaml"
        settings_file.write_text(yaml.safe_dump({"ingressAddress": "10.96.200.1"}))
        log = (self.data_dir / "operator.log").open("ab")
        say(f"starting the operator as a local process (log: {self.data_dir / 'operator.log'})")
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "iflearner", "run", "--kubeconfig", str(kubeconfig),
             "--backend-url", f"file://{(self.data_dir / 'job-state').resolve()}",
             "--passphrase-file", str(passphrase_file), "--cluster-settings", str(settings_file),
             "--metrics-address", "127.0.0.1:0", "--health-address", "127.0.0.1:0"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        (self.data_dir / "job-state").mkdir(exist_ok=True)
        (self.data_dir / "operator.pid").write_text(str(self.controller.pid))

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

    def cleanup(self) -> None:
        try:
            if self.cluster.running_state() is not None:
                self._delete_jobs()
        except Exception as error:  # noqa: BLE001 - cleanup goes on regardless
            say(f"  could not delete jobs cleanly: {error}")
        stop_pid_file(self.data_dir / "operator.pid")
        state = self.cluster.running_state()
        passphrase_file = self.data_dir / "passphrase"
        if self.bootstrap is None and state is not None and passphrase_file.exists():
            self.bootstrap = BootstrapProject("local", state.kubeconfig, self.data_dir / "bootstrap-state",
                                              passphrase_file.read_text())
        if self.bootstrap is not None and state is not None:
            try:
                say("destroying the bootstrap stack")
                self.bootstrap.destroy()
            except Exception as error:  # noqa: BLE001
                say(f"  bootstrap destroy failed: {error}")
        say("stopping the local control plane")
        self.cluster.down()

    def _delete_jobs(self) -> None:
        state = self.cluster.running_state()
        assert state is not None
        api = self._custom_objects(state.kubeconfig)
        jobs = api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
        for job in jobs:
            api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, job["metadata"]["name"])
        if jobs:
            say("deleting the jobs (the operator destroys their stacks)")
        deadline = time.monotonic() + 300
        while api.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]:
            if time.monotonic() > deadline:
                raise TimeoutError("jobs were not finalized within 300s")
            time.sleep(1)


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
