"""What a kubeadm cluster has besides its control plane: a node, and CoreDNS
in kube-system with the stock Corefile. Bootstrap wires the same objects it
meets in a real cluster, so the local cluster carries them too. With kwok the
CoreDNS Pod is a simulation (tests start a real CoreDNS binary themselves);
on the real node it runs from the project's coredns image.
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
UPSTREAM_COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:v1.12.1"


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


def coredns_rbac() -> list[dict[str, Any]]:
    """kubeadm's ClusterRole and binding for CoreDNS's kubernetes plugin."""
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [
             {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]},
    ]


def coredns_objects(image: str = UPSTREAM_COREDNS_IMAGE) -> list[dict[str, Any]]:
    meta = {"namespace": "kube-system", "labels": dict(COREDNS_LABELS)}
    # A locally built image exists only in this node's containerd.
    pull_policy = "IfNotPresent" if image == UPSTREAM_COREDNS_IMAGE else "Never"
    return [
        *coredns_rbac(),
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
                     # As kubeadm: the node's resolver, not CoreDNS itself
                     # (its `loop` plugin would stop it).
                     "dnsPolicy": "Default",
                     "containers": [{
                         "name": "coredns",
                         "image": image,
                         "imagePullPolicy": pull_policy,
                         "args": ["-conf", "/etc/coredns/Corefile"],
                         "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                   {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                         "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                            "periodSeconds": 2},
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


def install_addons(kubeconfig: Path, node_name: str, timeout: float, *, fake: bool = True,
                   coredns_image: str = UPSTREAM_COREDNS_IMAGE) -> None:
    """Register the node (a fake one for kwok; a real kubelet registers its
    own) and CoreDNS; wait until the node is Ready and the controller-manager
    has made the default ServiceAccount (Pods need it)."""
    deadline = time.monotonic() + max(timeout, 10.0)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        core = client.CoreV1Api(api)
        _wait("the API server to accept writes", lambda: core.list_namespace() is not None, deadline)
        if fake:
            _create(api, fake_node(node_name))
        for manifest in coredns_objects(coredns_image):
            _create(api, manifest)

        def node_ready() -> bool:
            node = core.read_node(node_name)
            return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

        _wait(f"node {node_name} to be Ready ({'kwok' if fake else 'kubelet'})", node_ready, deadline)
        _wait("the default ServiceAccount (controller-manager)",
              lambda: core.read_namespaced_service_account("default", "default") is not None, deadline)
    finally:
        api.close()


def wait_coredns(kubeconfig: Path, timeout: float) -> None:
    """Wait until the CoreDNS Deployment has a ready replica (real node)."""
    deadline = time.monotonic() + max(timeout, 10.0)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        apps = client.AppsV1Api(api)

        def available() -> bool:
            status = apps.read_namespaced_deployment("coredns", "kube-system").status
            return bool(status.ready_replicas)

        _wait("CoreDNS to be ready", available, deadline)
    finally:
        api.close()
