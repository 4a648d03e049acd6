"""Figures for the real node (issue 9).

    .venv/bin/python bench/realnode.py [--pods 10] [--keep]

Starts its own local cluster with ``node="real"`` in a temporary directory
(the images are built first if the cache lacks them, and timed apart) and
prints:

1. image build time (zero-ish when cached) and ``cluster up --node real``
   time to a Ready node with CoreDNS answering through the kube-dns Service;
2. Pod create -> Running for the test image, N Pods one after another
   (p50, max), timed from the create call to the Pod's Running phase;
3. ``cluster down`` time.

Figures, not a pass/fail test: exit status 1 only when something did not
converge.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iflearner.images import project_images  # noqa: E402
from iflearner.localcluster import LocalCluster  # noqa: E402


def create_to_running(core: client.CoreV1Api, namespace: str, name: str, image: str) -> float:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(restart_policy="Never", termination_grace_period_seconds=0, containers=[
            client.V1Container(name="main", image=image, image_pull_policy="Never", args=["serve", "8080"])]))
    stream = watch.Watch()
    started = time.monotonic()
    core.create_namespaced_pod(namespace, pod)
    for event in stream.stream(core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}",
                               timeout_seconds=120):
        if event["object"].status.phase == "Running":
            stream.stop()
            return time.monotonic() - started
    raise RuntimeError(f"pod {name} did not reach Running in 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args()

    started = time.monotonic()
    images = project_images(progress=lambda msg: print(f"  images: {msg}"), names=["pause", "coredns", "testapp"])
    build_seconds = time.monotonic() - started
    data_dir = Path(tempfile.mkdtemp(prefix="rn-bench-"))
    cluster = LocalCluster(data_dir)
    started = time.monotonic()
    state = cluster.up(node="real", progress=lambda msg: print(f"  cluster: {msg}"))
    up_seconds = time.monotonic() - started
    try:
        api = config.new_client_from_config(config_file=str(state.kubeconfig))
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="bench")))
        times = [create_to_running(core, "bench", f"web-{i}", images["testapp"].reference)
                 for i in range(args.pods)]
        api.close()
    finally:
        if not args.keep:
            down_started = time.monotonic()
            cluster.down()
            down_seconds = time.monotonic() - down_started
    print()
    print(f"  images (pause, coredns, testapp), build or cache: {build_seconds:8.2f} s")
    print(f"  cluster up --node real (Ready node, CoreDNS answering): {up_seconds:8.2f} s")
    print(f"  Pod create -> Running, {args.pods} Pods one after another: "
          f"p50 {statistics.median(times):6.2f} s   max {max(times):6.2f} s")
    if not args.keep:
        print(f"  cluster down (everything undone):       {down_seconds:8.2f} s")
    else:
        print(f"  kept: kubeconfig {state.kubeconfig}; stop with "
              f"`iflearner-operator cluster down --data-dir {data_dir}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
