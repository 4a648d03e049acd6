"""Benchmark of the IflearnerJob controller on a real local control plane (issue 4).

    .venv/bin/python bench/run.py [--sequential 20] [--burst 50] [--workers 4]

Starts its own local cluster (etcd, kube-apiserver, controller-manager,
scheduler, kwok) in a temporary directory, installs the CRD and what the
bootstrap stack provides, runs the controller as a process (the same code as
``iflearner-operator run``) and prints:

1. apply -> Ready (phase Running) for N jobs one after another: p50, p95;
2. a burst of M jobs applied at once: time until all are Ready, jobs per
   minute, the controller's peak RSS (its own, and with its Pulumi processes);
3. a resync of every (unchanged) job: Pulumi runs started (must be 0), time;
4. for scale, the same objects (TLS Secret, trust ConfigMap, Service,
   Ingress, Pod) created directly with the kubernetes client, as a ratio.

Figures, not a pass/fail test. Exit status 1 only when something did not
converge or the resync started a Pulumi run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from kubernetes import client, config, utils, watch  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from iflearner.desired import ClusterSettings, desired_resources  # noqa: E402
from iflearner.job import parse_job  # noqa: E402
from iflearner.localcluster import LocalCluster  # noqa: E402
from iflearner.localcluster.kms import LocalKms  # noqa: E402
from iflearner.tlsresources import issue_ca, issue_leaf  # noqa: E402

GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"
PASSPHRASE = "benchmark-passphrase"


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def job_manifest(index: int, namespace: str, prefix: str) -> dict[str, Any]:
    """Alternate the original server and party jobs, each with its own name and host."""
    role_file = "server.yaml" if index % 2 == 0 else "party-a.yaml"
    manifest = yaml.safe_load((REPO / "examples" / role_file).read_text())
    name = f"{prefix}-{index:03d}"
    manifest["metadata"] = {"name": name, "namespace": namespace}
    zone = "server" if index % 2 == 0 else "a.party"
    manifest["spec"]["host"] = f"{name}.{zone}.iflearner.com"
    return manifest


# -- process and memory helpers -------------------------------------------------------------------

def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return 0.0, 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime) / ticks, (cutime + cstime) / ticks


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Peak memory of the controller process and of its whole process tree (Pulumi CLIs, providers).

    Two sums: RSS, which counts the pages of a binary shared by several of its processes once per
    process, and PSS, which divides them among the processes that share them (what the machine
    actually spends)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.tree_peak_kib = 0
        self.tree_peak_pss_kib = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            tree = _descendants(self.pid)
            self.tree_peak_kib = max(self.tree_peak_kib, sum(_status_kib(pid, "VmRSS") for pid in tree))
            self.tree_peak_pss_kib = max(self.tree_peak_pss_kib, sum(_pss_kib(pid) for pid in tree))

    @property
    def process_peak_kib(self) -> int:
        return _status_kib(self.pid, "VmHWM")


# -- watching for readiness -----------------------------------------------------------------------

class ReadyWatcher(threading.Thread):
    """Records when each object of a namespace first satisfies ``ready`` (from a watch stream)."""

    def __init__(self, list_call: Callable[..., Any], namespace: str,
                 ready: Callable[[Any], bool], name_of: Callable[[Any], str]) -> None:
        super().__init__(daemon=True)
        self.list_call, self.namespace, self.ready, self.name_of = list_call, namespace, ready, name_of
        self.times: dict[str, float] = {}
        self.changed = threading.Condition()
        self.stopped = False

    def run(self) -> None:
        while not self.stopped:
            stream = watch.Watch()
            try:
                for event in stream.stream(self.list_call, self.namespace, timeout_seconds=60):
                    obj = event["object"]
                    if self.ready(obj):
                        with self.changed:
                            self.times.setdefault(self.name_of(obj), time.monotonic())
                            self.changed.notify_all()
                    if self.stopped:
                        break
            except Exception:  # noqa: BLE001 - re-watch
                time.sleep(0.2)

    def wait(self, names: list[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(n in self.times for n in names):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = [n for n in names if n not in self.times]
                    raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(missing[:10])}")
                self.changed.wait(remaining)
            return {n: self.times[n] for n in names}


def job_ready(obj: Any) -> bool:
    status = obj.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return ready and status.get("phase") == "Running"


def pod_running(obj: Any) -> bool:
    return obj.status is not None and obj.status.phase == "Running"


# -- the controller process -----------------------------------------------------------------------

class Controller:
    def __init__(self, kubeconfig: Path, work: Path, workers: int, *extra: str,
                 log_name: str = "controller.log", cpus: Collection[int] = (),
                 env: dict[str, str] | None = None) -> None:
        """``cpus``: pin the controller and every process it starts (Pulumi CLIs, providers) to
        these CPUs, as if it ran alone on a node of that size (``taskset``; children inherit it).
        Its Pulumi home is its own (``pulumi_home``), as in the operator Pod: the CLI's debug logs
        land there (``pulumi_logs``)."""
        self.port = free_port()
        self.log_path = work / log_name
        self.pulumi_home = work / "pulumi-home"
        env = {**os.environ, "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE, "PYTHONPATH": str(REPO),
               "IFLEARNER_PULUMI_HOME": str(self.pulumi_home), **(env or {})}
        argv = [sys.executable, "-m", "iflearner.controller", "--kubeconfig", str(kubeconfig),
                "--state-dir", str(work / "state"), "--metrics-address", f"127.0.0.1:{self.port}",
                "--workers", str(workers), "--resync-period", "3600", *extra]
        if cpus:
            argv = ["taskset", "--cpu-list", ",".join(str(cpu) for cpu in sorted(cpus)), *argv]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                            start_new_session=True)

    def pulumi_logs(self) -> tuple[int, float]:
        """The Pulumi CLI's debug logs so far: how many files, how many MiB."""
        files = [p for p in (self.pulumi_home / "logs").glob("*.log") if p.is_file()]
        return len(files), sum(p.stat().st_size for p in files) / 2**20

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    def metric(self, name: str, **labels: str) -> float:
        _, text = self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the controller exited; see {self.log_path}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError("the controller did not become ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- setup ----------------------------------------------------------------------------------------

def secrets_provider(kind: str, kms: LocalKms) -> tuple[list[str], dict[str, str]]:
    """The controller's arguments and environment for the job stacks' secrets: nothing for the
    passphrase; for ``kms``, local-kms started and its key's URL and credentials."""
    if kind == "passphrase":
        return [], {}
    server = kms.up()
    say(f"local-kms on port {server.port}, key {server.key_id}")
    return [f"--secrets-provider={server.secrets_provider}"], server.credentials


def prepare_cluster(kubeconfig: Path, api: client.ApiClient) -> dict[str, str]:
    subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "apply", "-f", str(REPO / "crd" / "iflearnerjob.yaml")],
                   check=True, capture_output=True)
    subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "wait", "--for=condition=Established",
                    "crd/iflearnerjobs.git.iflytek.com", "--timeout=60s"], check=True, capture_output=True)
    settings = ClusterSettings()
    ca = issue_ca("iflearner benchmark CA", 24)
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": settings.operator_namespace}})
    core.create_namespaced_secret(settings.operator_namespace, {
        "metadata": {"name": settings.ca_secret_name}, "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": ca["cert_pem"], "tls.key": ca["private_key_pem"]}})
    core.create_namespaced_config_map(settings.operator_namespace, {
        "metadata": {"name": settings.trust_configmap_name},
        "data": {"server.crt": ca["cert_pem"], "party.crt": ca["cert_pem"]}})
    core.create_namespaced_config_map(settings.dns_namespace, {"metadata": {"name": settings.dns_configmap_name}})
    return ca


