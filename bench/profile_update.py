"""Where a job's Pulumi update spends its time and CPU (issue 14's profile), phase by phase.

    .venv/bin/python bench/profile_update.py [--jobs 5] [--keep]

Starts its own kwok cluster (as bench/run.py), then for each of ``--jobs`` jobs runs, through the
controller's own StackRunner and job program: the first ``up`` (creates every object), an ``up`` after
a spec change (the Pod is replaced), an ``up`` with nothing to change, and one more with nothing to
change by a new runner (the first after an operator restart). ``--secrets-provider kms`` encrypts
the stacks' secrets with a key of local-kms instead of the passphrase. For each run it records:

* CPU seconds per process kind, sampled from /proc every 10 ms: the Pulumi CLI (engine), the
  Kubernetes provider, any Python dynamic provider (none since the signer issues job
  certificates: it stays as a check), and this process (the inline
  program's language host: registration runs here, on the engine's gRPC calls);
* the engine's own OpenTelemetry spans (``--otel-traces file://``), summed by span name: CLI start,
  plugin load and Configure, each resource step, checkpoint writes.

Prints one table per kind of run (median over the jobs) and the top spans.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from kubernetes import config  # noqa: E402
from run import _descendants, job_manifest, prepare_cluster  # noqa: E402

from iflearner import stackrunner  # noqa: E402
from iflearner.controller.kubeapi import KubeApi  # noqa: E402
from iflearner.controller.signer import Signer  # noqa: E402
from iflearner.desired import ClusterSettings, desired_resources  # noqa: E402
from iflearner.job import parse_job, stack_name  # noqa: E402
from iflearner.localcluster import LocalCluster  # noqa: E402
from iflearner.localcluster.kms import LocalKms  # noqa: E402
from iflearner.program import job_program  # noqa: E402

KINDS = ("pulumi CLI (engine)", "kubernetes provider", "dynamic provider (certificate)",
         "language host (this process)", "other")


def process_kind(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "other"
    text = b" ".join(argv).decode(errors="replace")
    if pid == os.getpid():
        return "language host (this process)"
    if "pulumi-resource-kubernetes" in text:
        return "kubernetes provider"
    if "pulumi.dynamic" in text or "pulumi-resource-pulumi-python" in text:
        return "dynamic provider (certificate)"
    if Path(argv[0].decode(errors="replace")).name == "pulumi":
        return "pulumi CLI (engine)"
    return "other"


def cli_command(pid: int) -> str:
    """``stack select``, ``stack init``, ``up``...: the words after the CLI's flags."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[1:]
    except OSError:
        return "?"
    words = [word for word in argv if word and not word.startswith("-")]
    return " ".join(words[:2] if words[:1] == ["stack"] else words[:1])


