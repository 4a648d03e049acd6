"""Scale of one operator (issue 14): many jobs created at a steady rate, then a restart.

    .venv/bin/python bench/scale.py [--jobs 500] [--rate 1.0] [--workers 4] [--shards 8] [--operators 1]
        [--cpus-per-operator N]

Starts its own local control plane (kwok nodes) and the controller as a process (the code of
``iflearner-operator run``, with the real Pulumi engine), as ``bench/run.py`` does, with DNS
records on (``--ingress-address``) spread over ``--shards`` records ConfigMaps. With
``--operators N``, N controllers share the cluster, sharded by namespace: each watches only its
own namespace (``--namespace``) and holds its own leader Lease (``--lease-name``), all with the
same state backend and ``--workers`` each; jobs go round robin. With ``--cpus-per-operator N``
each operator and its Pulumi processes run pinned to N CPUs of their own, as operators on
separate nodes would (on one 2-CPU machine the unpinned operators share the same two CPUs, so
a second one adds no CPU). Prints:

- time from the first create until every job is Ready (Running), and the job rate that held;
- the controller's peak RSS (its own, and with its Pulumi processes) and CPU per job;
- API server requests per job, from kube-apiserver's ``apiserver_request_total`` (every
  client: the controller and its Pulumi runs, and kwok/scheduler/controller-manager moving
  the Pods);
- the records ConfigMaps' sizes: total, fullest shard, and the job count at which the fullest
  would reach the API server's 1 MiB;
- a restart of the controller with every job in place: time to ready, time until every job
  has been reconciled once, Pulumi runs started (must be 0), the new process's RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    Controller,
    MemorySampler,
    _status_kib,
    cpu_seconds,
    job_manifest,
    job_watcher,
    make_namespace,
    prepare_cluster,
    say,
)

from iflearner.desired import ClusterSettings, dns_configmap_names  # noqa: E402
from iflearner.localcluster import LocalCluster  # noqa: E402
from iflearner.localcluster.kubeadm_addons import fake_node  # noqa: E402

CONFIGMAP_LIMIT = 1_048_576
NODE_PODS = 500  # kubeadm_addons.fake_node's capacity
INGRESS_ADDRESS = "10.96.100.100"


def api_requests(api: object) -> float:
    """Requests the API server has served so far (all clients, all verbs)."""
    from prometheus_client.parser import text_string_to_metric_families

    method, url, headers, body, post = api.param_serialize(  # type: ignore[attr-defined]
        method="GET", resource_path="/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"])
    response = api.call_api(method, url, header_params=headers, body=body, post_params=post)  # type: ignore[attr-defined]
    response.read()
    return sum(sample.value for family in text_string_to_metric_families(response.data.decode())
               for sample in family.samples if sample.name == "apiserver_request_total")


def records_sizes(core: object, settings: ClusterSettings) -> list[int]:
    sizes = []
    for name in dns_configmap_names(settings):
        data = core.read_namespaced_config_map(name, settings.dns_namespace).data or {}  # type: ignore[attr-defined]
        sizes.append(sum(len(k.encode()) + len(v.encode()) for k, v in data.items()))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--rate", type=float, default=1.0, help="jobs created per second (default 1)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--shards", type=int, default=8, help="DNS records ConfigMaps (default 8)")
    parser.add_argument("--operators", type=int, nargs="+", default=[1],
                        help="controllers sharded by namespace; several counts run one after another, each on a "
                             "fresh cluster, and the time to all Ready is compared (default 1)")
    parser.add_argument("--cpus-per-operator", type=int, default=0,
                        help="pin each operator and its Pulumi processes to its own CPUs (operator i gets CPUs "
                             "i*N..i*N+N-1), as if each ran on its own node of N CPUs; the control plane and kwok "
                             "stay unpinned (default 0: no pinning)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for count in args.operators:
        result = run_once(args, count)
        if result is None:
            return 1
        results.append(result)
    if len(results) > 1:
        base = results[0]
        print()
        for result in results:
            print(f"  {result['operators']} operator(s): all {args.jobs} Ready in {result['all_ready_s']:.1f} s, "
                  f"{args.jobs / result['all_ready_s'] * 60:.0f} jobs/min, ratio to {base['operators']} operator(s) "
                  f"{base['all_ready_s'] / result['all_ready_s']:.2f}x")
    return 1 if any(r["restart_runs"] for r in results) else 0


def run_once(args: argparse.Namespace, count: int) -> dict[str, float] | None:
    """One cluster, ``count`` operators, the jobs, a restart; the figures (None when it failed)."""
    from kubernetes import client, config
    from kubernetes.utils import create_from_dict

    work = Path(tempfile.mkdtemp(prefix="iflearner-scale-"))
    cluster = LocalCluster(work / "cluster")
    controllers: list[Controller] = []
    samplers: list[MemorySampler] = []
    result: dict[str, float] | None = None
    settings = ClusterSettings(dns_record_shards=args.shards)
    # Every job of a namespace publishes a DNS record: the per-namespace limit (256 by default,
    # iflearner:dnsRecordsPerNamespace) is raised to the run's jobs, as an installation this big would.
    settings_file = work / "cluster-settings.yaml"
    settings_file.write_text(f"dnsRecordsPerNamespace: {args.jobs + 16}\n")
    extra = ("--ingress-address", INGRESS_ADDRESS, "--dns-record-shards", str(args.shards),
             "--cluster-settings", str(settings_file))
    try:
        state = cluster.up(progress=say)
        api = config.new_client_from_config(config_file=str(state.kubeconfig))
        api.configuration.connection_pool_maxsize = 16
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        prepare_cluster(state.kubeconfig, api)
        # A kwok node takes 500 Pods (CoreDNS is one of them): more fake nodes for more jobs.
        for index in range(1, (args.jobs + 20) // NODE_PODS + 1):
            create_from_dict(api, fake_node(f"kwok-node-{index}"))
        for name in dns_configmap_names(settings)[1:]:
            core.create_namespaced_config_map(settings.dns_namespace, {"metadata": {"name": name}})

        workers = args.workers  # each operator configured alike, as separate installations would be
        namespaces = [make_namespace(api, f"scale-{i}") for i in range(count)]

        def start(log_suffix: str) -> list[Controller]:
            started_controllers = []
            for index, ns in enumerate(namespaces):
                # The same state backend (work/state) for all: stacks are per job.
                shard = ("--namespace", ns, "--leader-elect", "--lease-name", f"iflearner-scale-{index}") \
                    if count > 1 else ()
                per = args.cpus_per_operator
                cpus = {(index * per + cpu) % (os.cpu_count() or 1) for cpu in range(per)}
                started_controllers.append(Controller(state.kubeconfig, work, workers, *extra, *shard,
                                                      log_name=f"controller-{index}{log_suffix}.log", cpus=cpus))
            for each in started_controllers:
                each.wait_ready(timeout=600)
            return started_controllers

        controllers = start("")
        samplers = [MemorySampler(c.process.pid) for c in controllers]
        for each in samplers:
            each.start()
        watchers = [job_watcher(custom, ns) for ns in namespaces]
        manifests = [job_manifest(i, namespaces[i % count], "scale") for i in range(args.jobs)]
        requests_before = api_requests(api)
        say(f"creating {args.jobs} jobs at {args.rate}/s over {count} operator(s), {workers} workers each; "
            f"logs in {work}")
        first = time.monotonic()
        for index, manifest in enumerate(manifests):
            time.sleep(max(0.0, first + index / args.rate - time.monotonic()))
            custom.create_namespaced_custom_object("git.iflytek.com", "v1", manifest["metadata"]["namespace"],
                                                   "iflearnerjobs", manifest)
            if index % 50 == 49:
                say(f"{index + 1} created, {sum(len(w.times) for w in watchers)} Ready")
        created = time.monotonic() - first
        ready: dict[str, float] = {}
        for index, watcher in enumerate(watchers):
            ready |= watcher.wait([m["metadata"]["name"] for m in manifests[index::count]], args.timeout)
        all_ready = max(ready.values()) - first
        time.sleep(3)  # the follow-up reconciles of the last ups
        requests = api_requests(api) - requests_before
        own_cpu = sum(cpu_seconds(c.process.pid)[0] for c in controllers)
        children_cpu = sum(cpu_seconds(c.process.pid)[1] for c in controllers)
        peak = sum(each.process_peak_kib for each in samplers)
        tree_peak = sum(each.tree_peak_kib for each in samplers)
        sizes = records_sizes(core, settings)
        runs = sum(c.metric("iflearner_pulumi_runs_total") for c in controllers)
        log_files, log_mib = controllers[0].pulumi_logs()  # one Pulumi home for the run's operators

        say("restarting the controller(s) with every job in place")
        for each in samplers:
            each.stopped.set()
        for each in controllers:
            each.stop()
        controllers = []
        restart_requests_before = api_requests(api)
        started = time.monotonic()
        controllers = start("-restarted")
        to_ready = time.monotonic() - started
        while sum(c.metric("iflearner_reconciles_total") for c in controllers) < args.jobs:
            if time.monotonic() - started > args.timeout:
                raise TimeoutError("the restarted controller did not reconcile every job")
            time.sleep(0.05)
        to_reconciled = time.monotonic() - started
        time.sleep(2)
        restart_runs = sum(c.metric("iflearner_pulumi_runs_total") for c in controllers)
        restart_requests = api_requests(api) - restart_requests_before
        restart_rss = sum(_status_kib(c.process.pid, "VmHWM") for c in controllers)

        fullest = max(sizes)
        per_record = sum(sizes) / max(1, args.jobs)
        print()
        pinned = f", each pinned to {args.cpus_per_operator} CPU(s)" if args.cpus_per_operator else ""
        print(f"iflearner-operator scale ({os.cpu_count()} CPUs, {count} operator(s) x {workers} workers{pinned}, "
              f"kwok, {args.shards} records shards)")
        print(f"  {args.jobs} jobs created at {args.rate}/s in {created:.0f} s; all Ready {all_ready:.0f} s after "
              f"the first create ({args.jobs / all_ready * 60:.0f} jobs/min held)")
        print(f"  controller peak RSS: {peak / 1024:.0f} MiB (with its Pulumi processes: {tree_peak / 1024:.0f} MiB; "
              "summed over operators)")
        print(f"  CPU per job: {own_cpu / args.jobs:.2f} s controller, {children_cpu / args.jobs:.2f} s Pulumi; "
              f"Pulumi runs: {int(runs)}")
        print(f"  API server requests per job (all clients): {requests / args.jobs:.0f}")
        print(f"  Pulumi's debug logs after the jobs: {log_files} files, {log_mib:.1f} MiB")
        print(f"  DNS records: {sum(sizes) / 1024:.0f} KiB in {args.shards} ConfigMaps, fullest "
              f"{fullest / 1024:.0f} KiB; the fullest reaches 1 MiB at about "
              f"{int(args.jobs * CONFIGMAP_LIMIT / fullest):,} jobs ({per_record:.0f} bytes per job)")
        print(f"  restart with {args.jobs} jobs: ready in {to_ready:.1f} s, every job reconciled in "
              f"{to_reconciled:.1f} s, Pulumi runs started: {int(restart_runs)}, "
              f"{restart_requests / args.jobs:.1f} API requests per job, RSS {restart_rss / 1024:.0f} MiB")
        result = {"operators": count, "jobs": args.jobs, "all_ready_s": round(all_ready, 1),
                  "restart_runs": restart_runs}
        print(json.dumps(result))
    except Exception as error:  # noqa: BLE001 - reported with where to look
        say(f"failed: {error}; logs in {work}")
        args.keep = True
    finally:
        for each in samplers:
            each.stopped.set()
        for each in controllers:
            each.stop()
        cluster.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