def make_namespace(api: client.ApiClient, name: str) -> str:
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


# -- the phases -----------------------------------------------------------------------------------

def create_jobs(custom: client.CustomObjectsApi, manifests: list[dict[str, Any]]) -> dict[str, float]:
    started = {}
    for manifest in manifests:
        started[manifest["metadata"]["name"]] = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, manifest["metadata"]["namespace"], PLURAL, manifest)
    return started


def job_watcher(custom: client.CustomObjectsApi, namespace: str) -> ReadyWatcher:
    def list_jobs(ns: str, **kwargs: Any) -> Any:
        return custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, **kwargs)

    watcher = ReadyWatcher(list_jobs, namespace, job_ready, lambda o: o["metadata"]["name"])
    watcher.start()
    return watcher


def direct_objects(manifest: dict[str, Any], ca: dict[str, str]) -> list[dict[str, Any]]:
    """The objects the job's stack declares, made directly (certificate issued locally)."""
    job = parse_job(manifest)
    desired = desired_resources(job, ClusterSettings())
    leaf = issue_leaf(ca["cert_pem"], ca["private_key_pem"], job.host, [job.host], 24)
    secret = {**desired.tls_secret, "stringData": {"tls.crt": leaf["cert_pem"], "tls.key": leaf["private_key_pem"]}}
    objects = [secret]
    if desired.trust_configmap is not None:
        objects.append({**desired.trust_configmap, "data": {
            "server-iflearner-secret.crt": ca["cert_pem"], "party-iflearner-secret.crt": ca["cert_pem"]}})
    return [*objects, desired.service, desired.ingress, desired.pod]


