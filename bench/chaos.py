"""Faults together, at random moments: then the invariants a production operator must keep (issue 20).

    .venv/bin/python bench/chaos.py [--seed 7] [--jobs 30] [--faults 12] [--backend file|postgres] [--keep]

On its own local control plane (kwok: containers add nothing to what is tested here) with the
operator as a process (the same code as ``iflearner-operator run``, file backend, DNS records on):

* a workload: ``--jobs`` jobs created at a steady rate; a third of them changed (a new Pod
  template) a few seconds after they were created, a third deleted, half of those right after
  their creation (while their first ``up`` runs);
* faults at seeded random moments over the same span, each printed: SIGKILL of the operator's
  whole process group (its container dying, Pulumi CLIs and providers with it; a new operator
  starts as its Deployment would), SIGKILL of one running Pulumi CLI or provider process,
  SIGKILL of kube-apiserver or etcd (restarted at once with the same command line); with
  ``--backend postgres`` (Debian's PostgreSQL as the state backend) also a crash of the
  PostgreSQL server (SIGKILL, restarted on the same port: it recovers from its WAL);
* then, waiting for conditions only, the invariants: every remaining job Ready with its latest
  generation applied; every deleted job gone with nothing left (no object with its ``job-uid``
  label, no DNS record key, no stack, no lock); as many stacks as jobs; no Pod of an unchanged
  job ever replaced (every Pod UID a job had is watched); no job unconverged past ``--bound``.

It prints the faults by kind, the jobs converged, orphans, leaked locks, Pods needlessly
recreated, and the slowest convergence after the last fault. Exit status 1 when an invariant
fails. ``tests/integration/test_chaos.py`` runs a small seeded run of the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import yaml  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402
from run import Controller, _descendants, job_manifest, prepare_cluster  # noqa: E402

from iflearner.desired import LABEL_JOB_UID, ClusterSettings, zone_file_key  # noqa: E402
from iflearner.job import stack_name_of  # noqa: E402
from iflearner.localcluster import LocalCluster  # noqa: E402
from iflearner.localcluster.postgres import LocalPostgres  # noqa: E402

GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"
NAMESPACE = "chaos"
INGRESS = "10.96.200.1"  # the jobs' DNS records point here: records are part of what is checked
FAULT_KINDS = ("operator", "pulumi", "apiserver", "etcd")
BACKEND_FAULTS = {"file": (), "postgres": ("postgres",)}
SETTINGS = ClusterSettings()


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the start
    action: str  # create, change, delete, or a fault kind
    job: str = ""


def schedule(seed: int, jobs: int, faults: int, rate: float, kinds: tuple[str, ...] = FAULT_KINDS) -> list[Step]:
    """The whole run, decided by the seed before it starts: reproducible, printed."""
    rng = random.Random(seed)
    steps: list[Step] = []
    span = jobs / rate
    for index in range(jobs):
        name = f"chaos-{index:03d}"
        created = index / rate
        steps.append(Step(created, "create", name))
        if index % 3 == 1:
            steps.append(Step(created + rng.uniform(3.0, 8.0), "change", name))
        elif index % 3 == 2:
            # Half of the deletions land while the job's first up runs.
            delay = rng.uniform(0.2, 1.0) if index % 2 == 0 else rng.uniform(4.0, 10.0)
            steps.append(Step(created + delay, "delete", name))
    for _ in range(faults):
        steps.append(Step(rng.uniform(1.0, span + 8.0), rng.choice(kinds)))
    return sorted(steps, key=lambda s: s.at)


@dataclass
class Report:
    faults: dict[str, int] = field(default_factory=dict)
    skipped_faults: int = 0  # a Pulumi kill with no Pulumi process running
    jobs_converged: int = 0
    jobs_expected: int = 0
    unconverged: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # objects, records, stacks of deleted jobs
    leaked_locks: list[str] = field(default_factory=list)
    stacks: int = 0
    pods_recreated: list[str] = field(default_factory=list)
    convergence_after_last_fault: float = 0.0
    last_fault: str = ""

    @property
    def ok(self) -> bool:
        return (self.jobs_converged == self.jobs_expected and not self.unconverged and not self.leftovers
                and not self.leaked_locks and self.stacks == self.jobs_expected and not self.pods_recreated)

    def lines(self) -> list[str]:
        faults = ", ".join(f"{kind} {count}" for kind, count in sorted(self.faults.items())) or "none"
        return [
            f"faults injected: {faults} (Pulumi kills with nothing running: {self.skipped_faults})",
            f"jobs converged: {self.jobs_converged} of {self.jobs_expected}"
            + (f"; NOT: {', '.join(self.unconverged)}" if self.unconverged else ""),
            f"orphans of deleted jobs: {len(self.leftovers)}" + (f" {self.leftovers}" if self.leftovers else ""),
            f"leaked locks: {len(self.leaked_locks)}" + (f" {self.leaked_locks}" if self.leaked_locks else ""),
            f"stacks in the backend: {self.stacks} for {self.jobs_expected} jobs",
            f"Pods needlessly recreated: {len(self.pods_recreated)}"
            + (f" {self.pods_recreated}" if self.pods_recreated else ""),
            f"slowest convergence after a fault: {self.convergence_after_last_fault:.1f} s "
            f"(every job converged after the last fault, {self.last_fault})",
        ]


class PodWatch(threading.Thread):
    """Every Pod UID each job ever had (a Pod is named as its job)."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.uids: dict[str, set[str]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self) -> None:
        core = client.CoreV1Api(self.api)
        while not self.stop.is_set():
            try:
                for event in watch.Watch().stream(core.list_namespaced_pod, NAMESPACE, timeout_seconds=30):
                    pod = event["object"]
                    with self.lock:
                        self.uids.setdefault(pod.metadata.name, set()).add(pod.metadata.uid)
                    if self.stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - the API server is restarted on purpose: watch again
                time.sleep(0.5)

    def of(self, name: str) -> set[str]:
        with self.lock:
            return set(self.uids.get(name, set()))


