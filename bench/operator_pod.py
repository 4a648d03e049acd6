"""The operator as a Pod on the real node, with N jobs: prints its memory (from its cgroup) and the
time until every job's stack is up.

    .venv/bin/python bench/operator_pod.py [--jobs 20]

Uses the demo's real-node path (images, the `local-real` bootstrap with the operator Pod), then
applies N copies of examples/server.yaml and waits until every job's last operation succeeded.
Tears everything down at the end.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import yaml
from kubernetes import client

from iflearner.local.demo import GROUP, NAMESPACE, OPERATOR_LABEL, PLURAL, VERSION, Demo
from iflearner.toolchain import REPO_ROOT


def _memory_mib(pod: client.V1Pod) -> float | None:
    for usage in Path("/sys/fs/cgroup/memory").rglob(f"*pod{pod.metadata.uid}/memory.usage_in_bytes"):
        return int(usage.read_text()) / 2**20
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/ifl-bench-operator"))
    args = parser.parse_args()
    demo = Demo(args.data_dir, timeout=600, node="real")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        state = demo.cluster.up(node="real", progress=lambda m: None)
        images = demo._load_images()
        demo.operator_volume.mkdir(parents=True, exist_ok=True)
        import os

        os.chown(demo.operator_volume, 65532, 65532)
        bootstrap = demo.bootstrap(state.kubeconfig)
        bootstrap.ensure_stack()
        bootstrap.set_config("iflearner:operatorImage", images["iflearner-operator"])
        bootstrap.set_config("iflearner:gatewayImage", images["traefik"])
        bootstrap.set_config("iflearner:stateHostPath", str(demo.operator_volume))
        started = time.monotonic()
        bootstrap.up()
        api = demo._api(state.kubeconfig)
        demo._wait_operator_pod(api)
        print(f"bootstrap up -> operator Pod Ready: {time.monotonic() - started:.1f}s")
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        pod = core.list_namespaced_pod("iflearner-system", label_selector=OPERATOR_LABEL).items[0]
        print(f"operator Pod memory, no jobs: {_memory_mib(pod):.0f} MiB")
        base = yaml.safe_load((REPO_ROOT / "examples" / "server.yaml").read_text())
        started = time.monotonic()
        for index in range(args.jobs):
            job = copy.deepcopy(base)
            job["metadata"]["name"] = f"bench-{index}"
            job["spec"]["host"] = f"bench-{index}.server.iflearner.com"
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, job)
        peak = 0.0
        while True:
            jobs = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
            done = [j for j in jobs if ((j.get("status") or {}).get("lastOperation") or {}).get("result")
                    == "Succeeded"]
            peak = max(peak, _memory_mib(pod) or 0.0)
            if len(done) == args.jobs:
                break
            if time.monotonic() - started > 900:
                raise TimeoutError(f"{len(done)}/{args.jobs} jobs applied after 900s")
            time.sleep(1)
        print(f"{args.jobs} jobs applied by the operator Pod in {time.monotonic() - started:.1f}s")
        print(f"operator Pod memory with {args.jobs} jobs: now {_memory_mib(pod):.0f} MiB, "
              f"peak seen {peak:.0f} MiB (its cgroup: the operator and its Pulumi processes)")
    finally:
        demo.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
