"""The cluster's gateway as plain manifests: Traefik serving Gateway API
(GatewayClass ``iflearner``, the shared Gateway, every job's Gateway and
GRPCRoute) and the original nginx-class Ingresses (Traefik's
kubernetesIngressNGINX provider), in place of the retired ingress-nginx.

Pure, so tests read what the bootstrap declares without a cluster.

Why the static configuration is what it is:
- Entry points ``web`` :8000 and ``websecure`` :8443 (unprivileged ports, so
  Traefik runs as a non-root user without NET_BIND_SERVICE). Traefik maps a
  Gateway listener to the entry point with the same port, so jobs' listeners
  use 8443; the Service maps 443 (and NodePort 30031, the port the original
  example jobs and iflearner-flow dial) to it.
- No read deadline and a long idle timeout on both entry points: a model of
  1 GiB is one gRPC message that may take minutes to upload, and parties keep
  their channel open between rounds. Traefik sets no body-size limit of its
  own (it streams; there is no buffering middleware here), so the original's
  ``proxy-body-size: 1024m`` needs no counterpart; gRPC message limits are
  the endpoints' (client and server options), and HTTP/2 keepalive PINGs are
  answered by the proxy.
- Gateway and Ingress status carry ``ingressAddress`` (what jobs' DNS
  records point at), so ``kubectl get gateway`` shows where a job is reached.
- Traefik reads Secrets, Services and routes only in the namespaces it serves
  (its own and the job namespaces): a Role in each, the Gateway API provider's
  ``namespaces`` list and the NGINX provider's namespace label selector (it
  takes one namespace or a selector, not a list). Cluster-wide it lists only
  Namespaces, GatewayClasses and IngressClasses (Traefik v3.6.12's informers);
  the CA Secret and kube-system's are never readable to it. Only a cluster
  whose jobs may live anywhere (``jobNamespaces: ["*"]``) keeps one ClusterRole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iflearner.desired import GATEWAY_API_GROUP, GATEWAY_API_VERSION

NAMESPACE = "iflearner-gateway"
NAME = "traefik"
CONTROLLER_NAME = "traefik.io/gateway-controller"
# The IngressClass the original jobs' Ingresses name, and the controller value
# Traefik's NGINX provider matches (it is ingress-nginx's own).
NGINX_CLASS = "nginx"
NGINX_CONTROLLER = "k8s.io/ingress-nginx"
SHARED_GATEWAY = "iflearner"
DEFAULT_CERT_SECRET = "iflearner-gateway-default-tls"
HTTP_PORT, HTTPS_PORT, ADMIN_PORT = 8000, 8443, 9000
HTTPS_NODE_PORT = 30031
SERVICE_TYPES = ("NodePort", "LoadBalancer", "ClusterIP")
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "iflearner-operator"}
# Namespaces whose Ingresses, Services and Secrets the gateway reads (the NGINX provider's selector).
WATCHED_LABEL = "gateway.iflearner.git.iflytek.com/served"
WATCHED_VALUE = "true"


@dataclass(frozen=True)
class GatewayConfig:
    image: str
    gateway_class_name: str = "iflearner"
    service_type: str = "NodePort"
    https_node_port: int | None = HTTPS_NODE_PORT  # NodePort/LoadBalancer only; None: any free port
    cluster_ip: str | None = None  # pin the Service's ClusterIP (e.g. to ingressAddress inside the cluster)
    ingress_address: str | None = None  # written to Gateway and Ingress status
    replicas: int = 1
    log_level: str = "INFO"
    # The job namespaces Traefik serves (besides its own); None: every namespace (jobNamespaces ["*"]).
    job_namespaces: tuple[str, ...] | None = None

    @property
    def watched_namespaces(self) -> tuple[str, ...] | None:
        if self.job_namespaces is None:
            return None
        return tuple(dict.fromkeys((NAMESPACE, *self.job_namespaces)))

    def __post_init__(self) -> None:
        if self.service_type not in SERVICE_TYPES:
            raise ValueError(f"gateway service type must be one of {', '.join(SERVICE_TYPES)}, "
                             f"got {self.service_type!r}")


def _meta(name: str, namespace: str | None = NAMESPACE) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespace:
        meta["namespace"] = namespace
    return meta


def traefik_args(config: GatewayConfig) -> list[str]:
    args = [
        f"--entryPoints.web.address=:{HTTP_PORT}",
        f"--entryPoints.websecure.address=:{HTTPS_PORT}",
        # TLS only: the NGINX provider's plain-HTTP (redirect) routers then stay on `web`.
        "--entryPoints.websecure.http.tls=true",
        f"--entryPoints.traefik.address=:{ADMIN_PORT}",
        "--ping=true",
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        f"--log.level={config.log_level}",
        "--providers.kubernetesgateway=true",
        "--providers.kubernetesingressnginx=true",
        f"--providers.kubernetesingressnginx.ingressClass={NGINX_CLASS}",
        f"--providers.kubernetesingressnginx.controllerClass={NGINX_CONTROLLER}",
    ]
    if config.watched_namespaces is not None:
        args += [f"--providers.kubernetesgateway.namespaces={','.join(config.watched_namespaces)}",
                 f"--providers.kubernetesingressnginx.watchNamespaceSelector={WATCHED_LABEL}={WATCHED_VALUE}"]
    for entry_point in ("web", "websecure"):
        prefix = f"--entryPoints.{entry_point}.transport.respondingTimeouts"
        args += [f"{prefix}.readTimeout=0s", f"{prefix}.writeTimeout=0s", f"{prefix}.idleTimeout=3600s"]
    if config.ingress_address:
        args += [f"--providers.kubernetesgateway.statusAddress.ip={config.ingress_address}",
                 f"--providers.kubernetesingressnginx.publishStatusAddress={config.ingress_address}"]
    else:
        args += [f"--providers.kubernetesgateway.statusAddress.service.name={NAME}",
                 f"--providers.kubernetesgateway.statusAddress.service.namespace={NAMESPACE}",
                 f"--providers.kubernetesingressnginx.publishService={NAMESPACE}/{NAME}"]
    return args


_READ = ["get", "list", "watch"]


def cluster_scoped_rules() -> list[dict[str, Any]]:
    """What Traefik's providers read and write outside any namespace (informers of v3.6.12)."""
    return [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": _READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingressclasses"], "verbs": _READ},
        {"apiGroups": [GATEWAY_API_GROUP], "resources": ["gatewayclasses"], "verbs": _READ},
        {"apiGroups": [GATEWAY_API_GROUP], "resources": ["gatewayclasses/status"], "verbs": ["update"]},
    ]


