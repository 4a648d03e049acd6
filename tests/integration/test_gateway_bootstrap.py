"""The bootstrap's gateway with the real Pulumi CLI on the local control plane:
`up` installs the Gateway API CRDs, Traefik (NodePort 30031, ClusterIP
pinned to ingressAddress), the GatewayClass, the nginx IngressClass and the
shared Gateway, and records the gateway transport for the operator;
`destroy` removes every one of them. (Traefik itself serves traffic in the
real-node tests, tests/integration/realnode/gateway.)

With tenancy config (issue 18), `up` also labels the job namespace for Pod Security
admission (the API server then refuses a privileged Pod from anyone), scopes CoreDNS's job
records to the job domains, name-constrains the CA to them, gives Traefik Secrets only in its
own and the job namespaces, and records the policy for the operator."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from iflearner.bootstrap import gateway
from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.localcluster import LocalCluster
from iflearner.operator_record import SETTINGS_CONFIGMAP, SETTINGS_KEY

ADDRESS = "10.96.200.1"
DOMAINS = ["server.iflearner.com", "party.iflearner.com"]
TRAEFIK = f"system:serviceaccount:{gateway.NAMESPACE}:{gateway.NAME}"
CRDS = ("gatewayclasses", "gateways", "grpcroutes", "httproutes", "referencegrants", "backendtlspolicies")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[tuple[client.ApiClient, BootstrapProject]]:
    root = tmp_path_factory.mktemp("gateway-bootstrap")
    local = LocalCluster(root / "cluster")
    state = local.up(progress=print)
    config_file = root / "Pulumi.gw.yaml"
    config_file.write_text(yaml.safe_dump({"config": {
        "iflearner:clusterRole": "all", "iflearner:operatorReplicas": 0, "iflearner:ingressAddress": ADDRESS,
        "iflearner:gatewayClusterIP": ADDRESS, "iflearner:gatewayImage": "iflearner.local/traefik:test",
        "iflearner:podSecurity": "baseline", "iflearner:jobDomains": DOMAINS, "iflearner:jobNamespaces": ["default"],
        "iflearner:refusedPeerNetworks": ["10.96.0.0/16"]}}))
    project = BootstrapProject("gw", state.kubeconfig, root / "state", "gateway-bootstrap-test", config_file)
    api = config.new_client_from_config(config_file=str(state.kubeconfig))
    try:
        yield api, project
    finally:
        api.close()
        local.down()


def _gone(read) -> bool:
    try:
        read()
    except ApiException as error:
        return error.status == 404
    return False


def test_up_installs_the_gateway_and_destroy_removes_it(cluster) -> None:
    api, project = cluster
    project.up()
    extensions = client.ApiextensionsV1Api(api)
    for plural in CRDS:
        crd = extensions.read_custom_resource_definition(f"{plural}.gateway.networking.k8s.io")
        assert crd.metadata.annotations["gateway.networking.k8s.io/bundle-version"] == "v1.4.0"
        assert crd.metadata.annotations["gateway.networking.k8s.io/channel"] == "standard"
    custom = client.CustomObjectsApi(api)
    gateway_class = custom.get_cluster_custom_object("gateway.networking.k8s.io", "v1", "gatewayclasses", "iflearner")
    assert gateway_class["spec"]["controllerName"] == "traefik.io/gateway-controller"
    shared = custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", gateway.NAMESPACE, "gateways",
                                                 gateway.SHARED_GATEWAY)
    assert shared["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]["from"] == "All"
    assert client.NetworkingV1Api(api).read_ingress_class("nginx").spec.controller == "k8s.io/ingress-nginx"
    core = client.CoreV1Api(api)
    service = core.read_namespaced_service(gateway.NAME, gateway.NAMESPACE)
    assert service.spec.type == "NodePort" and service.spec.cluster_ip == ADDRESS
    assert {p.name: p.node_port for p in service.spec.ports}["websecure"] == 30031
    assert core.read_namespaced_secret(gateway.DEFAULT_CERT_SECRET, gateway.NAMESPACE).type == "kubernetes.io/tls"
    deployment = client.AppsV1Api(api).read_namespaced_deployment(gateway.NAME, gateway.NAMESPACE)
    assert deployment.spec.template.spec.containers[0].image == "iflearner.local/traefik:test"
    recorded = yaml.safe_load(core.read_namespaced_config_map(SETTINGS_CONFIGMAP, "iflearner-system")
                              .data[SETTINGS_KEY])
    assert recorded["transport"] == "gateway"  # new clusters route jobs through Gateway API
    assert recorded["job_domains"] == DOMAINS and recorded["pod_security"] == "baseline"
    assert recorded["refused_peer_networks"] == ["10.96.0.0/16"]
    _tenancy_is_declared(api)

    project.destroy()
    assert _gone(lambda: core.read_namespace(gateway.NAMESPACE)) or \
        core.read_namespace(gateway.NAMESPACE).status.phase == "Terminating"
    for plural in CRDS:
        assert _gone(lambda plural=plural: extensions.read_custom_resource_definition(
            f"{plural}.gateway.networking.k8s.io"))
    assert _gone(lambda: client.NetworkingV1Api(api).read_ingress_class("nginx"))
    labels = core.read_namespace("default").metadata.labels or {}
    assert "pod-security.kubernetes.io/enforce" not in labels and gateway.WATCHED_LABEL not in labels
    assert "auto server.iflearner.com" not in core.read_namespaced_config_map("coredns", "kube-system").data["Corefile"]
    rbac = client.RbacAuthorizationV1Api(api)
    assert _gone(lambda: rbac.read_namespaced_role("iflearner-traefik", "default"))
    assert _gone(lambda: rbac.read_cluster_role("iflearner-traefik"))
    assert _gone(lambda: rbac.read_cluster_role_binding("iflearner-traefik"))


def _traefik_may(api: client.ApiClient, verb: str, resource: str, namespace: str | None = None,
                 name: str | None = None, group: str = "") -> bool:
    review = client.AuthorizationV1Api(api).create_subject_access_review(client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(user=TRAEFIK, groups=["system:serviceaccounts"],
                                              resource_attributes=client.V1ResourceAttributes(
                                                  verb=verb, resource=resource, namespace=namespace, name=name,
                                                  group=group))))
    return bool(review.status.allowed)


def _tenancy_is_declared(api: client.ApiClient) -> None:
    from cryptography import x509

    core = client.CoreV1Api(api)
    labels = core.read_namespace("default").metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels[gateway.WATCHED_LABEL] == "true"
    # The API server's own admission: a privileged Pod is refused to anyone, the admin included.
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod("default", client.V1Pod(
            metadata=client.V1ObjectMeta(name="root-on-the-host"),
            spec=client.V1PodSpec(host_pid=True, containers=[client.V1Container(
                name="c", image="busybox", security_context=client.V1SecurityContext(privileged=True))])))
    assert refused.value.status == 403 and "PodSecurity" in refused.value.body, refused.value.body
    # CoreDNS answers from job records only under the job domains.
    corefile = core.read_namespaced_config_map("coredns", "kube-system").data["Corefile"]
    assert "auto server.iflearner.com party.iflearner.com {" in corefile
    # The CA cannot sign for any other name.
    ca_pem = base64.b64decode(core.read_namespaced_secret("iflearner-ca", "iflearner-system").data["tls.crt"])
    constraints = x509.load_pem_x509_certificate(ca_pem).extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert [n.value for n in constraints.value.permitted_subtrees] == DOMAINS
    # Traefik reads Secrets where it serves, never the CA's namespace nor kube-system.
    assert _traefik_may(api, "list", "secrets", "default")
    assert _traefik_may(api, "list", "secrets", gateway.NAMESPACE)
    assert not _traefik_may(api, "list", "secrets")
    assert not _traefik_may(api, "list", "secrets", "kube-system")
    assert not _traefik_may(api, "get", "secrets", "iflearner-system", "iflearner-ca")
    assert _traefik_may(api, "list", "gatewayclasses", group="gateway.networking.k8s.io")
    assert _traefik_may(api, "list", "namespaces")
    assert not _traefik_may(api, "list", "grpcroutes", group="gateway.networking.k8s.io")  # only where it serves
    assert _traefik_may(api, "list", "grpcroutes", "default", group="gateway.networking.k8s.io")