class Run:
    def __init__(self, work: Path, seed: int, workers: int, backend: str = "file") -> None:
        self.work = work
        self.backend = backend
        self.postgres = LocalPostgres(work / "postgres") if backend == "postgres" else None
        self.backend_args: list[str] = []
        self.seed = seed
        self.workers = workers
        self.cluster = LocalCluster(work / "cluster")
        self.controller: Controller | None = None
        self.rng = random.Random(seed + 1)
        self.report = Report()
        self.settings_file = work / "cluster-settings.yaml"
        self.settings_file.write_text(yaml.safe_dump({"ingressAddress": INGRESS}))
        self.restarts = 0

    # -- the operator -----------------------------------------------------------------------------

    def start_operator(self) -> None:
        self.restarts += 1
        self.controller = Controller(self.state.kubeconfig, self.work, self.workers,
                                     "--cluster-settings", str(self.settings_file), "--resync-period", "60",
                                     *self.backend_args, log_name=f"operator-{self.restarts}.log")

    def fault(self, kind: str) -> bool:
        """Inject one fault; False when there was nothing to hit (no Pulumi process running)."""
        assert self.controller is not None
        if kind == "operator":
            os.killpg(self.controller.process.pid, signal.SIGKILL)
            self.controller.process.wait()
            self.start_operator()
        elif kind == "pulumi":
            running = [pid for pid in _descendants(self.controller.process.pid) if _is_pulumi(pid)]
            if not running:
                return False
            victim = self.rng.choice(sorted(running))
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                return False
        elif kind == "apiserver":
            self.cluster.kill_and_restart("kube-apiserver")
        elif kind == "etcd":
            self.cluster.kill_and_restart("etcd")
        elif kind == "postgres":
            assert self.postgres is not None
            self.postgres.crash_and_restart()
        return True

    # -- the run ----------------------------------------------------------------------------------

    def execute(self, steps: list[Step], bound: float) -> Report:
        self.state = self.cluster.up(progress=lambda m: say(m))
        self.api = config.new_client_from_config(config_file=str(self.state.kubeconfig))
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        prepare_cluster(self.state.kubeconfig, self.api)
        self.core.create_namespace({"metadata": {"name": NAMESPACE}})
        if self.postgres is not None:
            self.backend_args = ["--backend-url", self.postgres.up().url]
        pods = PodWatch(self.api)
        pods.start()
        self.start_operator()
        assert self.controller is not None
        self.controller.wait_ready()
        created: dict[str, dict[str, Any]] = {}
        uids: dict[str, str] = {}
        changed: set[str] = set()
        deleted: set[str] = set()
        started = time.monotonic()
        last_fault_at = started
        for step in steps:
            delay = started + step.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the schedule's moments are the experiment, not a wait for a condition
            if step.action == "create":
                manifest = _manifest(step.job)
                created[step.job] = manifest
                uids[step.job] = _retry(lambda m=manifest: self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, m))["metadata"]["uid"]
            elif step.action == "change":
                changed.add(step.job)
                patch = {"spec": {"template": {"metadata": {"annotations": {"chaos/changed": "1"}}}}}
                _retry(lambda n=step.job, p=patch: self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, n, p))
            elif step.action == "delete":
                deleted.add(step.job)
                _retry(lambda n=step.job: self.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, n))
            else:
                hit = self.fault(step.action)
                say(f"fault at {step.at:5.1f}s: {step.action}{'' if hit else ' (nothing running to kill)'}")
                if hit:
                    self.report.faults[step.action] = self.report.faults.get(step.action, 0) + 1
                    last_fault_at = time.monotonic()
                    self.report.last_fault = f"{step.action} at {step.at:.1f}s"
                else:
                    self.report.skipped_faults += 1
        remaining = sorted(set(created) - deleted)
        self.report.jobs_expected = len(remaining)
        converged = self._converge(remaining, deleted, bound)
        self.report.convergence_after_last_fault = converged - last_fault_at
        self._check(remaining, deleted, uids, changed, pods)
        pods.stop.set()
        return self.report

    def _converge(self, remaining: list[str], deleted: set[str], bound: float) -> float:
        """Wait until every remaining job converged and every deleted one is gone; the moment."""
        deadline = time.monotonic() + bound
        while True:
            jobs = {j["metadata"]["name"]: j for j in _retry(lambda: self.custom.list_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL))["items"]}
            pending = [n for n in remaining if not _converged(jobs.get(n))] + sorted(deleted & set(jobs))
            if not pending:
                self.report.jobs_converged = len(remaining)
                return time.monotonic()
            if time.monotonic() > deadline:
                self.report.unconverged = pending
                self.report.jobs_converged = len(remaining) - len([n for n in pending if n in remaining])
                return time.monotonic()
            time.sleep(0.5)

    def _check(self, remaining: list[str], deleted: set[str], uids: dict[str, str], changed: set[str],
               pods: PodWatch) -> None:
        labelled = []
        for lister in (self.core.list_namespaced_pod, self.core.list_namespaced_service,
                       self.core.list_namespaced_secret, self.core.list_namespaced_config_map):
            labelled += [(o.kind or lister.__name__, o.metadata.name, (o.metadata.labels or {}).get(LABEL_JOB_UID))
                         for o in lister(NAMESPACE).items]
        deleted_uids = {uids[n]: n for n in deleted}
        self.report.leftovers += [f"{kind}/{name} of {deleted_uids[uid]}" for kind, name, uid in labelled
                                  if uid in deleted_uids]
        records = self.core.read_namespaced_config_map(SETTINGS.dns_configmap_name, SETTINGS.dns_namespace).data or {}
        for name in deleted:
            if zone_file_key(f"{name}.{_zone(name)}.iflearner.com") in records:
                self.report.leftovers.append(f"DNS record of {name}")
        stacks, locks = self._backend_keys()
        self.report.stacks = len(stacks)
        self.report.leftovers += [f"stack of {n}" for n in deleted if stack_name_of(NAMESPACE, n) in stacks]
        self.report.leaked_locks = locks
        for name in remaining:
            seen = pods.of(name)
            if name not in changed and len(seen) > 1:
                self.report.pods_recreated.append(f"{name} ({len(seen)} Pods)")
            elif name in changed and len(seen) > 2:
                self.report.pods_recreated.append(f"{name} ({len(seen)} Pods for one change)")

    def _backend_keys(self) -> tuple[set[str], list[str]]:
        """The job stacks in the backend (by stack name), and its lock files."""
        if self.postgres is None:
            root = self.work / "state" / "state"
            keys = [str(p.relative_to(root)) for p in (root / ".pulumi").rglob("*.json")]
        else:
            url = self.postgres.up().url.replace("?sslmode=disable", "")
            keys = subprocess.run(["psql", url, "-tAc", "SELECT key FROM pulumi_state"], capture_output=True,
                                  text=True, check=True).stdout.split()
        # PostgreSQL keys carry the bucket's own prefix ("pulumi/.pulumi/..."): from ".pulumi/" on.
        keys = [k[k.index(".pulumi/"):] for k in keys if ".pulumi/" in k]
        prefix = ".pulumi/stacks/iflearner-jobs/"
        stacks = {k.removeprefix(prefix).removesuffix(".json") for k in keys
                  if k.startswith(prefix) and k.endswith(".json")}
        return stacks, sorted(k for k in keys if k.startswith(".pulumi/locks/"))

    def close(self, keep: bool) -> None:
        if self.controller is not None:
            self.controller.stop()
        if self.postgres is not None:
            self.postgres.down(remove_data=not keep)
        self.cluster.down()
        if keep:
            say(f"kept: {self.work} (operator-*.log, cluster/logs)")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def _is_pulumi(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return "pulumi" in Path(argv0).name


def _zone(name: str) -> str:
    return "server" if int(name.rsplit("-", 1)[1]) % 2 == 0 else "a.party"


def _manifest(name: str) -> dict[str, Any]:
    return job_manifest(int(name.rsplit("-", 1)[1]), NAMESPACE, "chaos")


def _converged(job: dict[str, Any] | None) -> bool:
    if job is None:
        return False
    status = job.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return (ready.get("status") == "True" and status.get("phase") == "Running"
            and status.get("observedGeneration") == job["metadata"].get("generation")
            and (status.get("lastOperation") or {}).get("result") == "Succeeded")


def _retry(call: Callable[[], Any], timeout: float = 60.0) -> Any:
    """An API call through an API server or etcd that may be restarting right now."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except ApiException as error:
            if error.status == 404:
                return {}
            if error.status < 500 or time.monotonic() > deadline:
                raise
        except OSError:
            if time.monotonic() > deadline:
                raise
        except Exception as error:  # urllib3's connection errors while the API server restarts
            if "connection" not in str(error).lower() or time.monotonic() > deadline:
                raise
        time.sleep(0.3)


def run_chaos(seed: int, jobs: int, faults: int, rate: float = 1.0, workers: int = 4, bound: float = 300.0,
              keep: bool = False, backend: str = "file") -> Report:
    steps = schedule(seed, jobs, faults, rate, FAULT_KINDS + BACKEND_FAULTS[backend])
    say(f"seed {seed}: {jobs} jobs at {rate}/s, {faults} faults, {backend} backend: "
        + json.dumps([(round(s.at, 1), s.action) for s in steps if not s.job]))
    work = Path(tempfile.mkdtemp(prefix="iflearner-chaos-"))
    run = Run(work, seed, workers, backend)
    try:
        return run.execute(steps, bound)
    finally:
        run.close(keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--faults", type=int, default=12)
    parser.add_argument("--rate", type=float, default=1.0, help="jobs created per second")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--bound", type=float, default=300.0, help="seconds every job must converge within")
    parser.add_argument("--backend", choices=sorted(BACKEND_FAULTS), default="file",
                        help="the state backend: a directory, or Debian's PostgreSQL (its crashes are faults too)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    report = run_chaos(args.seed, args.jobs, args.faults, args.rate, args.workers, args.bound, args.keep,
                       args.backend)
    for line in report.lines():
        say(line)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
