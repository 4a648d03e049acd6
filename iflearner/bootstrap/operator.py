"""The operator's in-cluster objects as plain manifests: Deployment, metrics
Service and state volume. Its ServiceAccount and RBAC are in
:mod:`iflearner.bootstrap.rbac` (re-exported here). Pure, so tests read them
without a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from iflearner.bootstrap.rbac import (  # noqa: F401 - re-exported: callers import the RBAC from here
    DEFAULT_JOB_NAMESPACES,
    LEASE_NAME,
    NAME,
    JobNamespacesError,
    is_cluster_wide,
    job_namespace_rules,
    rbac,
    validate_job_namespaces,
)
from iflearner.desired import ClusterSettings
from iflearner.operator_record import PASSPHRASE_SECRET, SETTINGS_CONFIGMAP, url_credentials
from iflearner.stackrunner import PASSPHRASE_PROVIDER, SecretsProviderError, validate_secrets_provider

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
cluster_role_rules = job_namespace_rules  # the name older callers use


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
    # What encrypts new job stacks' secrets: the passphrase, or a KMS key URL
    # (awskms://alias/...?region=...), whose credentials come from a Secret
    # (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, VAULT_TOKEN, ...) or workload identity.
    secrets_provider: str = PASSPHRASE_PROVIDER
    secrets_provider_secret: str | None = None
    # Where jobs may live, and so where the operator is granted anything
    # beyond its named objects; ("*",) grants the job rules in every namespace.
    job_namespaces: tuple[str, ...] = DEFAULT_JOB_NAMESPACES

    def validate(self, settings: ClusterSettings | None = None) -> None:
        """Refuse settings that cannot work, saying what to set instead."""
        try:
            validate_job_namespaces(self.job_namespaces, settings or ClusterSettings())
        except JobNamespacesError as error:
            raise OperatorConfigError(str(error)) from None
        try:
            validate_secrets_provider(self.secrets_provider)
        except SecretsProviderError as error:
            raise OperatorConfigError(f"iflearner:secretsProvider: {error}") from None
        if self.secrets_provider_secret and self.secrets_provider == PASSPHRASE_PROVIDER:
            raise OperatorConfigError(
                "iflearner:secretsProviderSecret holds a KMS provider's credentials, but iflearner:secretsProvider "
                "is the passphrase: set iflearner:secretsProvider to the key's URL, or remove the Secret's name")
        if self.replicas < 0:
            raise OperatorConfigError(f"iflearner:operatorReplicas must be 0 or more, got {self.replicas}")
        credentials = url_credentials(self.backend_url) if self.backend_url else []
        if credentials:
            raise OperatorConfigError(
                f"iflearner:stateBackendUrl holds a credential ({', '.join(credentials)}), which would be "
                "readable by anyone who can read Deployments or ConfigMaps: put the URL in a Secret under the key "
                f"{BACKEND_URL_KEY}, name it in iflearner:stateBackendSecret, and remove iflearner:stateBackendUrl")
        shared = bool(self.backend_secret) or bool(self.backend_url and not self.backend_url.startswith("file://"))
        if self.replicas > 1 and not shared:
            raise OperatorConfigError(
                f"iflearner:operatorReplicas is {self.replicas}, but the state backend is a file:// directory on "
                "a ReadWriteOnce volume that only one node can mount: a hot standby needs a shared backend "
                "(set iflearner:stateBackendUrl to s3://, gs://, azblob:// or postgres://), or use 1 replica")


SETTINGS_DIGEST = "iflearner.git.iflytek.com/settings-digest"


def settings_digest(settings: ClusterSettings) -> str:
    text = json.dumps(dataclasses.asdict(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": NAME}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def deployment(settings: ClusterSettings, config: OperatorConfig) -> list[dict[str, Any]]:
    """Deployment, metrics Service and (for the file:// backend) the state volume claim."""
    config.validate(settings)
    ns = settings.operator_namespace
    labels = {"app.kubernetes.io/name": NAME}
    file_backend = config.backend_url is None and config.backend_secret is None
    # A backend from the Secret comes in as IFLEARNER_BACKEND_URL, never as an argument.
    backend = [f"--backend-url={config.backend_url or DEFAULT_BACKEND_URL}"] \
        if config.backend_url or file_backend else []
    args = ["run", f"--workers={config.workers}", *backend, "--leader-elect",
            f"--leader-election-namespace={ns}", f"--metrics-address=0.0.0.0:{METRICS_PORT}",
            f"--health-address=0.0.0.0:{HEALTH_PORT}", "--cluster-settings=/etc/iflearner/cluster-settings.yaml"]
    # The controller watches exactly the namespaces it is granted: a
    # cluster-wide list/watch would be refused under namespaced RBAC.
    if config.secrets_provider != PASSPHRASE_PROVIDER:
        args.append(f"--secrets-provider={config.secrets_provider}")
    if not is_cluster_wide(config.job_namespaces):
        args += [f"--namespace={namespace}" for namespace in dict.fromkeys(config.job_namespaces)]
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
    env_secrets = [name for name in (config.backend_secret, config.secrets_provider_secret) if name]
    if env_secrets:
        container["envFrom"] = [{"secretRef": {"name": name}} for name in dict.fromkeys(env_secrets)]
    pod_metadata = {"labels": labels, "annotations": {SETTINGS_DIGEST: settings_digest(settings)}}
    objects += [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME, ns), "spec": {
            "replicas": config.replicas,
            # Leader election makes a second replica a hot standby.
            "strategy": {"type": "Recreate"} if file_backend else {"type": "RollingUpdate"},
            "selector": {"matchLabels": labels},
            # The settings are read at start: a new Pod when they change (a new podSecurity,
            # jobDomains, ... takes effect at once, not at the next restart).
            "template": {"metadata": pod_metadata, "spec": {
                "serviceAccountName": NAME,
                # SIGTERM: in-flight reconciles get --shutdown-grace (25 s), then running
                # Pulumi runs are stopped (SIGTERM, a grace, SIGKILL): more than the default 30 s.
                "terminationGracePeriodSeconds": 40,
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
