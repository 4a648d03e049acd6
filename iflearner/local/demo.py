"""`iflearner-operator demo`: the whole product on a local cluster.

``--node kwok`` (the fallback where containers cannot run): starts the local
control plane with a simulated node, bootstraps it with the top-level Pulumi
project (real CLI), runs the operator as a local process, applies the
original README's three jobs and prints a status table once all are Running.

``--node real``: a real node (containerd, kubelet, kube-proxy, CoreDNS), the
project's images (operator, Traefik, workload) built and pushed to the
node's registry, then pulled by digest (the kubelet's pulls are listed), the
bootstrap's `pulumi up` running the operator as a Pod and Traefik as the
gateway; then ``examples/federation`` trains for real: each job's phase and
each epoch's metric are printed as they happen, then the final metric and a
PNG plot of the metric per epoch.

Without ``--keep`` (and on Ctrl-C) it deletes the jobs, destroys the
bootstrap stack and stops everything. Re-runnable from any state: what an
unclean stop leaves behind is detected and removed, never reused.
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
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.desired import ClusterSettings
from iflearner.local.progress import Event, LogFollower, describe, final_metrics
from iflearner.local.topology import (
    FEDERATION_DIR,
    GROUP,
    NAMESPACE,
    OPERATOR_UID,
    PLURAL,
    SERVER,
    SIDES,
    VERSION,
    WORKLOAD_PLACEHOLDER,
    OriginalTopology,
    example_job,
    pulled_images,
    push_federation_images,
)
from iflearner.localcluster import LocalCluster
from iflearner.operator_record import read_operator_record
from iflearner.toolchain import REPO_ROOT

EXAMPLES = ("server.yaml", "party-a.yaml", "party-b.yaml")
OPERATOR_LABEL = "app.kubernetes.io/name=iflearner-operator"
NODE_KINDS = ("kwok", "real")
# "one": every job in one cluster (fast, the default); "original": the original README's three
# clusters (server, party a, party b) with secure aggregation between the parties (real node only).
TOPOLOGIES = ("one", "original")


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

    def __init__(self, data_dir: Path, timeout: float, node: str = "kwok", topology: str = "one") -> None:
        if node not in NODE_KINDS:
            raise DemoError(f"unknown node kind {node!r}; choose one of {', '.join(NODE_KINDS)}")
        if topology not in TOPOLOGIES:
            raise DemoError(f"unknown topology {topology!r}; choose one of {', '.join(TOPOLOGIES)}")
        if topology == "original" and node != "real":
            raise DemoError("--topology original runs three clusters of real containers: it needs --node real "
                            "(this machine must be able to run a real node)")
        self.data_dir = data_dir
        self.timeout = timeout
        self.node = node
        self.topology = topology
        self.original_dir = data_dir / "original"  # the three clusters' stacks and party clusters
        self.cluster = LocalCluster(data_dir / "cluster")
        self.failure_log = data_dir / "demo-failure.log"  # the traceback of the last unexpected failure
        self.poll_interval = 1.0
        self.controller: subprocess.Popen[bytes] | None = None
        self.passphrase_file = data_dir / "passphrase"
        self.identity_file = data_dir / "cluster-identity"
        self.pid_file = data_dir / "operator.pid"
        self.job_state = data_dir / "job-state"
        # Per-cluster state, removed with the cluster.
        self.operator_volume = data_dir / "operator-volume"  # the operator Pod's state (real node)
        self.cluster_state_dirs = (data_dir / "bootstrap-state", self.job_state, data_dir / "operator-state",
                                   self.operator_volume)

    @property
    def backend_url(self) -> str:
        return f"file://{self.job_state.resolve()}"

    def bootstrap(self, kubeconfig: Path, node: str | None = None) -> BootstrapProject:
        stack = "local-real" if (node or self.node) == "real" else "local"
        return BootstrapProject(stack, kubeconfig, self.data_dir / "bootstrap-state", self._passphrase())

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
        except DemoError:
            self.down()
            raise
        except BaseException as error:
            if isinstance(error, Exception):
                say(f"failed {self.record_failure(error)}; cleaning up")
            self.down()
            raise
        done = "trained" if self.node == "real" else "is Running"
        say(f"the federation {done} ({time.monotonic() - started:.0f}s in all)")
        if keep:
            if self.topology == "original":
                for side in SIDES:
                    say(f"the {side.stack} cluster: export KUBECONFIG={self._original().kubeconfig(side)}")
            say(f"left running; explore it with: export KUBECONFIG={kubeconfig}; kubectl get iflearnerjobs")
            say("stop it with: .venv/bin/python -m iflearner demo --down")
        else:
            self.down()
        return 0

    def record_failure(self, error: Exception) -> str:
        """Write the traceback of an unexpected failure to ``failure_log``;
        where it happened and where to read the rest, for a person."""
        self.failure_log.write_text("".join(traceback.format_exception(error)))
        frames = traceback.extract_tb(error.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
        return f"with {type(error).__name__}{where} (traceback: {self.failure_log})"

    def _bring_up(self) -> Path:
        if self.node == "real":
            return self._bring_up_real()
        say("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok); "
            "Pods are simulated: `--node real` runs real containers and trains")
        state = self.cluster.up(progress=lambda m: say(f"  {m}"))
        self._forget_state_of_other_clusters(state.kubeconfig)
        bootstrap = self.bootstrap(state.kubeconfig)
        say("bootstrapping the cluster with `pulumi up` (CRD, operator RBAC, Traefik, CoreDNS, CA)")
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

    def _original(self) -> OriginalTopology:
        return OriginalTopology(self.original_dir, self._passphrase(), progress=lambda m: say(f"  {m}"),
                                clusters={SERVER.stack: self.cluster})

    def _bring_up_original(self) -> Path:
        # run() refused a running demo: whatever the directory holds describes clusters that are gone.
        shutil.rmtree(self.original_dir, ignore_errors=True)
        topology = self._original()
        say("starting three control planes with real nodes: the server's (slot 0), party a's (slot 1) and "
            "party b's (slot 2), each in a network of its own")
        topology.up_clusters()
        self._forget_state_of_other_clusters(self.cluster.kubeconfig)
        say("building the operator, Traefik and workload images (cached after the first run), importing them "
            "into every node")
        images = topology.load_images()
        say("bootstrapping each cluster with its stack from stacks/ in the README's order (server, party-a, "
            "party-b), then again with the CAs of the clusters that came after it")
        topology.bootstrap(images)
        for side in SIDES:
            job = example_job(side, images[side.stack]["iflearner-workload"])
            topology.apply([(side, job)])
            say(f"applied examples/federation/{side.example} ({job['metadata']['name']}) in the {side.stack} "
                "cluster")
        jobs = self.follow_training(topology.list_jobs, topology.read_log)
        print(_table(jobs), flush=True)
        return self.cluster.kubeconfig

    def _bring_up_real(self) -> Path:
        if self.topology == "original":
            return self._bring_up_original()
        say("starting the local control plane with a real node (containerd, kubelet, kube-proxy, CoreDNS)")
        state = self.cluster.up(node="real", progress=lambda m: say(f"  {m}"))
        self._forget_state_of_other_clusters(state.kubeconfig)
        images = self._load_images(state.slot)
        self.operator_volume.mkdir(parents=True, exist_ok=True)
        os.chown(self.operator_volume, OPERATOR_UID, OPERATOR_UID)  # hostPath volumes ignore fsGroup
        bootstrap = self.bootstrap(state.kubeconfig)
        bootstrap.ensure_stack()
        bootstrap.set_config("iflearner:operatorImage", images["iflearner-operator"])
        bootstrap.set_config("iflearner:gatewayImage", images["traefik"])
        bootstrap.set_config("iflearner:stateHostPath", str(self.operator_volume))
        bootstrap.set_config("iflearner:statePassphrase", self._passphrase(), secret=True)
        say("bootstrapping the cluster with `pulumi up` (CRD, the operator as a Pod, Traefik, CoreDNS, CA)")
        started = time.monotonic()
        bootstrap.up(progress=lambda line: say(f"  {line}") if _is_step(line) else None)
        api = self._api(state.kubeconfig)
        self._wait_operator_pod(api)
        say(f"the operator Pod is Ready ({time.monotonic() - started:.0f}s after `pulumi up` began)")
        custom = client.CustomObjectsApi(api)
        for name in EXAMPLES:
            text = (FEDERATION_DIR / name).read_text().replace(WORKLOAD_PLACEHOLDER, images["iflearner-workload"])
            manifest = yaml.safe_load(text)
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, manifest)
            say(f"applied examples/federation/{name} ({manifest['metadata']['name']})")
        core = client.CoreV1Api(api)
        jobs = self.follow_training(
            lambda: custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"],
            lambda pod: core.read_namespaced_pod_log(pod, NAMESPACE))
        print(_table(jobs), flush=True)
        from iflearner.bootstrap.gateway import NAMESPACE as GATEWAY_NAMESPACE

        for namespace in (ClusterSettings().operator_namespace, GATEWAY_NAMESPACE, NAMESPACE):
            for image in pulled_images(api, namespace):
                say(f"the kubelet pulled {image} (namespace {namespace})")
        return state.kubeconfig

    def _load_images(self, slot: int) -> dict[str, str]:
        from iflearner.localcluster.nodeconfig import NodeNetwork

        say("building the operator, Traefik and workload images (cached after the first run) and pushing them "
            "to the node's registry")
        return push_federation_images(self.cluster.data_dir, NodeNetwork(slot), progress=lambda m: say(f"  {m}"))

    def _wait_operator_pod(self, api: Any) -> None:
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + self.timeout
        while True:
            pods = core.list_namespaced_pod(ClusterSettings().operator_namespace, label_selector=OPERATOR_LABEL).items
            ready = [p for p in pods if any(c.type == "Ready" and c.status == "True"
                                            for c in (p.status.conditions or []))]
            if ready:
                return
            if time.monotonic() > deadline:
                phases = ", ".join(f"{p.metadata.name}={p.status.phase}" for p in pods) or "no Pod"
                raise TimeoutError(f"the operator Pod is not Ready after {self.timeout:.0f}s ({phases})")
            time.sleep(1)

    def follow_training(self, list_jobs: Callable[[], list[dict[str, Any]]],
                        read_log: Callable[[str], str | None]) -> list[dict[str, Any]]:
        """Print phases and the training's progress until every job ends; the jobs at the end."""
        follower = LogFollower(read_log)
        events: list[Event] = []
        deadline = time.monotonic() + self.timeout
        last = ""
        while True:
            jobs = list_jobs()
            phases = {j["metadata"]["name"]: (j.get("status") or {}).get("phase", "Pending") for j in jobs}
            summary = ", ".join(f"{n}={p}" for n, p in sorted(phases.items()))
            if summary != last:
                say(f"  {summary}")
                last = summary
            for job in jobs:
                for event in follower.new_events((job.get("status") or {}).get("outputs", {}).get("pod", "")
                                                 or job["metadata"]["name"]):
                    events.append(event)
                    line = describe(event)
                    if line:
                        say(f"  {line}")
            failed = [n for n, p in phases.items() if p == "Failed"]
            if failed:
                raise RuntimeError(f"job(s) {', '.join(failed)} failed: " + "; ".join(
                    _ready_message(j) for j in jobs if j["metadata"]["name"] in failed))
            if len(jobs) == len(EXAMPLES) and all(p == "Succeeded" for p in phases.values()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the federation did not finish in {self.timeout:.0f}s: {summary}")
            time.sleep(self.poll_interval)
        for party, (loss, accuracy) in sorted(final_metrics(events).items()):
            say(f"final metric of {party}: loss {loss:.4f}, accuracy {accuracy:.3f}")
        self._plot(follower.texts)
        return jobs

    def _plot(self, logs: dict[str, str]) -> None:
        plot_dir = self.data_dir / "federation"
        plot_dir.mkdir(exist_ok=True)
        files = []
        for pod, text in sorted(logs.items()):
            path = plot_dir / f"{pod}.log"
            path.write_text(text)
            files.append(str(path))
        out = plot_dir / "metrics.png"
        result = subprocess.run([sys.executable, str(REPO_ROOT / "workloads" / "iflearner" / "plot.py"),
                                 "--out", str(out), *files], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            say(f"  could not plot the metrics: {result.stderr.strip()[-500:]}")
            return
        say(f"the metric per epoch, as a plot: {out}")

    @staticmethod
    def _api(kubeconfig: Path) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig))

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
        clean, cleaned_original = True, self.original_dir.exists()
        if cleaned_original:
            # The original topology: every job deleted and stack destroyed in all three clusters, the
            # three clusters stopped (the server's is this demo's own cluster).
            say("cleaning the three clusters of the original topology")
            clean = self._original().down()
            shutil.rmtree(self.original_dir, ignore_errors=True)
        state = self.cluster.running_state()
        if state is None:
            stop_pid_file(self.pid_file)
            if any(d.exists() for d in self.cluster_state_dirs):
                say("the demo's cluster is not running; removing the state it left behind")
                self._remove_cluster_state()
            self.cluster.down()  # records of processes that died with a reboot
            if not cleaned_original:
                say("nothing left to clean")
            return clean
        node = state.node
        try:
            if node == "kwok" and not pid_alive(self.pid_file):
                self._start_controller(state.kubeconfig)  # its finalizers need an operator
            self._delete_jobs(state.kubeconfig)
        except Exception as error:  # noqa: BLE001 - cleanup goes on regardless
            say(f"  could not delete jobs cleanly: {error}")
            clean = False
        stop_pid_file(self.pid_file)
        if (self.data_dir / "bootstrap-state").exists():
            try:
                say("destroying the bootstrap stack")
                self.bootstrap(state.kubeconfig, node).destroy()
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


def _ready_message(job: dict[str, Any]) -> str:
    ready = next((c for c in (job.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), {})
    return f"{job['metadata']['name']}: {ready.get('message', 'no Ready condition')}"


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
