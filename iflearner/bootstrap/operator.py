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
  Gateways and GRPCRoutes the same (jobs on the gateway transport), whose
  status the controller reads for the job's Ready condition.
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

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from iflearner.desired import ClusterSettings
from iflearner.operator_record import PASSPHRASE_SECRET, SETTINGS_CONFIGMAP

NAME = "iflearner-operator"
LEASE_NAME = "iflearner-operator-leader"
METRICS_PORT = 8080
HEALTH_PORT = 8081
STATE_MOUNT = "/var/lib/iflearner-operator/state"
# Writable paths of the read-only image, on the `tmp` emptyDir: Pulumi's home
# (the CLI writes workspace files there; the providers stay in the image) and
# the stacks' work directories (they hold nothing the backend does not).
WRITABLE_PULUMI_HOME = "/tmp/pulumi-home"
WORK_DIR = "/tmp/iflearner"
BACKEND_URL_KEY = "IFLEARNER_BACKEND_URL"
# The embedded default: a file:// backend on the state PersistentVolumeClaim.
DEFAULT_BACKEND_URL = f"file://{STATE_MOUNT}"
WORKLOAD_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


class OperatorConfigError(ValueError):
    """A bootstrap setting of the operator is wrong; the message says what to fix."""


@dataclass(frozen=True)
class OperatorConfig:
    image: str = "ghcr.io/iflytek/iflearner-operator:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    replicas: int = 1
    workers: int = 4
    backend_url: str | None = None  # None: a file:// backend on the state PersistentVolumeClaim
    # A Secret whose keys become the operator's environment: backend
    # credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...) or the whole
    # backend URL (IFLEARNER_BACKEND_URL) when it holds a password.
    backend_secret: str | None = None
    # For workload identity (e.g. eks.amazonaws.com/role-arn) instead of keys.
    service_account_annotations: dict[str, str] = field(default_factory=dict)
    state_storage: str = "1Gi"
    state_storage_class: str | None = None
    # A single-node cluster without a provisioner (the local real node): a
    # hostPath PersistentVolume bound to the state claim. The directory must
    # exist and be writable by uid 65532 (hostPath volumes ignore fsGroup).
    state_host_path: str | None = None
    passphrase_secret: str = PASSPHRASE_SECRET
    job_namespaces: tuple[str, ...] = ()  # empty: jobs in every namespace

    def validate(self) -> None:
        """Refuse settings that cannot work, saying what to set instead."""
        if self.replicas < 0:
            raise OperatorConfigError(f"iflearner:operatorReplicas must be 0 or more, got {self.replicas}")
        if self.backend_url and urllib.parse.urlsplit(self.backend_url).password is not None:
            raise OperatorConfigError(
                "iflearner:stateBackendUrl holds a password, which would be readable by anyone who can read "
                f"Deployments: put the URL in a Secret under the key {BACKEND_URL_KEY}, name it in "
                "iflearner:stateBackendSecret, and remove iflearner:stateBackendUrl")
        shared = bool(self.backend_secret) or bool(self.backend_url and not self.backend_url.startswith("file://"))
        if self.replicas > 1 and not shared:
            raise OperatorConfigError(
                f"iflearner:operatorReplicas is {self.replicas}, but the state backend is a file:// directory on "
                "a ReadWriteOnce volume that only one node can mount: a hot standby needs a shared backend "
                "(set iflearner:stateBackendUrl to s3://, gs://, azblob:// or postgres://), or use 1 replica")


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
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gateways", "grpcroutes"],
         "verbs": WORKLOAD_VERBS},
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


def rbac(settings: ClusterSettings, job_namespaces: tuple[str, ...] = (),
         service_account_annotations: dict[str, str] | None = None) -> list[dict[str, Any]]:
    ns = settings.operator_namespace
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]
    account = _meta(NAME, ns)
    if service_account_annotations:
        account["annotations"] = dict(service_account_annotations)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": account},
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
    config.validate()
    ns = settings.operator_namespace
    labels = {"app.kubernetes.io/name": NAME}
    file_backend = config.backend_url is None and config.backend_secret is None
    # A backend from the Secret comes in as IFLEARNER_BACKEND_URL, never as an argument.
    backend = [f"--backend-url={config.backend_url or DEFAULT_BACKEND_URL}"] \
        if config.backend_url or file_backend else []
    args = ["run", f"--workers={config.workers}", *backend, "--leader-elect",
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
    if file_backend:
        claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                                 "resources": {"requests": {"storage": config.state_storage}}}
        if config.state_storage_class:
            claim["storageClassName"] = config.state_storage_class
        if config.state_host_path:
            claim["storageClassName"] = ""
            claim["volumeName"] = f"{NAME}-state-{ns}"
            objects.append({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": _meta(claim["volumeName"]),
                            "spec": {"capacity": {"storage": config.state_storage}, "accessModes": ["ReadWriteOnce"],
                                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                                     "claimRef": {"namespace": ns, "name": f"{NAME}-state"},
                                     "hostPath": {"path": config.state_host_path, "type": "Directory"}}})
        objects.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(f"{NAME}-state", ns),
                        "spec": claim})
        volumes.append({"name": "state", "persistentVolumeClaim": {"claimName": f"{NAME}-state"}})
        mounts.append({"name": "state", "mountPath": STATE_MOUNT})
    container: dict[str, Any] = {
        "name": "operator",
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": args,
        "env": [{"name": "PULUMI_CONFIG_PASSPHRASE", "valueFrom": {"secretKeyRef": {
                    "name": config.passphrase_secret, "key": "passphrase"}}},
                {"name": "IFLEARNER_PULUMI_HOME", "value": WRITABLE_PULUMI_HOME},
                {"name": "IFLEARNER_STATE_DIR", "value": WORK_DIR}],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT},
                  {"name": "health", "containerPort": HEALTH_PORT}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 20},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "health"}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    if config.backend_secret:
        container["envFrom"] = [{"secretRef": {"name": config.backend_secret}}]
    objects += [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME, ns), "spec": {
            "replicas": config.replicas,
            # Leader election makes a second replica a hot standby.
            "strategy": {"type": "Recreate"} if file_backend else {"type": "RollingUpdate"},
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
