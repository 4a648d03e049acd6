"""What a kubeadm cluster has besides its control plane: a node, and CoreDNS
in kube-system with the stock Corefile. Bootstrap wires the same objects it
meets in a real cluster, so the local cluster carries them too (kwok runs the
CoreDNS Pod as a simulation; tests start a real CoreDNS binary themselves).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

STOCK_COREFILE = """.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""
COREDNS_LABELS = {"k8s-app": "kube-dns"}


def fake_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "status": {
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
        },
    }


def coredns_objects() -> list[dict[str, Any]]:
    meta = {"namespace": "kube-system", "labels": dict(COREDNS_LABELS)}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", **meta},
         "data": {"Corefile": STOCK_COREFILE}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", **meta},
         "spec": {
             "replicas": 1,
             "selector": {"matchLabels": dict(COREDNS_LABELS)},
             "template": {
                 "metadata": {"labels": dict(COREDNS_LABELS)},
                 "spec": {
                     "serviceAccountName": "coredns",
                     "containers": [{
                         "name": "coredns",
                         "image": "registry.k8s.io/coredns/coredns:v1.12.1",
                         "args": ["-conf", "/etc/coredns/Corefile"],
                         "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns",
                                           "readOnly": True}],
                     }],
                     "volumes": [{"name": "config-volume", "configMap": {
                         "name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                 },
             },
         }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", **meta},
         "spec": {"selector": dict(COREDNS_LABELS), "clusterIP": "10.96.0.10", "ports": [
             {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}},
    ]


def _create(api: client.ApiClient, manifest: dict[str, Any]) -> None:
    from kubernetes.utils import create_from_dict

    try:
        create_from_dict(api, manifest)
    except Exception as error:  # create_from_dict wraps ApiExceptions in FailToCreateError
        statuses = [getattr(e, "status", None) for e in getattr(error, "api_exceptions", [error])]
        if statuses != [409]:
            raise


def _wait(what: str, check, deadline: float) -> None:  # noqa: ANN001
    while True:
        try:
            if check():
                return
        except ApiException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.3)


def install_addons(kubeconfig: Path, node_name: str, timeout: float) -> None:
    """Register the fake node and CoreDNS; wait until the node is Ready and the
    controller-manager has made the default ServiceAccount (Pods need it)."""
    deadline = time.monotonic() + max(timeout, 10.0)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        core = client.CoreV1Api(api)
        _wait("the API server to accept writes", lambda: core.list_namespace() is not None, deadline)
        _create(api, fake_node(node_name))
        for manifest in coredns_objects():
            _create(api, manifest)

        def node_ready() -> bool:
            node = core.read_node(node_name)
            return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

        _wait(f"node {node_name} to be Ready (kwok)", node_ready, deadline)
        _wait("the default ServiceAccount (controller-manager)",
              lambda: core.read_namespaced_service_account("default", "default") is not None, deadline)
    finally:
        api.close()