class CpuSampler(threading.Thread):
    """CPU seconds per process kind of this process's descendants (last value seen per pid)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop_event = threading.Event()
        self.last: dict[int, tuple[str, float]] = {}
        self.commands: dict[int, str] = {}
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.own_start = self._cpu(os.getpid())
        # The local control plane's processes are children too: only the run's count.
        self.before = set(_descendants(os.getpid()))

    def _cpu(self, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            return -1.0
        return (int(fields[11]) + int(fields[12])) / self.ticks

    def run(self) -> None:
        self.own_cpu = 0.0
        started = time.thread_time()
        while not self.stop_event.is_set():
            for pid in _descendants(os.getpid()):
                if pid in self.before:
                    continue
                seconds = self._cpu(pid)
                if seconds >= 0:
                    if pid in self.last:
                        kind = self.last[pid][0]
                    else:
                        kind = process_kind(pid)
                        self.commands[pid] = cli_command(pid)
                    self.last[pid] = (kind, seconds)
            self.own_cpu = time.thread_time() - started
            time.sleep(0.01)

    def finish(self) -> dict[str, float]:
        self.stop_event.set()
        self.join()
        totals: dict[str, float] = defaultdict(float)
        for kind, seconds in self.last.values():
            totals[kind] += seconds
        # This process, less the sampler's own thread (walking /proc is not the update's work).
        totals["language host (this process)"] = self._cpu(os.getpid()) - self.own_start - self.own_cpu
        return dict(totals)

    def cli_processes(self) -> dict[str, float]:
        """CPU seconds of each Pulumi CLI process, by its command (``stack select``, ``up``...)."""
        commands: dict[str, float] = defaultdict(float)
        for pid, (kind, seconds) in self.last.items():
            if kind == "pulumi CLI (engine)":
                commands[self.commands.get(pid, "?")] += seconds
        return dict(commands)


def key_derivation_cpu_seconds() -> float:
    """CPU of the key derivation every Pulumi CLI process does once with the passphrase secrets
    manager: PBKDF2-HMAC-SHA256, 1,000,000 iterations (Pulumi's sdk/go/common/resource/config/
    crypt.go, NewSymmetricCrypterFromPassphrase). Same algorithm and count, here through OpenSSL."""
    started = time.process_time()
    hashlib.pbkdf2_hmac("sha256", b"passphrase", os.urandom(8), 1_000_000, 32)
    return time.process_time() - started


def spans(trace_dir: Path) -> dict[str, float]:
    """Span name -> total seconds, from the OpenTelemetry JSON files the CLI wrote."""
    totals: dict[str, float] = defaultdict(float)
    for path in trace_dir.rglob("*"):
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            for resource_spans in record.get("resourceSpans", []) if isinstance(record, dict) else []:
                for scope in resource_spans.get("scopeSpans", []):
                    for span in scope.get("spans", []):
                        start, end = int(span.get("startTimeUnixNano", 0)), int(span.get("endTimeUnixNano", 0))
                        totals[span.get("name", "?")] += max(0, end - start) / 1e9
    return dict(totals)


def profile_run(runner: stackrunner.StackRunner, stack: str, program: Any, trace_dir: Path) -> dict[str, Any]:
    trace_dir.mkdir(parents=True, exist_ok=True)
    sampler = CpuSampler()
    sampler.start()
    started = time.monotonic()
    auto_stack, _ = runner._cached_stack(stack, program)
    changes = stackrunner._run_inline(auto_stack, program, ["up", f"--otel-traces=file://{trace_dir}/trace.json"],
                                      runner.run_timeout, runner.registry, runner.term_grace)
    wall = time.monotonic() - started
    cpu = sampler.finish()
    return {"wall": wall, "cpu": cpu, "cli_processes": sampler.cli_processes(), "spans": spans(trace_dir),
            "changes": changes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--secrets-provider", choices=("passphrase", "kms"), default="passphrase",
                        help="what encrypts the stacks' secrets: the passphrase (default), or a key of a local "
                             "AWS KMS-compatible server (local-kms) started for the run")
    parser.add_argument("--pulumi-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the Pulumi processes only (a lever to measure, e.g. "
                             "PULUMI_SKIP_CHECKPOINTS=true or GOMAXPROCS=1); repeatable")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="iflearner-profile-"))
    cluster = LocalCluster(work / "cluster")
    kms = LocalKms(work / "kms")
    state = cluster.up(progress=lambda m: print(f"cluster: {m}", file=sys.stderr))
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        api = config.new_client_from_config(config_file=str(state.kubeconfig))
        prepare_cluster(state.kubeconfig, api)
        from kubernetes import client

        client.CoreV1Api(api).create_namespace({"metadata": {"name": "profile"}})
        # After the control plane started: only the CLIs (and their providers) see these.
        os.environ.update(dict(item.split("=", 1) for item in args.pulumi_env))
        settings = ClusterSettings()
        provider = stackrunner.PASSPHRASE_PROVIDER
        if args.secrets_provider == "kms":
            server = kms.up()
            os.environ.update(server.credentials)
            provider = server.secrets_provider
        runner = stackrunner.StackRunner(stackrunner.RunnerSettings.local(work / "state", "profile", provider))
        kubeconfig_text = state.kubeconfig.read_text()
        signer = Signer(KubeApi(api), settings.operator_namespace, settings.ca_secret_name)
        for index in range(args.jobs):
            manifest = job_manifest(index, "profile", "prof")
            for kind in ("create", "spec change", "no change"):
                if kind == "spec change":
                    manifest["spec"]["template"]["spec"]["containers"][0]["args"] = ["--changed"]
                job = parse_job(manifest)
                desired = desired_resources(job, settings)
                certificate = signer.certificate_for(desired.certificate, "profile", desired.names.tls_secret,
                                                     datetime.datetime.now(datetime.UTC))
                program = job_program(desired, settings, kubeconfig_text, certificate.secret_data)
                run = profile_run(runner, stack_name(job), program, work / "traces" / f"{index}-{kind}")
                print(f"job {index} {kind}: {run['wall']:.2f}s wall, changes {run['changes']}", file=sys.stderr)
                results[kind].append(run)
            # An operator restart: a new runner, whose first run selects the stack again.
            runner.forget_stack(stack_name(job))
            restarted = stackrunner.StackRunner(runner.settings)
            run = profile_run(restarted, stack_name(job), program, work / "traces" / f"{index}-restart")
            print(f"job {index} after a restart: {run['wall']:.2f}s wall, changes {run['changes']}", file=sys.stderr)
            results["no change, first after a restart"].append(run)
    finally:
        cluster.down()
        kms.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    levers = f"; Pulumi processes with {' '.join(args.pulumi_env)}" if args.pulumi_env else ""
    print(f"\nprofile of one job's update ({args.jobs} jobs, median per run; {os.cpu_count()} CPUs, kwok, "
          f"secrets: {args.secrets_provider}{levers})")
    print(f"passphrase key derivation, once per Pulumi CLI process: {key_derivation_cpu_seconds():.2f} CPU-s "
          "(PBKDF2-SHA256, 1,000,000 iterations)")
    for kind, runs in results.items():
        print(f"\n{kind}: wall {statistics.median(r['wall'] for r in runs):.2f} s")
        cpu = {k: statistics.median(r["cpu"].get(k, 0.0) for r in runs) for k in KINDS}
        for name, seconds in cpu.items():
            print(f"  CPU {name:34s} {seconds:6.2f} s")
        print(f"  CPU {'total':34s} {sum(cpu.values()):6.2f} s")
        commands = sorted({command for r in runs for command in r["cli_processes"]})
        for command in commands:
            seconds = statistics.median(r["cli_processes"].get(command, 0.0) for r in runs)
            print(f"    CLI process `pulumi {command}` {'':{max(0, 20 - len(command))}s}{seconds:6.2f} s")
        names = defaultdict(list)
        for run in runs:
            for name, seconds in run["spans"].items():
                names[name].append(seconds)
        top = sorted(((statistics.median(v), n) for n, v in names.items()), reverse=True)[:15]
        for seconds, name in top:
            print(f"  span {name[:60]:60s} {seconds:6.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
