"""The bootstrap's tenancy config: what a job author may ask for in this cluster.

``iflearner:podSecurity`` (default ``baseline``), ``iflearner:jobServiceAccounts``
(default ``[default]``), ``iflearner:jobDomains``, ``iflearner:peerDomains``, ``iflearner:refusedPeerNetworks``,
``iflearner:allowedPeerNetworks`` and ``iflearner:dnsRecordsPerNamespace`` (default 256)
become the operator's cluster settings (see :mod:`iflearner.api.tenancy`). The Pod Security level is also enforced by
the API server itself: each job namespace carries the matching
``pod-security.kubernetes.io/enforce`` label, which the operator's own Pod
creations meet too. Pure, so tests read it without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from iflearner.bootstrap.gateway import WATCHED_LABEL, WATCHED_VALUE
from iflearner.bootstrap.rbac import is_cluster_wide

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
ENFORCE_VERSION_LABEL = "pod-security.kubernetes.io/enforce-version"
# Config key -> ClusterSettings field (lists unless noted).
LIST_KEYS = {"jobServiceAccounts": "job_service_accounts", "jobDomains": "job_domains", "peerDomains": "peer_domains",
             "refusedPeerNetworks": "refused_peer_networks", "allowedPeerNetworks": "allowed_peer_networks"}


class TenancyConfigError(ValueError):
    """A tenancy setting is wrong; the message names the key and what to write."""


def tenancy_settings(get: Callable[[str], str | None], get_object: Callable[[str], Any]) -> dict[str, Any]:
    """ClusterSettings fields from the stack config (``pulumi.Config`` ``get`` and ``get_object``)."""
    values: dict[str, Any] = {}
    level = get("podSecurity")
    if level is not None:
        values["pod_security"] = level
    for key, field in LIST_KEYS.items():
        raw = get_object(key)
        if raw is None:
            continue
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise TenancyConfigError(f"iflearner:{key} must be a list of strings, got {raw!r}: e.g. "
                                     f"`pulumi config set --path 'iflearner:{key}[0]' ...`")
        values[field] = tuple(raw)
    records = get("dnsRecordsPerNamespace")
    if records is not None:
        try:
            values["dns_records_per_namespace"] = int(records)
        except ValueError:
            raise TenancyConfigError(f"iflearner:dnsRecordsPerNamespace must be an integer, got {records!r}") from None
    return values


def namespace_labels(level: str) -> dict[str, str]:
    """A job namespace's labels: Pod Security admission's, and the one by which the gateway's
    NGINX provider finds the namespaces it may read (see :mod:`iflearner.bootstrap.gateway`)."""
    return {ENFORCE_LABEL: level, ENFORCE_VERSION_LABEL: "latest", WATCHED_LABEL: WATCHED_VALUE}


def labelled_namespaces(job_namespaces: Sequence[str], operator_namespace: str) -> list[str]:
    """The namespaces the bootstrap labels: the job namespaces it names (every namespace, ``*``,
    is left to the cluster's own policy: the README says how), never the operator's own."""
    if is_cluster_wide(job_namespaces):
        return []
    return [n for n in job_namespaces if n != operator_namespace]
