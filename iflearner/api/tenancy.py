"""Whoever may create an IflearnerJob gets a federated-learning job and nothing more.

Pure decisions over a parsed job and the cluster's policy (the bootstrap's
``podSecurity``, ``jobServiceAccounts``, ``jobDomains`` and peer networks):
which Pod it may ask for, which hosts it may hold a certificate, a route and
DNS answers for, and which addresses its peer records may point at. The
reconciler refuses a job that breaks them before any run (``Stalled`` with
one of the reasons below); nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from iflearner.api.podsecurity import Level, violations
from iflearner.job import IflearnerJob, Problem, is_host_name

REASON_POD_SECURITY = "PodSecurity"
REASON_SERVICE_ACCOUNT = "ServiceAccountNotAllowed"
REASON_HOST_NOT_ALLOWED = "HostNotAllowed"
REASON_PEER_ADDRESS = "PeerAddressNotAllowed"
REASON_HOST_CONFLICT = "HostConflict"
REASON_RECORD_LIMIT = "DnsRecordLimit"
REASONS = (REASON_POD_SECURITY, REASON_SERVICE_ACCOUNT, REASON_HOST_NOT_ALLOWED, REASON_PEER_ADDRESS,
           REASON_HOST_CONFLICT, REASON_RECORD_LIMIT)
# DNS records (hosts and peer hosts) the jobs of one namespace may publish: at most ~650 bytes
# each, so a namespace at its ceiling holds ~170 KB of a records shard's 1 MiB.
DEFAULT_RECORDS_PER_NAMESPACE = 256
DEFAULT_SERVICE_ACCOUNT = "default"
# Never a peer's ingress: this host, the link-local metadata endpoints, nothing, multicast, reserved.
ALWAYS_REFUSED_NETWORKS = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4")


def parse_networks(setting: str, values: Iterable[object]) -> tuple[ipaddress.IPv4Network, ...]:
    """IPv4 networks of a setting, or a ValueError naming the setting and the bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.IPv4Network(str(value)))
        except ValueError as error:
            raise ValueError(f"{setting}: {value!r} is not an IPv4 network such as '10.96.0.0/12' ({error})") from None
    return tuple(networks)


ALWAYS_REFUSED_NETWORKS_PARSED = parse_networks("refused peer networks", ALWAYS_REFUSED_NETWORKS)


def check_domain(value: object) -> str:
    if not is_host_name(value):
        raise ValueError(f"jobDomains: {value!r} must be a lowercase DNS name with a dot, e.g. 'a.party.iflearner.com'")
    return str(value)


@dataclass(frozen=True)
class TenancyPolicy:
    """What a job may ask for in this cluster."""

    pod_security: Level = Level.BASELINE
    service_accounts: tuple[str, ...] = (DEFAULT_SERVICE_ACCOUNT,)
    # Hosts (and peer hosts) must lie under one of these; empty: any host, as clusters
    # bootstrapped before job domains existed.
    domains: tuple[str, ...] = ()
    # Refused as peer addresses besides ALWAYS_REFUSED_NETWORKS: the cluster's Service and Pod ranges.
    refused_peer_networks: tuple[ipaddress.IPv4Network, ...] = ()
    # Allowed although refused above (the local multi-cluster setups' gateway addresses).
    allowed_peer_networks: tuple[ipaddress.IPv4Network, ...] = ()
    records_per_namespace: int = DEFAULT_RECORDS_PER_NAMESPACE


@dataclass(frozen=True)
class Refusal:
    """Why a job may not run: the reason of its Stalled condition, and every field at fault."""

    reason: str
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class HostClaim:
    """The names a job makes the cluster answer for (its host and its peers' hosts), and who it is."""

    namespace: str
    name: str
    created: str  # metadata.creationTimestamp (RFC 3339: sorts as time)
    hosts: frozenset[str]

    @property
    def order(self) -> tuple[str, str, str]:
        return (self.created, self.namespace, self.name)


def under_domains(host: str, domains: Iterable[str]) -> bool:
    return any(host == d or host.endswith(f".{d}") for d in domains)


def pod_problems(job: IflearnerJob, policy: TenancyPolicy) -> tuple[Problem, ...]:
    return violations(job.template, policy.pod_security)


def service_account_problems(job: IflearnerJob, policy: TenancyPolicy) -> tuple[Problem, ...]:
    spec = job.template.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    problems = []
    for key in ("serviceAccountName", "serviceAccount"):  # the second: the deprecated alias
        account = spec.get(key)
        if account not in (None, "") and account not in policy.service_accounts:
            problems.append(Problem(f"spec.template.spec.{key}", (
                f"{account!r} is not allowed for jobs in this cluster; use one of "
                f"{', '.join(repr(a) for a in policy.service_accounts)} or leave it out "
                "(the bootstrap's iflearner:jobServiceAccounts lists the allowed ones)")))
    return tuple(problems)


