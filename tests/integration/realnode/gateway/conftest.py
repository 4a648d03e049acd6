"""Fixtures for the gateway on the real node: the gateway's images imported
into the node's containerd, the bootstrap (real `pulumi up`: Gateway API
CRDs, Traefik, classes, the shared Gateway, CoreDNS wiring, CA) and the
operator as a local process on the gateway transport. `pulumi destroy` at
the end must leave none of it behind.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client

from iflearner.bootstrap import gateway
from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.images.gateway_images import gateway_images
from iflearner.localcluster.nodeconfig import NodeLayout
from iflearner.toolchain import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests" / "integration" / "controller"))
from controller_harness import ControllerProcess, wait_for  # noqa: E402
from gateway_harness import GATEWAY_ADDRESS, JOB_NAMESPACES, GatewayCluster  # noqa: E402


def _traefik_ready(apps: client.AppsV1Api) -> bool:
    deployment = apps.read_namespaced_deployment(gateway.NAME, gateway.NAMESPACE)
    return (deployment.status.available_replicas or 0) >= 1


# Module scope: torn down (jobs deleted, `pulumi destroy`) before the real-node
# teardown test stops the cluster and checks that nothing is left behind.
@pytest.fixture(scope="module")
def gateway_cluster(real_cluster, real_api: client.ApiClient,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayCluster]:
    assert real_cluster.state is not None
    kubeconfig = real_cluster.state.kubeconfig
    root = tmp_path_factory.mktemp("gateway")
    images = gateway_images(NodeLayout(real_cluster.cluster.data_dir).containerd_socket,
                            progress=lambda m: print(f"gateway images: {m}"))
    core = client.CoreV1Api(real_api)
    for namespace in JOB_NAMESPACES:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    config_file = root / "Pulumi.gateway.yaml"
    config_file.write_text(yaml.safe_dump({"config": {
        "iflearner:clusterRole": "all", "iflearner:operatorReplicas": 0,
        "iflearner:ingressAddress": GATEWAY_ADDRESS, "iflearner:gatewayClusterIP": GATEWAY_ADDRESS,
        "iflearner:ingressController": "traefik", "iflearner:transport": "gateway",
        "iflearner:gatewayImage": images["traefik"].reference,
        # Traefik reads Secrets and routes only here (and in its own namespace).
        "iflearner:jobNamespaces": list(JOB_NAMESPACES),
    }}))
    bootstrap = BootstrapProject("gateway", kubeconfig, root / "state", "gateway-test", config_file)
    started = time.monotonic()
    bootstrap.up(progress=lambda line: print(f"bootstrap: {line}"))
    apps = client.AppsV1Api(real_api)
    wait_for("Traefik to be available", lambda: _traefik_ready(apps), 180)
    print(f"gateway: bootstrap up and Traefik available in {time.monotonic() - started:.1f}s")
    settings = root / "cluster-settings.yaml"
    settings.write_text(yaml.safe_dump({"ingressAddress": GATEWAY_ADDRESS, "transport": "gateway"}))
    controller = ControllerProcess(kubeconfig, root / "operator-state", root / "controller.log",
                                   "--cluster-settings", str(settings), "--workers", "4").start()
    try:
        controller.wait_ready()
        yield GatewayCluster(kubeconfig, real_api, images["grpcapp"].reference, images["traefik"].reference,
                             controller, bootstrap, list(JOB_NAMESPACES))
    finally:
        _delete_all_jobs(real_api)
        controller.stop()
        bootstrap.destroy(progress=lambda line: print(f"destroy: {line}"))
        for namespace in JOB_NAMESPACES:
            core.delete_namespace(namespace)


def _delete_all_jobs(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    jobs = custom.list_cluster_custom_object("git.iflytek.com", "v1", "iflearnerjobs")["items"]
    for job in jobs:
        custom.delete_namespaced_custom_object("git.iflytek.com", "v1", job["metadata"]["namespace"],
                                               "iflearnerjobs", job["metadata"]["name"])
    deadline = time.monotonic() + 180
    while custom.list_cluster_custom_object("git.iflytek.com", "v1", "iflearnerjobs")["items"]:
        if time.monotonic() > deadline:
            break
        time.sleep(1)
