"""The gateway the bootstrap installs (Traefik for Gateway API and nginx-class Ingresses), as plain manifests."""

from __future__ import annotations

import pytest

from iflearner.bootstrap import gateway
from iflearner.bootstrap.operator import cluster_role_rules as operator_rules
from iflearner.desired import ClusterSettings, desired_resources
from iflearner.job import parse_job

CONFIG = gateway.GatewayConfig(image="iflearner.local/traefik:abc")


def by_kind(objects):
    return {o["kind"]: o for o in objects}


def test_service_exposes_the_tls_entry_point_on_node_port_30031_by_default():
    service = by_kind(gateway.traefik(CONFIG))["Service"]
    https = next(p for p in service["spec"]["ports"] if p["name"] == "websecure")
    assert service["spec"]["type"] == "NodePort"
    assert (https["port"], https["targetPort"], https["nodePort"]) == (443, "websecure", 30031)
    assert "clusterIP" not in service["spec"]
    # host:30031 also works where the host resolves to the Service's ClusterIP (inside the cluster).
    compat = next(p for p in service["spec"]["ports"] if p["port"] == 30031)
    assert compat["targetPort"] == "websecure" and "nodePort" not in compat


def test_service_type_node_port_and_cluster_ip_are_configurable():
    service = by_kind(gateway.traefik(gateway.GatewayConfig(
        image="x", service_type="ClusterIP", cluster_ip="10.96.200.1")))["Service"]
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["clusterIP"] == "10.96.200.1"
    assert all("nodePort" not in p for p in service["spec"]["ports"])
    assert 30031 in [p["port"] for p in service["spec"]["ports"]]
    with pytest.raises(ValueError, match="NodePort"):
        gateway.GatewayConfig(image="x", service_type="External")


def test_jobs_listener_port_is_an_entry_point_of_traefik():
    # Traefik maps a Gateway listener to the entry point with the same port.
    args = gateway.traefik_args(CONFIG)
    port = ClusterSettings().gateway_listener_port
    assert f"--entryPoints.websecure.address=:{port}" in args
    container = by_kind(gateway.traefik(CONFIG))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "websecure", "containerPort": port} in container["ports"]
    assert container["image"] == CONFIG.image


def test_large_models_are_not_cut_by_proxy_deadlines():
    args = gateway.traefik_args(CONFIG)
    for entry_point in ("web", "websecure"):
        assert f"--entryPoints.{entry_point}.transport.respondingTimeouts.readTimeout=0s" in args
    assert not any("buffering" in a.lower() or "maxRequestBodyBytes" in a for a in args)


def test_both_providers_on_and_status_address_is_the_ingress_address():
    args = gateway.traefik_args(gateway.GatewayConfig(image="x", ingress_address="10.96.200.1"))
    assert "--providers.kubernetesgateway=true" in args and "--providers.kubernetesingressnginx=true" in args
    assert "--providers.kubernetesgateway.statusAddress.ip=10.96.200.1" in args
    assert "--providers.kubernetesingressnginx.publishStatusAddress=10.96.200.1" in args
    # Without one, the Service's address is published.
    assert any("statusAddress.service.name" in a for a in gateway.traefik_args(CONFIG))


def test_runs_unprivileged():
    pod = by_kind(gateway.traefik(CONFIG))["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert all(p["containerPort"] >= 1024 for p in container["ports"])


def test_traefik_rbac_has_no_wildcards_and_writes_only_status():
    rules = gateway.cluster_role_rules()
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule
        if set(rule["verbs"]) & {"update", "patch", "create"}:
            assert all(r.endswith("/status") or r == "events" for r in rule["resources"]), rule
    readable = {r for rule in rules if "watch" in rule["verbs"] for r in rule["resources"]}
    assert {"gateways", "grpcroutes", "gatewayclasses", "referencegrants", "ingresses", "ingressclasses",
            "services", "endpointslices", "secrets"} <= readable


def test_classes_match_what_jobs_name():
    objects = by_kind(gateway.classes(CONFIG))
    settings = ClusterSettings()
    assert objects["GatewayClass"]["metadata"]["name"] == settings.gateway_class_name
    assert objects["GatewayClass"]["spec"]["controllerName"] == "traefik.io/gateway-controller"
    assert objects["IngressClass"]["metadata"]["name"] == settings.ingress_class_name == "nginx"
    assert objects["IngressClass"]["spec"]["controller"] == "k8s.io/ingress-nginx"


def test_shared_gateway_accepts_grpc_routes_from_every_namespace():
    shared = gateway.shared_gateway(CONFIG)
    (listener,) = shared["spec"]["listeners"]
    assert listener["allowedRoutes"]["namespaces"] == {"from": "All"}
    assert listener["port"] == gateway.HTTPS_PORT and listener["protocol"] == "HTTPS"
    assert listener["tls"]["certificateRefs"][0]["name"] == gateway.DEFAULT_CERT_SECRET


def test_operator_may_manage_the_gateway_objects_of_jobs():
    job = parse_job({"apiVersion": "git.iflytek.com/v1", "kind": "IflearnerJob", "metadata": {"name": "j"},
                     "spec": {"role": "server", "host": "j.server.iflearner.com",
                              "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    desired = desired_resources(job, ClusterSettings(transport="gateway"))
    rules = operator_rules()
    for manifest in desired.route_manifests:
        group = manifest["apiVersion"].rpartition("/")[0]
        plural = manifest["kind"].lower() + "s"
        assert any(group in r["apiGroups"] and plural in r["resources"] and "create" in r["verbs"]
                   for r in rules), manifest["kind"]


def test_gateway_class_description_fits_the_crds_limit():
    gateway_class = by_kind(gateway.classes(CONFIG))["GatewayClass"]
    assert len(gateway_class["spec"]["description"].encode()) <= 64


def test_traefik_reads_secrets_only_in_the_namespaces_it_serves():
    config = gateway.GatewayConfig(image="traefik:test", job_namespaces=("default", "ml"))
    objects = gateway.traefik(config)
    cluster_role = next(o for o in objects if o["kind"] == "ClusterRole")
    cluster_wide = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert cluster_wide == {"namespaces", "ingressclasses", "gatewayclasses", "gatewayclasses/status"}
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    assert set(roles) == {gateway.NAMESPACE, "default", "ml"}
    assert any("secrets" in rule["resources"] for rule in roles["ml"]["rules"])
    bindings = {o["metadata"]["namespace"] for o in objects if o["kind"] == "RoleBinding"}
    assert bindings == set(roles)
    args = gateway.traefik_args(config)
    assert f"--providers.kubernetesgateway.namespaces={gateway.NAMESPACE},default,ml" in args
    assert f"--providers.kubernetesingressnginx.watchNamespaceSelector={gateway.WATCHED_LABEL}=true" in args
    namespace = next(o for o in objects if o["kind"] == "Namespace")
    assert namespace["metadata"]["labels"][gateway.WATCHED_LABEL] == "true"
    # Jobs anywhere ("*"): one ClusterRole, as before.
    everywhere = gateway.traefik(gateway.GatewayConfig(image="traefik:test"))
    assert not any(o["kind"] == "Role" for o in everywhere)
    assert not any("namespaces=" in a for a in gateway.traefik_args(gateway.GatewayConfig(image="t")))