def host_problems(job: IflearnerJob, policy: TenancyPolicy) -> tuple[Problem, ...]:
    if not policy.domains:
        return ()
    allowed = ", ".join(policy.domains)
    named = [("spec.host", job.host)] + [(f"spec.peers[{i}].host", p.host) for i, p in enumerate(job.peers)]
    return tuple(Problem(field, f"{host!r} is not under this cluster's job domains ({allowed}); use a host "
                                "under one of them (the bootstrap's iflearner:jobDomains)")
                 for field, host in named if not under_domains(host, policy.domains))


def peer_address_problems(job: IflearnerJob, policy: TenancyPolicy) -> tuple[Problem, ...]:
    refused = ALWAYS_REFUSED_NETWORKS_PARSED + policy.refused_peer_networks
    problems = []
    for index, peer in enumerate(job.peers):
        address = ipaddress.IPv4Address(peer.address)
        if any(address in n for n in policy.allowed_peer_networks):
            continue
        network = next((n for n in refused if address in n), None)
        if network is not None:
            problems.append(Problem(f"spec.peers[{index}].address", (
                f"{peer.address} is in {network}, which a peer record may not point at (this machine, "
                "link-local, or the cluster's own Service and Pod ranges); use the peer's ingress address")))
    return tuple(problems)


def claim_of(job: Mapping[str, Any]) -> HostClaim | None:
    """A cached job's claim, read without validating it (a job that does not parse still claims)."""
    metadata = job.get("metadata") if isinstance(job.get("metadata"), Mapping) else None
    spec = job.get("spec") if isinstance(job.get("spec"), Mapping) else None
    if metadata is None or spec is None:
        return None
    hosts = {spec.get("host")}
    peers = spec.get("peers")
    for peer in peers if isinstance(peers, list) else []:
        if isinstance(peer, Mapping):
            hosts.add(peer.get("host"))
    return HostClaim(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""),
                     str(metadata.get("creationTimestamp") or ""),
                     frozenset(h for h in hosts if isinstance(h, str) and h))


def host_conflicts(job: IflearnerJob, created: str, others: Iterable[HostClaim]) -> tuple[Problem, ...]:
    """Hosts of ``job`` held by an older job of another namespace (the oldest claim holds a host;
    jobs of one namespace may share one, as iflearner-flow's server and client jobs do)."""
    mine = HostClaim(job.namespace, job.name, created, frozenset())
    holders: dict[str, HostClaim] = {}
    for other in others:
        if other.namespace == job.namespace or other.order >= mine.order:
            continue
        for host in other.hosts:
            if host not in holders or other.order < holders[host].order:
                holders[host] = other
    named = [("spec.host", job.host)] + [(f"spec.peers[{i}].host", p.host) for i, p in enumerate(job.peers)]
    return tuple(Problem(field, (f"{host!r} is held by job {holders[host].namespace}/{holders[host].name}; a host "
                                 "belongs to the namespace whose job claimed it first: choose another host"))
                 for field, host in named if host in holders)


def record_limit_problems(job: IflearnerJob, created: str, claims: Iterable[HostClaim],
                          limit: int) -> tuple[Problem, ...]:
    """The job's records past its namespace's ceiling, counting the distinct hosts of the
    namespace's jobs in the order they were created (the newest job is the one refused)."""
    mine = HostClaim(job.namespace, job.name, created, frozenset({job.host, *(p.host for p in job.peers)}))
    earlier = sorted((c for c in claims if c.namespace == job.namespace and c.order < mine.order),
                     key=lambda c: c.order)
    published = set().union(*(c.hosts for c in earlier)) if earlier else set()
    total = len(published | mine.hosts)
    if total <= limit:
        return ()
    return (Problem("spec.peers", (
        f"the jobs of namespace {job.namespace} would publish {total} DNS records, over its limit of {limit} "
        "(the bootstrap's iflearner:dnsRecordsPerNamespace): remove peers, or delete jobs that no longer run")),)


def refusal(job: IflearnerJob, policy: TenancyPolicy, created: str = "",
            others: Iterable[HostClaim] = ()) -> Refusal | None:
    """The first policy the job breaks (with every field at fault under it), or None."""
    checks = ((REASON_POD_SECURITY, lambda: pod_problems(job, policy)),
              (REASON_SERVICE_ACCOUNT, lambda: service_account_problems(job, policy)),
              (REASON_HOST_NOT_ALLOWED, lambda: host_problems(job, policy)),
              (REASON_PEER_ADDRESS, lambda: peer_address_problems(job, policy)),
              (REASON_HOST_CONFLICT, lambda: host_conflicts(job, created, others)),
              (REASON_RECORD_LIMIT, lambda: record_limit_problems(job, created, others,
                                                                  policy.records_per_namespace)))
    for reason, check in checks:
        problems = check()
        if problems:
            return Refusal(reason, problems)
    return None