def namespace_rules() -> list[dict[str, Any]]:
    """What Traefik's providers read and write in each namespace they serve."""
    return [
        {"apiGroups": [""], "resources": ["services", "secrets", "configmaps"], "verbs": _READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": _READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": _READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["update"]},
        {"apiGroups": [GATEWAY_API_GROUP],
         "resources": ["gateways", "httproutes", "grpcroutes", "referencegrants", "backendtlspolicies"],
         "verbs": _READ},
        {"apiGroups": [GATEWAY_API_GROUP],
         "resources": ["gateways/status", "httproutes/status", "grpcroutes/status", "backendtlspolicies/status"],
         "verbs": ["update"]},
    ]


def cluster_role_rules() -> list[dict[str, Any]]:
    """Every rule, cluster-wide: only for a cluster whose jobs may be in any namespace."""
    return cluster_scoped_rules() + namespace_rules()


def rbac(config: GatewayConfig) -> list[dict[str, Any]]:
    """Traefik's ClusterRole (cluster-scoped kinds; everything when it serves every namespace),
    and a Role in each namespace it serves."""
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "iflearner-traefik"}
    watched = config.watched_namespaces
    objects: list[dict[str, Any]] = [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": _meta("iflearner-traefik", None),
         "rules": cluster_role_rules() if watched is None else cluster_scoped_rules()},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta("iflearner-traefik", None), "roleRef": role_ref, "subjects": subject},
    ]
    for namespace in watched or ():
        objects += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": _meta("iflearner-traefik", namespace), "rules": namespace_rules()},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": _meta("iflearner-traefik", namespace),
             "roleRef": {**role_ref, "kind": "Role"}, "subjects": subject},
        ]
    return objects


