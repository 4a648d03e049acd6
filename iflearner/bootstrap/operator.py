"""The operator's in-cluster objects as plain manifests: ServiceAccount, RBAC
derived from the calls the controller and its job stacks make, Deployment and
metrics Service. Pure, so tests read the RBAC without a cluster.

Why each rule exists:
- iflearnerjobs get/list/watch: the controller's informer; patch/update: the
  finalizer; iflearnerjobs/status: conditions and phase;
  iflearnerjobs/finalizers update: clusters that enforce owner references.
- pods, services, configmaps, secrets and ingresses in any namespace, full
  lifecycle: job stacks create, update and delete them (jobs live in any
  namespace); list/watch: the controller's owned-object caches for repair.
- events create/patch: Events for what a person must act on.
- kube-system ConfigMap iflearner-dns-records, get/patch only (by name): each
  job stack server-side-applies its own keys.
- the CA Secret and trust ConfigMap, get only (by name): job stacks sign
  certificates and copy the trust bundle.
- leases in the operator namespace: leader election (create cannot be
  restricted by name in RBAC; get/update are).
No wildcard appears anywhere. With ``job_namespaces`` set, the workload rules
are bound per namespace (RoleBindings of the ClusterRole) instead of
cluster-wide, so the operator cannot read a Secret outside those namespaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iflearner.desired import ClusterSettings
from iflearner.operator_record import PASSPHRASE_SECRET, SETTINGS_CONFIGMAP

NAME = "iflearner-operator"
LEASE_NAME = "iflearner-operator-leader"
METRICS_PORT = 8080
HEALTH_PORT = 8081
STATE_MOUNT = "/var/lib/iflearner-operator/state"
# The embedded default: a file:// backend on the state PersistentVolumeClaim.
DEFAULT_BACKEND_URL = f"file://{STATE_MOUNT}"
WORKLOAD_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


@dataclass(frozen=True)
class OperatorConfig:
    image: str = "ghcr.io/iflytek/iflearner-operator:0.1.0"
    replicas: int = 1
    workers: int = 4
    backend_url: str | None = None  # None: a file:// backend on the state PersistentVolumeClaim
    state_storage: str = "1Gi"
    passphrase_secret: str = PASSPHRASE_SECRET
    job_namespaces: tuple[str, ...] = ()  # empty: jobs in every namespace


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": NAME}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def cluster_role_rules() -> list[dict[str, Any]]:
    return [
        {"apiGroups": ["git.iflytek.com"], "resources": ["iflearnerjobs"],
         "verbs": ["get", "list", "watch", "patch", "update"]},
        {"apiGroups": ["git.iflytek.com"], "resources": ["iflearnerjobs/status"], "verbs": ["get", "patch", "update"]},
        {"apiGroups": ["git.iflytek.com"], "resources": ["iflearnerjobs/finalizers"], "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "secrets"], "verbs": WORKLOAD_VERBS},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": WORKLOAD_VERBS},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    ]


def _workload_bindings(subject: list[dict[str, str]], job_namespaces: tuple[str, ...]) -> list[dict[str, Any]]:
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}
    if not job_namespaces:
        return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": _meta(NAME),
                 "roleRef": role_ref, "subjects": subject}]
    return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": _meta(f"{NAME}-jobs", namespace), "roleRef": role_ref, "subjects": subject}
            for namespace in job_namespaces]


def rbac(settings: ClusterSettings, job_namespaces: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    ns = settings.operator_namespace
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, ns)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(NAME),
         "rules": cluster_role_rules()},
        *_workload_bindings(subject, job_namespaces),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(NAME, ns), "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [settings.ca_secret_name],
             "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [settings.trust_configmap_name],
             "verbs": ["get"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [LEASE_NAME],
             "verbs": ["get", "update"]},
        ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(NAME, ns),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME}, "subjects": subject},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": _meta(f"{NAME}-dns", settings.dns_namespace), "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [settings.dns_configmap_name],
             "verbs": ["get", "patch"]},
        ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _meta(f"{NAME}-dns", settings.dns_namespace),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{NAME}-dns"},
         "subjects": subject},
    ]


def deployment(settings: ClusterSettings, config: OperatorConfig) -> list[dict[str, Any]]:
    """Deployment, metrics Service and (for the file:// backend) the state volume claim."""
    ns = settings.operator_namespace
    labels = {"app.kubernetes.io/name": NAME}
    backend = config.backend_url or DEFAULT_BACKEND_URL
    args = ["run", f"--workers={config.workers}", f"--backend-url={backend}", "--leader-elect",
            f"--leader-election-namespace={ns}", f"--metrics-address=0.0.0.0:{METRICS_PORT}",
            f"--health-address=0.0.0.0:{HEALTH_PORT}", "--cluster-settings=/etc/iflearner/cluster-settings.yaml"]
    args += [f"--namespace={namespace}" for namespace in config.job_namespaces]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "settings", "configMap": {"name": SETTINGS_CONFIGMAP}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "settings", "mountPath": "/etc/iflearner", "readOnly": True},
    ]
    objects: list[dict[str, Any]] = []
    if config.backend_url is None:
        objects.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(f"{NAME}-state", ns),
                        "spec": {"accessModes": ["ReadWriteOnce"],
                                 "resources": {"requests": {"storage": config.state_storage}}}})
        volumes.append({"name": "state", "persistentVolumeClaim": {"claimName": f"{NAME}-state"}})
        mounts.append({"name": "state", "mountPath": STATE_MOUNT})
    container = {
        "name": "operator",
        "image": config.image,
        "args": args,
        "env": [{"name": "PULUMI_CONFIG_PASSPHRASE", "valueFrom": {"secretKeyRef": {
            "name": config.passphrase_secret, "key": "passphrase"}}}],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT},
                  {"name": "health", "containerPort": HEALTH_PORT}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 20},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "health"}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    objects += [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME, ns), "spec": {
            "replicas": config.replicas,
            # Leader election makes a second replica a hot standby.
            "strategy": {"type": "Recreate"} if config.backend_url is None else {"type": "RollingUpdate"},
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": NAME,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "fsGroup": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
                "volumes": volumes,
            }},
        }},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(f"{NAME}-metrics", ns), "spec": {
            "selector": labels, "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}]}},
    ]
    return objects
