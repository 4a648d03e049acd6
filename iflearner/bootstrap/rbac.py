"""The operator's permissions: which namespaces it may act in, and the RBAC
objects that grant exactly what the controller and its job stacks call.

Pure, so tests and ``manifests/rbac/`` read the RBAC without a cluster
(``python -m iflearner.bootstrap.rbac [NAMESPACE...|'*']`` prints it).

By default the operator is confined to the job namespaces the bootstrap
config lists (``iflearner:jobNamespaces``, default ``[default]``): a Role and
RoleBinding in each. Outside them it holds only what the code reads by name:

- operator namespace: ``get`` on the CA Secret (the operator's signer reads
  it) and the trust ConfigMap (client stacks read it with ``ConfigMap.get``), and the leader
  Lease (``create`` cannot be restricted by name in RBAC; ``get``/``update``
  are). The settings ConfigMap and the passphrase Secret reach the Pod as a
  volume and an environment variable (the kubelet reads them, not the
  ServiceAccount), so no grant names them.
- DNS namespace (kube-system): ``get``/``patch`` on the one DNS records
  ConfigMap by name (each job stack server-side-applies its own keys;
  ``up --refresh``, which the controller runs after a failed update, reads
  it). While it awaits that patch,
  the provider also tries to list/watch the namespace's Events (only to
  report warnings): refused on purpose, the patch succeeds without them, and
  kube-system's Events are none of the operator's business.
- discovery and OpenAPI (``/api``, ``/apis``, ``/openapi/*``, ``/version``),
  which the controller and the Kubernetes provider read, come from the
  built-in ``system:discovery`` role every authenticated user has.

Only ``iflearner:jobNamespaces: ["*"]`` binds the job rules cluster-wide.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from iflearner.desired import BOOTSTRAP_DNS_RECORD_SHARDS, ClusterSettings, dns_configmap_names

NAME = "iflearner-operator"
JOBS_ROLE = f"{NAME}-jobs"
DNS_ROLE = f"{NAME}-dns"
LEASE_NAME = "iflearner-operator-leader"
ALL_NAMESPACES = "*"
DEFAULT_JOB_NAMESPACES: tuple[str, ...] = ("default",)
CONFIG_KEY = "iflearner:jobNamespaces"
# The job stacks' provider uses server-side apply: creates and updates are
# PATCH requests (the API server also checks `create` when an apply creates
# the object), so `update` is never needed.
WORKLOAD_VERBS = ["get", "list", "watch", "create", "patch", "delete"]
RBAC_API = "rbac.authorization.k8s.io/v1"
# A namespace name is a DNS label (RFC 1123): what the API server accepts.
_NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_EXAMPLE = f"e.g. {CONFIG_KEY}: [default, ml-jobs] in the stack file"


class JobNamespacesError(ValueError):
    """``iflearner:jobNamespaces`` is wrong; the message says what to fix."""


def is_cluster_wide(job_namespaces: Sequence[str]) -> bool:
    return tuple(job_namespaces) == (ALL_NAMESPACES,)


def parse_job_namespaces(raw: str | None) -> tuple[str, ...]:
    """The config value as Pulumi stores it (JSON for a list; None when unset)."""
    if raw is None:
        return DEFAULT_JOB_NAMESPACES
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a plain string: `pulumi config set iflearner:jobNamespaces default`
    if not isinstance(value, list):
        raise JobNamespacesError(
            f"{CONFIG_KEY} must be a list of namespaces, got {value!r}: {_EXAMPLE}, or "
            f"`pulumi config set --path '{CONFIG_KEY}[0]' default`; [\"*\"] for every namespace")
    if not all(isinstance(item, str) for item in value):
        raise JobNamespacesError(f"{CONFIG_KEY} must list namespace names as strings, got {value!r}: {_EXAMPLE}")
    return tuple(value)


def validate_job_namespaces(job_namespaces: Sequence[str], settings: ClusterSettings) -> tuple[str, ...]:
    """The namespaces, duplicates removed; refuses lists that cannot be meant."""
    names = tuple(dict.fromkeys(job_namespaces))
    if not names:
        raise JobNamespacesError(
            f"{CONFIG_KEY} is empty: the operator would be allowed to run jobs nowhere; list the namespaces "
            f"where IflearnerJobs are created ({_EXAMPLE}), or [\"*\"] for every namespace")
    if ALL_NAMESPACES in names:
        if len(names) > 1:
            raise JobNamespacesError(
                f"{CONFIG_KEY} mixes \"*\" (every namespace) with names {list(n for n in names if n != '*')}: "
                "use either [\"*\"] or only names")
        return names
    for name in names:
        if not _NAMESPACE_RE.fullmatch(name):
            raise JobNamespacesError(
                f"{CONFIG_KEY}: {name!r} is not a namespace name: use at most 63 lowercase letters, digits "
                "and '-', starting and ending with a letter or digit")
    # Jobs there would give the operator every Secret of these namespaces:
    # the state passphrase and backend credentials, or the cluster's own.
    for name, what in ((settings.operator_namespace, "the operator's own namespace (its state passphrase and "
                                                      "backend credentials are Secrets there)"),
                       (settings.dns_namespace, "the cluster DNS namespace (the operator may only patch the "
                                                "DNS records ConfigMaps there)")):
        if name in names:
            raise JobNamespacesError(
                f"{CONFIG_KEY} lists {name}, {what}: jobs there would give the operator every Secret in it; "
                "create jobs in another namespace and list that one")
    return names


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": NAME}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def job_namespace_rules() -> list[dict[str, Any]]:
    """What the controller and the job stacks do in a job namespace.

    The controller's own calls (iflearner/controller: informers, reconciler,
    events), exactly: iflearnerjobs get/list/watch (its cache) and patch (the
    finalizer); iflearnerjobs/status patch (conditions and phase); Events
    create. No ownerReferences are set, so iflearnerjobs/finalizers is not
    needed (add ``update`` on it if they ever are, for clusters that enforce
    owner references).

    The job stacks' objects (Pods, Services, ConfigMaps, Secrets, Ingresses,
    Gateways, GRPCRoutes): get (refresh), create and patch (server-side
    apply), delete and list/watch (a replaced Pod's deletion is awaited); the
    controller lists and watches them for repair and the job's Ready
    condition. The provider also lists and watches Events of the objects it
    awaits, to report their warnings. The RBAC test reads the API server's
    audit log of a job's whole life to check this list against the calls.
    """
    return [
        {"apiGroups": ["git.iflytek.com"], "resources": ["iflearnerjobs"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["git.iflytek.com"], "resources": ["iflearnerjobs/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "secrets"], "verbs": list(WORKLOAD_VERBS)},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": list(WORKLOAD_VERBS)},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gateways", "grpcroutes"],
         "verbs": list(WORKLOAD_VERBS)},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list", "watch"]},
    ]


def operator_namespace_rules(settings: ClusterSettings) -> list[dict[str, Any]]:
    return [
        # list/watch by name (fieldSelector metadata.name): the controller
        # re-applies every job when the CA or the trust bundle changes.
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [settings.ca_secret_name],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [settings.trust_configmap_name],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [LEASE_NAME],
         "verbs": ["get", "update"]},
    ]


def dns_namespace_rules(settings: ClusterSettings) -> list[dict[str, Any]]:
    # patch: job stacks' record patches; list/watch by name (fieldSelector metadata.name): the
    # controller repairs a job's record removed or changed by hand (controller/dnsrecords.py).
    return [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": list(dns_configmap_names(settings)),
             "verbs": ["get", "list", "watch", "patch"]}]


def _bound(kind: str, name: str, namespace: str | None, rules: list[dict[str, Any]],
           subjects: list[dict[str, str]]) -> list[dict[str, Any]]:
    """A Role (or ClusterRole) and its binding of the same name."""
    binding = "RoleBinding" if kind == "Role" else "ClusterRoleBinding"
    return [
        {"apiVersion": RBAC_API, "kind": kind, "metadata": _meta(name, namespace), "rules": rules},
        {"apiVersion": RBAC_API, "kind": binding, "metadata": _meta(name, namespace),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}, "subjects": subjects},
    ]


def rbac(settings: ClusterSettings, job_namespaces: Sequence[str] = DEFAULT_JOB_NAMESPACES,
         service_account_annotations: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """ServiceAccount, Roles and bindings; job rules per listed namespace, or cluster-wide for ["*"]."""
    names = validate_job_namespaces(job_namespaces, settings)
    ns = settings.operator_namespace
    subjects = [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]
    account = _meta(NAME, ns)
    if service_account_annotations:
        account["annotations"] = dict(service_account_annotations)
    if is_cluster_wide(names):
        jobs = _bound("ClusterRole", JOBS_ROLE, None, job_namespace_rules(), subjects)
    else:
        jobs = [obj for namespace in names
                for obj in _bound("Role", JOBS_ROLE, namespace, job_namespace_rules(), subjects)]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": account},
        *jobs,
        *_bound("Role", NAME, ns, operator_namespace_rules(settings), subjects),
        *_bound("Role", DNS_ROLE, settings.dns_namespace, dns_namespace_rules(settings), subjects),
    ]


def render_yaml(settings: ClusterSettings, job_namespaces: Sequence[str]) -> str:
    """The RBAC as one multi-document YAML file, as kept in ``manifests/rbac/``."""
    import yaml

    settings_ns, dns_ns = settings.operator_namespace, settings.dns_namespace
    if is_cluster_wide(job_namespaces):
        scope = ("EVERY namespace (iflearner:jobNamespaces: [\"*\"]): the ClusterRole below lets it read and "
                 f"write every Secret,\n# ConfigMap, Pod and Service of the cluster, {dns_ns} and {settings_ns} "
                 "included")
    else:
        scope = f"only {', '.join(job_namespaces)} (iflearner:jobNamespaces)"
    header = (
        f"# The iflearner-operator ServiceAccount and its RBAC. Jobs run in {scope}.\n"
        f"# Elsewhere: get on Secret {settings.ca_secret_name} and ConfigMap {settings.trust_configmap_name}, "
        f"the leader Lease ({settings_ns});\n"
        f"# get/list/watch/patch on the DNS records ConfigMaps {', '.join(dns_configmap_names(settings))} ({dns_ns}).\n"
        "# Nothing else. Why each rule exists: "
        "iflearner/bootstrap/rbac.py.\n"
        "# Generated by `python -m iflearner.bootstrap.rbac "
        f"{' '.join(repr(n) if n == ALL_NAMESPACES else n for n in job_namespaces)}`"
        " (the bootstrap applies the same objects); do not edit.\n")
    return header + "---\n".join(yaml.safe_dump(obj, sort_keys=False) for obj in rbac(settings, job_namespaces))


def main(argv: list[str] | None = None) -> int:
    namespaces = tuple(sys.argv[1:] if argv is None else argv) or DEFAULT_JOB_NAMESPACES
    try:
        sys.stdout.write(render_yaml(ClusterSettings(dns_record_shards=BOOTSTRAP_DNS_RECORD_SHARDS), namespaces))
    except JobNamespacesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