def traefik(config: GatewayConfig) -> list[dict[str, Any]]:
    """Namespace, RBAC, Deployment and Service of the gateway."""
    namespace_meta = _meta(NAMESPACE, None)
    namespace_meta["labels"][WATCHED_LABEL] = WATCHED_VALUE  # its own Service and default certificate
    container = {
        "name": NAME,
        "image": config.image,
        "args": traefik_args(config),
        "ports": [{"name": "web", "containerPort": HTTP_PORT}, {"name": "websecure", "containerPort": HTTPS_PORT},
                  {"name": "admin", "containerPort": ADMIN_PORT}],
        "readinessProbe": {"httpGet": {"path": "/ping", "port": "admin"}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/ping", "port": "admin"}, "periodSeconds": 10,
                          "failureThreshold": 6},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    https: dict[str, Any] = {"name": "websecure", "port": 443, "targetPort": "websecure", "protocol": "TCP"}
    ports = [{"name": "web", "port": 80, "targetPort": "web", "protocol": "TCP"}, https]
    if config.https_node_port:
        if config.service_type != "ClusterIP":
            https["nodePort"] = config.https_node_port
        # The same port on the Service's own address: where job hosts resolve
        # to the ClusterIP (inside the cluster), `host:30031` works as on a node.
        ports.append({"name": "websecure-compat", "port": config.https_node_port, "targetPort": "websecure",
                      "protocol": "TCP"})
    service_spec: dict[str, Any] = {"type": config.service_type, "selector": dict(LABELS), "ports": ports}
    if config.cluster_ip:
        service_spec["clusterIP"] = config.cluster_ip
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": namespace_meta},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME)},
        *rbac(config),
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME), "spec": {
            "replicas": config.replicas,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {"metadata": {"labels": dict(LABELS)}, "spec": {
                "serviceAccountName": NAME,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
            }},
        }},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(NAME), "spec": service_spec},
    ]


def classes(config: GatewayConfig) -> list[dict[str, Any]]:
    """The GatewayClass jobs' Gateways name and the IngressClass the original Ingresses name."""
    return [
        {"apiVersion": GATEWAY_API_VERSION, "kind": "GatewayClass", "metadata": _meta(config.gateway_class_name, None),
         "spec": {"controllerName": CONTROLLER_NAME,
                  "description": "iflearner-operator's gateway (Traefik)"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": _meta(NGINX_CLASS, None),
         "spec": {"controller": NGINX_CONTROLLER}},
    ]


def shared_gateway(config: GatewayConfig) -> dict[str, Any]:
    """The cluster's Gateway: the catch-all TLS listener on the jobs' entry point.

    It accepts GRPCRoutes from every namespace. Jobs attach their own listener
    (host and certificate) as a Gateway of the same class rather than a
    ListenerSet here, which Traefik v3.6 does not implement (see
    iflearner.desired); this Gateway is where they would attach once it does.
    """
    listener = {
        "name": "https", "port": HTTPS_PORT, "protocol": "HTTPS",
        "tls": {"mode": "Terminate", "certificateRefs": [{"group": "", "kind": "Secret",
                                                          "name": DEFAULT_CERT_SECRET}]},
        "allowedRoutes": {"namespaces": {"from": "All"}, "kinds": [{"group": GATEWAY_API_GROUP, "kind": "GRPCRoute"}]},
    }
    return {"apiVersion": GATEWAY_API_VERSION, "kind": "Gateway", "metadata": _meta(SHARED_GATEWAY),
            "spec": {"gatewayClassName": config.gateway_class_name, "listeners": [listener]}}
