"""Figures for the gateway (issue 10): Traefik on the real node.

    .venv/bin/python bench/gateway.py [--jobs 10] [--calls 200]

Starts its own local cluster with ``node="real"`` in a temporary directory,
builds and imports the gateway's images, bootstraps it with the real
``pulumi up`` (Gateway API CRDs, Traefik, shared Gateway, CoreDNS wiring, CA),
runs the operator as a process on the gateway transport, and prints:

1. the Traefik binary's and image's sizes (the build time is the toolchain
   script's ``traefik: done in Ns`` line);
2. job apply -> route programmed (the job's Gateway listener Programmed and
   its GRPCRoute Accepted by Traefik), N jobs one after another: p50, max;
3. gRPC round trip (1 KiB unary) from a second Pod: through the gateway
   (TLS, by the job's host name) and to the server Pod directly (h2c, its
   IP), same run, p50 of M calls each (the first call, which connects, apart);
4. with ``--model-mib N``: one unary message of N MiB (e.g. 1024, a 1 GiB
   model) through the gateway on both transports, with its time.

Figures, not a pass/fail test: exit status 1 only when something did not
converge. Only one real-node cluster can run on a host at a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration" / "controller"))

from controller_harness import ControllerProcess  # noqa: E402

from iflearner import toolchain  # noqa: E402
from iflearner.bootstrap import gateway  # noqa: E402
from iflearner.bootstrap.cli_runner import BootstrapProject  # noqa: E402
from iflearner.images.gateway_images import gateway_images  # noqa: E402
from iflearner.localcluster import LocalCluster  # noqa: E402
from iflearner.localcluster.nodeconfig import NodeLayout  # noqa: E402

GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"
GATEWAY_API = "gateway.networking.k8s.io"
ADDRESS = "10.96.200.1"
NAMESPACE = "bench-gateway"


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def wait(what: str, check: Any, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except client.ApiException:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"bench: timed out after {timeout:.0f}s waiting for {what}")


def job(name: str, role: str, host: str, image: str, args: list[str], **extra: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IflearnerJob",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"role": role, "host": host, **extra, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never", "args": args}]}}}}


def true_conditions(conditions: list[dict[str, Any]] | None) -> set[str]:
    return {c["type"] for c in conditions or [] if c.get("status") == "True"}


def route_programmed(custom: client.CustomObjectsApi, name: str) -> bool:
    gw = custom.get_namespaced_custom_object(GATEWAY_API, "v1", NAMESPACE, "gateways", name)
    listeners = (gw.get("status") or {}).get("listeners") or []
    if not listeners or "Programmed" not in true_conditions(listeners[0].get("conditions")):
        return False
    route = custom.get_namespaced_custom_object(GATEWAY_API, "v1", NAMESPACE, "grpcroutes", name)
    parents = (route.get("status") or {}).get("parents") or []
    return bool(parents) and {"Accepted", "ResolvedRefs"} <= true_conditions(parents[0].get("conditions"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--model-mib", type=int, default=0, help="also send one message this big (0: skip)")
    args = parser.parse_args()

    binary = toolchain.tool("traefik")
    root = Path(tempfile.mkdtemp(prefix="iflearner-bench-gateway-"))
    cluster = LocalCluster(root / "cluster")
    say("starting a real-node cluster")
    state = cluster.up(node="real", progress=lambda m: say(f"  {m}"))
    bootstrap: BootstrapProject | None = None
    controller: ControllerProcess | None = None
    figures: list[str] = []
    try:
        images = gateway_images(NodeLayout(cluster.data_dir).containerd_socket, progress=lambda m: say(f"  {m}"))
        traefik_image, grpcapp_image = images["traefik"], images["grpcapp"]
        figures.append(f"traefik binary {binary.stat().st_size / 2**20:.1f} MiB, image archive "
                       f"{traefik_image.archive.stat().st_size / 2**20:.1f} MiB ({traefik_image.reference})")
        api = config.new_client_from_config(config_file=str(state.kubeconfig))
        custom, core, apps = client.CustomObjectsApi(api), client.CoreV1Api(api), client.AppsV1Api(api)
        # The job namespace exists before the bootstrap: Traefik gets a Role there and serves it.
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        config_file = root / "Pulumi.bench.yaml"
        config_file.write_text(yaml.safe_dump({"config": {
            "iflearner:clusterRole": "all", "iflearner:operatorReplicas": 0, "iflearner:ingressAddress": ADDRESS,
            "iflearner:gatewayClusterIP": ADDRESS, "iflearner:transport": "gateway",
            "iflearner:gatewayImage": traefik_image.reference, "iflearner:jobNamespaces": [NAMESPACE]}}))
        bootstrap = BootstrapProject("bench", state.kubeconfig, root / "state", "bench-gateway", config_file)
        started = time.monotonic()
        bootstrap.up()
        wait("Traefik", lambda: (apps.read_namespaced_deployment(gateway.NAME, gateway.NAMESPACE)
                                 .status.available_replicas or 0) >= 1, 300)
        figures.append(f"bootstrap up -> Traefik available: {time.monotonic() - started:.1f} s")
        settings = root / "settings.yaml"
        settings.write_text(yaml.safe_dump({"ingressAddress": ADDRESS, "transport": "gateway"}))
        controller = ControllerProcess(state.kubeconfig, root / "operator", root / "controller.log",
                                       "--cluster-settings", str(settings)).start()
        controller.wait_ready()

        programmed: list[float] = []
        for index in range(args.jobs):
            name = f"route{index}"
            began = time.monotonic()
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, job(
                name, "server", f"{name}.server.iflearner.com", grpcapp_image.reference, ["serve", "50001"]))
            wait(f"{name}'s route", lambda name=name: route_programmed(custom, name), 180)
            programmed.append(time.monotonic() - began)
            say(f"  {name}: route programmed after {programmed[-1]:.2f} s")
        figures.append(f"job apply -> route programmed, {args.jobs} jobs in sequence: "
                       f"p50 {statistics.median(programmed):.2f} s, max {max(programmed):.2f} s")

        pod_ip = wait("route0's Pod IP", lambda: core.read_namespaced_pod("route0", NAMESPACE).status.pod_ip, 120)
        checks = [
            {"name": "warm", "target": "route0.server.iflearner.com:443", "ca": "/etc/server-iflearner-secret.crt",
             "retry_seconds": 180},
            {"name": "gateway", "target": "route0.server.iflearner.com:443", "ca": "/etc/server-iflearner-secret.crt",
             "size": 1024, "count": args.calls + 1},
            {"name": "direct", "target": f"{pod_ip}:50001", "size": 1024, "count": args.calls + 1},
        ]
        if args.model_mib:
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, job(
                "ingress0", "server", "ingress0.server.iflearner.com", grpcapp_image.reference, ["serve", "50001"],
                transport="ingress"))
            trust = "/etc/server-iflearner-secret.crt"
            checks += [
                {"name": "model-gateway", "target": "route0.server.iflearner.com:443", "ca": trust,
                 "size": args.model_mib << 20, "timeout": 900},
                {"name": "model-ingress", "target": "ingress0.server.iflearner.com:443", "ca": trust,
                 "size": args.model_mib << 20, "timeout": 900, "retry_seconds": 180},
            ]
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, job(
            "prober", "client", "prober.a.party.iflearner.com", grpcapp_image.reference,
            ["probe", json.dumps(checks)]))
        wait("the prober", lambda: core.read_namespaced_pod("prober", NAMESPACE).status.phase
             in ("Succeeded", "Failed"), 600, interval=0.5)
        results = {r["name"]: r for r in (json.loads(line) for line in
                                         (core.read_namespaced_pod_log("prober", NAMESPACE) or "").splitlines()
                                         if line.startswith("{"))}
        if not all(r.get("ok") for r in results.values()):
            raise SystemExit(f"bench: the prober failed: {results}")
        gateway_p50 = statistics.median(results["gateway"]["latencies"]) * 1000
        direct_p50 = statistics.median(results["direct"]["latencies"]) * 1000
        figures.append(f"gRPC round trip (1 KiB unary), {args.calls} calls each: through the gateway "
                       f"p50 {gateway_p50:.2f} ms, to the Pod directly p50 {direct_p50:.2f} ms "
                       f"(+{gateway_p50 - direct_p50:.2f} ms)")
        for name in ("model-gateway", "model-ingress"):
            if name in results:
                figures.append(f"one {args.model_mib} MiB unary message, {name.split('-')[1]} transport: "
                               f"{results[name]['first']:.1f} s")
    finally:
        if controller is not None:
            try:
                api = config.new_client_from_config(config_file=str(state.kubeconfig))
                custom = client.CustomObjectsApi(api)
                for item in custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]:
                    custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL,
                                                           item["metadata"]["name"])
                wait("the jobs to go", lambda: not custom.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL)["items"], 300, interval=0.5)
            finally:
                controller.stop()
        if bootstrap is not None:
            bootstrap.destroy()
        cluster.down()
    print("gateway figures (2 CPUs):")
    for line in figures:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