def create_direct(api: client.ApiClient, manifests: list[dict[str, Any]], ca: dict[str, str]) -> dict[str, float]:
    started = {}
    for manifest in manifests:
        started[manifest["metadata"]["name"]] = time.monotonic()
        for obj in direct_objects(manifest, ca):
            utils.create_from_dict(api, obj)
    return started


def pod_watcher(api: client.ApiClient, namespace: str) -> ReadyWatcher:
    watcher = ReadyWatcher(client.CoreV1Api(api).list_namespaced_pod, namespace, pod_running,
                           lambda o: o.metadata.name)
    watcher.start()
    return watcher


def sequential(create: Callable[[list[dict[str, Any]]], dict[str, float]], watcher: ReadyWatcher,
               manifests: list[dict[str, Any]], timeout: float) -> list[float]:
    durations = []
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        started = create([manifest])[name]
        durations.append(watcher.wait([name], timeout)[name] - started)
    return durations


def burst(create: Callable[[list[dict[str, Any]]], dict[str, float]], watcher: ReadyWatcher,
          manifests: list[dict[str, Any]], timeout: float) -> float:
    first = time.monotonic()
    create(manifests)
    times = watcher.wait([m["metadata"]["name"] for m in manifests], timeout)
    return max(times.values()) - first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=20, help="jobs applied one after another (default 20)")
    parser.add_argument("--burst", type=int, default=50, help="jobs applied at once (default 50)")
    parser.add_argument("--workers", type=int, default=4, help="controller workers (default 4)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for a phase (default 900)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state)")
    parser.add_argument("--secrets-provider", choices=("passphrase", "kms"), default="passphrase",
                        help="what encrypts the job stacks' secrets: the passphrase (default), or a key of a "
                             "local AWS KMS-compatible server (local-kms) started for the run")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="iflearner-bench-"))
    cluster = LocalCluster(work / "cluster")
    controller: Controller | None = None
    sampler: MemorySampler | None = None
    kms = LocalKms(work / "kms")
    failed = False
    try:
        provider_args, provider_env = secrets_provider(args.secrets_provider, kms)
        say(f"starting a local control plane in {work}")
        state = cluster.up(progress=lambda msg: say(msg))
        api = config.new_client_from_config(config_file=str(state.kubeconfig))
        api.configuration.connection_pool_maxsize = 16
        custom = client.CustomObjectsApi(api)
        ca = prepare_cluster(state.kubeconfig, api)

        say(f"starting the controller ({args.workers} workers); log: {work / 'controller.log'}")
        controller = Controller(state.kubeconfig, work, args.workers, *provider_args, env=provider_env)
        controller.wait_ready()
        sampler = MemorySampler(controller.process.pid)
        sampler.start()

        warm_ns = make_namespace(api, "bench-warm")
        warm = job_watcher(custom, warm_ns)
        cold = sequential(lambda m: create_jobs(custom, m), warm, [job_manifest(0, warm_ns, "warm")], args.timeout)
        say(f"first job (cold plugins and caches): {cold[0]:.2f}s")

        say(f"{args.sequential} jobs one after another")
        seq_ns = make_namespace(api, "bench-seq")
        seq = sequential(lambda m: create_jobs(custom, m), job_watcher(custom, seq_ns),
                         [job_manifest(i, seq_ns, "seq") for i in range(args.sequential)], args.timeout)

        say(f"a burst of {args.burst} jobs")
        burst_ns = make_namespace(api, "bench-burst")
        burst_seconds = burst(lambda m: create_jobs(custom, m), job_watcher(custom, burst_ns),
                              [job_manifest(i, burst_ns, "burst") for i in range(args.burst)], args.timeout)
        process_peak = sampler.process_peak_kib
        tree_peak = sampler.tree_peak_kib
        tree_peak_pss = sampler.tree_peak_pss_kib
        own_cpu, children_cpu = cpu_seconds(controller.process.pid)
        jobs_so_far = 1 + args.sequential + args.burst

        total_jobs = 1 + args.sequential + args.burst
        time.sleep(3)  # let the follow-up reconciles of the last ups settle
        runs_before = controller.metric("iflearner_pulumi_runs_total")
        reconciles_before = controller.metric("iflearner_reconciles_total")
        say(f"resync of {total_jobs} unchanged jobs (SIGHUP)")
        started = time.monotonic()
        controller.process.send_signal(signal.SIGHUP)
        deadline = started + args.timeout
        while controller.metric("iflearner_reconciles_total") < reconciles_before + total_jobs:
            if time.monotonic() > deadline:
                raise TimeoutError("the resync did not finish")
            time.sleep(0.02)
        resync_seconds = time.monotonic() - started
        resync_runs = controller.metric("iflearner_pulumi_runs_total") - runs_before
        runs_total = controller.metric("iflearner_pulumi_runs_total")

        say("the same objects directly with the kubernetes client")
        dseq_ns = make_namespace(api, "direct-seq")
        direct_seq = sequential(lambda m: create_direct(api, m, ca), pod_watcher(api, dseq_ns),
                                [job_manifest(i, dseq_ns, "seq") for i in range(args.sequential)], args.timeout)
        dburst_ns = make_namespace(api, "direct-burst")
        direct_burst = burst(lambda m: create_direct(api, m, ca), pod_watcher(api, dburst_ns),
                             [job_manifest(i, dburst_ns, "burst") for i in range(args.burst)], args.timeout)

        p50, p95 = statistics.median(seq), percentile(seq, 0.95)
        d50, d95 = statistics.median(direct_seq), percentile(direct_seq, 0.95)
        print()
        print(f"iflearner-operator benchmark ({os.cpu_count()} CPUs, {args.workers} workers, "
              f"local control plane + kwok, secrets: {args.secrets_provider})")
        print(f"  first job, cold:                      {cold[0]:7.2f} s")
        print(f"  apply -> Ready, {args.sequential} sequential jobs:     p50 {p50:6.2f} s   p95 {p95:6.2f} s")
        print(f"    direct client, same objects:        p50 {d50:6.2f} s   p95 {d95:6.2f} s   "
              f"ratio p50 {p50 / d50:5.1f}x")
        print(f"  burst of {args.burst} jobs, all Ready:         {burst_seconds:7.2f} s   "
              f"({args.burst / burst_seconds * 60:5.1f} jobs/min)")
        print(f"    direct client, same objects:        {direct_burst:7.2f} s   "
              f"ratio {burst_seconds / direct_burst:5.1f}x")
        print(f"  controller peak RSS:                  {process_peak / 1024:7.1f} MiB "
              f"(with its Pulumi processes: {tree_peak / 1024:.0f} MiB RSS, {tree_peak_pss / 1024:.0f} MiB PSS)")
        print(f"  CPU per job (all ups so far):         {own_cpu / jobs_so_far:7.2f} s controller, "
              f"{children_cpu / jobs_so_far:.2f} s its Pulumi processes")
        print(f"  resync of {total_jobs} unchanged jobs:         {resync_seconds:7.2f} s   "
              f"Pulumi runs started: {int(resync_runs)}")
        print(f"  Pulumi runs in total:                 {int(runs_total)}")
        files, mib = controller.pulumi_logs()
        print(f"  Pulumi's debug logs:                  {files} files, {mib:.1f} MiB")
        failed = resync_runs != 0
    except Exception as error:  # noqa: BLE001 - reported with where to look
        say(f"failed: {error}; logs in {work}")
        failed = True
        args.keep = True
    finally:
        if sampler is not None:
            sampler.stopped.set()
        if controller is not None:
            controller.stop()
        cluster.down()
        kms.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
