"""Scale of one operator (issue 14): many jobs created at a steady rate, then a restart.

    .venv/bin/python bench/scale.py [--jobs 500] [--rate 1.0] [--workers 4] [--shards 8]

Starts its own local control plane (kwok nodes) and the controller as a process (the code of
``iflearner-operator run``, with the real Pulumi engine), as ``bench/run.py`` does, with DNS
records on (``--ingress-address``) spread over ``--shards`` records ConfigMaps. Prints:

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

CONFIGMAP_LIMIT = 1_048_576
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
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    from kubernetes import client, config

    work = Path(tempfile.mkdtemp(prefix="iflearner-scale-"))
    cluster = LocalCluster(work / "cluster")
    controller: Controller | None = None
    sampler: MemorySampler | None = None
    failed = False
    settings = ClusterSettings(dns_record_shards=args.shards)
    extra = ("--ingress-address", INGRESS_ADDRESS, "--dns-record-shards", str(args.shards))
    try:
        state = cluster.up(progress=say)
        api = config.new_client_from_config(config_file=str(state.kubeconfig))
        api.configuration.connection_pool_maxsize = 16
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        prepare_cluster(state.kubeconfig, api)
        for name in dns_configmap_names(settings)[1:]:
            core.create_namespaced_config_map(settings.dns_namespace, {"metadata": {"name": name}})

        controller = Controller(state.kubeconfig, work, args.workers, *extra)
        controller.wait_ready()
        sampler = MemorySampler(controller.process.pid)
        sampler.start()
        namespace = make_namespace(api, "scale")
        watcher = job_watcher(custom, namespace)
        manifests = [job_manifest(i, namespace, "scale") for i in range(args.jobs)]
        requests_before = api_requests(api)
        say(f"creating {args.jobs} jobs at {args.rate}/s; controller log: {controller.log_path}")
        first = time.monotonic()
        for index, manifest in enumerate(manifests):
            time.sleep(max(0.0, first + index / args.rate - time.monotonic()))
            custom.create_namespaced_custom_object("git.iflytek.com", "v1", namespace, "iflearnerjobs", manifest)
            if index % 50 == 49:
                say(f"{index + 1} created, {len(watcher.times)} Ready")
        created = time.monotonic() - first
        ready = watcher.wait([m["metadata"]["name"] for m in manifests], args.timeout)
        all_ready = max(ready.values()) - first
        time.sleep(3)  # the follow-up reconciles of the last ups
        requests = api_requests(api) - requests_before
        own_cpu, children_cpu = cpu_seconds(controller.process.pid)
        peak, tree_peak = sampler.process_peak_kib, sampler.tree_peak_kib
        sizes = records_sizes(core, settings)
        runs = controller.metric("iflearner_pulumi_runs_total")

        say("restarting the controller with every job in place")
        sampler.stopped.set()
        controller.stop()
        restart_requests_before = api_requests(api)
        started = time.monotonic()
        controller = Controller(state.kubeconfig, work, args.workers, *extra, log_name="controller-restarted.log")
        controller.wait_ready(timeout=600)
        to_ready = time.monotonic() - started
        while controller.metric("iflearner_reconciles_total") < args.jobs:
            if time.monotonic() - started > args.timeout:
                raise TimeoutError("the restarted controller did not reconcile every job")
            time.sleep(0.05)
        to_reconciled = time.monotonic() - started
        time.sleep(2)
        restart_runs = controller.metric("iflearner_pulumi_runs_total")
        restart_requests = api_requests(api) - restart_requests_before
        restart_rss = _status_kib(controller.process.pid, "VmHWM")

        fullest = max(sizes)
        per_record = sum(sizes) / max(1, args.jobs)
        print()
        print(f"iflearner-operator scale ({os.cpu_count()} CPUs, {args.workers} workers, kwok, "
              f"{args.shards} records shards)")
        print(f"  {args.jobs} jobs created at {args.rate}/s in {created:.0f} s; all Ready {all_ready:.0f} s after "
              f"the first create ({args.jobs / all_ready * 60:.0f} jobs/min held)")
        print(f"  controller peak RSS: {peak / 1024:.0f} MiB (with its Pulumi processes: {tree_peak / 1024:.0f} MiB)")
        print(f"  CPU per job: {own_cpu / args.jobs:.2f} s controller, {children_cpu / args.jobs:.2f} s Pulumi; "
              f"Pulumi runs: {int(runs)}")
        print(f"  API server requests per job (all clients): {requests / args.jobs:.0f}")
        print(f"  DNS records: {sum(sizes) / 1024:.0f} KiB in {args.shards} ConfigMaps, fullest "
              f"{fullest / 1024:.0f} KiB; the fullest reaches 1 MiB at about "
              f"{int(args.jobs * CONFIGMAP_LIMIT / fullest):,} jobs ({per_record:.0f} bytes per job)")
        print(f"  restart with {args.jobs} jobs: ready in {to_ready:.1f} s, every job reconciled in "
              f"{to_reconciled:.1f} s, Pulumi runs started: {int(restart_runs)}, "
              f"{restart_requests / args.jobs:.1f} API requests per job, RSS {restart_rss / 1024:.0f} MiB")
        print(json.dumps({"jobs": args.jobs, "all_ready_s": round(all_ready, 1), "restart_runs": restart_runs}))
        failed = restart_runs != 0
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
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
