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


def check_domain(value: object, setting: str = "jobDomains") -> str:
    if not is_host_name(value):
        raise ValueError(f"{setting}: {value!r} must be a lowercase DNS name with a dot, e.g. 'a.party.iflearner.com'")
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
    # Peer hosts may also lie under these (other clusters' domains): never this cluster's certificates.
    peer_domains: tuple[str, ...] = ()
    ingress_address: str | None = None  # where this cluster's job hosts resolve (their own records)


@dataclass(frozen=True)
class Refusal:
    """Why a job may not run: the reason of its Stalled condition, and every field at fault."""

    reason: str
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class HostClaim:
    """What an applied job of the cluster serves and publishes, as its status records it: the
    host it holds a certificate and a listener for, and its DNS records (host -> address)."""

    namespace: str
    name: str
    created: str  # metadata.creationTimestamp (RFC 3339: sorts as time)
    serves: str | None
    records: Mapping[str, str]

    @property
    def order(self) -> tuple[str, str, str]:
        return (self.created, self.namespace, self.name)


@dataclass(frozen=True)
class JobHosts:
    """The hosts a job's spec names (its own and its peers'), for its namespace's record ceiling."""

    namespace: str
    name: str
    created: str
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
    """A host outside the job domains, or a peer host outside the job and peer domains."""
    if not policy.domains:
        return ()
    problems = []
    if not under_domains(job.host, policy.domains):
        problems.append(Problem("spec.host", f"{job.host!r} is not under this cluster's job domains "
                                             f"({', '.join(policy.domains)}); use a host under one of them "
                                             "(the bootstrap's iflearner:jobDomains)"))
    peer_domains = (*policy.domains, *policy.peer_domains)
    for index, peer in enumerate(job.peers):
        if not under_domains(peer.host, peer_domains):
            problems.append(Problem(f"spec.peers[{index}].host", (
                f"{peer.host!r} is not under the federation's domains ({', '.join(peer_domains)}); use a peer "
                "host under one of them (the bootstrap's iflearner:jobDomains and iflearner:peerDomains)")))
    return tuple(problems)


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


def _identity(job: Mapping[str, Any]) -> tuple[str, str, str] | None:
    metadata = job.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""),
            str(metadata.get("creationTimestamp") or ""))


def claim_of(job: Mapping[str, Any]) -> HostClaim | None:
    """What a cached job has applied (``status.applied``; for a status written before it recorded
    hosts, the endpoint it serves). None for a job never applied: a spec claims nothing, so a job
    that is stalled, does not parse, or was just edited holds no host."""
    identity = _identity(job)
    status = job.get("status") if isinstance(job.get("status"), Mapping) else {}
    applied = status.get("applied")
    if identity is None or not isinstance(applied, Mapping):
        return None
    outputs = status.get("outputs") if isinstance(status.get("outputs"), Mapping) else {}
    serves = applied.get("host") or outputs.get("endpoint")
    raw = applied.get("records")
    records = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    return HostClaim(*identity, str(serves) if serves else None, records)


def hosts_of(job: Mapping[str, Any]) -> JobHosts | None:
    """The hosts a cached job's spec names, read without validating it."""
    identity = _identity(job)
    spec = job.get("spec")
    if identity is None or not isinstance(spec, Mapping):
        return None
    hosts = {spec.get("host")}
    peers = spec.get("peers")
    for peer in peers if isinstance(peers, list) else []:
        if isinstance(peer, Mapping):
            hosts.add(peer.get("host"))
    return JobHosts(*identity, frozenset(h for h in hosts if isinstance(h, str) and h))


def records_of(job: IflearnerJob, ingress_address: str | None) -> dict[str, str]:
    """The DNS records a job publishes: its host at the cluster's ingress address, its peers'."""
    own = {job.host: ingress_address} if ingress_address else {}
    return {**own, **{p.host: p.address for p in job.peers}}


def host_conflicts(job: IflearnerJob, created: str, claims: Iterable[HostClaim], ingress_address: str | None,
                   applied: bool = False) -> tuple[Problem, ...]:
    """The job's hosts that an applied job of another namespace serves, or publishes at another
    address. Jobs of one namespace may share a host (iflearner-flow's server and client jobs do),
    and two namespaces may publish the same record for a peer. A job that is applied itself
    yields only to older claims, so that of two applied claimants only the newer is told."""
    mine = (created, job.namespace, job.name)
    records = records_of(job, ingress_address)
    named = [("spec.host", job.host)] + [(f"spec.peers[{i}].host", p.host) for i, p in enumerate(job.peers)]
    problems: dict[str, Problem] = {}
    for other in sorted(claims, key=lambda c: c.order):
        if other.namespace == job.namespace or (applied and other.order >= mine):
            continue
        holder = f"job {other.namespace}/{other.name}"
        for field, host in named:
            if field in problems:
                continue
            if field == "spec.host" and other.serves == host:
                problems[field] = Problem(field, f"{host!r} is served by {holder} (another namespace): a host "
                                                 "belongs to the namespace that applied it first; choose another")
            elif host in other.records and records.get(host) not in (None, other.records[host]):
                problems[field] = Problem(field, f"{host!r} resolves to {other.records[host]} for {holder} (another "
                                                 "namespace): use that address or another host")
            elif field != "spec.host" and other.serves == host and records.get(host) != other.records.get(host):
                problems[field] = Problem(field, f"{host!r} is served by {holder} (another namespace): a peer "
                                                 "record may not point it elsewhere")
    return tuple(problems[field] for field, _ in named if field in problems)


def record_limit_problems(job: IflearnerJob, created: str, namespace_jobs: Iterable[JobHosts],
                          limit: int) -> tuple[Problem, ...]:
    """The job's records past its namespace's ceiling, counting the distinct hosts of the
    namespace's jobs in the order they were created (the newest job is the one refused)."""
    mine = JobHosts(job.namespace, job.name, created, frozenset({job.host, *(p.host for p in job.peers)}))
    earlier = [j for j in namespace_jobs if j.namespace == job.namespace and j.order < mine.order]
    published = set().union(*(j.hosts for j in earlier)) if earlier else set()
    total = len(published | mine.hosts)
    if total <= limit:
        return ()
    return (Problem("spec.peers", (
        f"the jobs of namespace {job.namespace} would publish {total} DNS records, over its limit of {limit} "
        "(the bootstrap's iflearner:dnsRecordsPerNamespace): remove peers, or delete jobs that no longer run")),)


@dataclass(frozen=True)
class ClusterJobs:
    """What the other jobs of the cluster hold, as one pass reads it from the cache."""

    claims: tuple[HostClaim, ...] = ()
    hosts: tuple[JobHosts, ...] = ()

    @classmethod
    def of(cls, jobs: Iterable[Mapping[str, Any]], but: tuple[str, str]) -> ClusterJobs:
        """From cached jobs, leaving out the job ``but`` (namespace, name) itself."""
        others = [j for j in jobs if (_identity(j) or ("", "", ""))[:2] != but]
        return cls(tuple(c for c in map(claim_of, others) if c is not None),
                   tuple(h for h in map(hosts_of, others) if h is not None))


def refusal(job: IflearnerJob, policy: TenancyPolicy, created: str = "", cluster: ClusterJobs = ClusterJobs(),
            applied: bool = False) -> Refusal | None:
    """The first policy the job breaks (with every field at fault under it), or None.
    ``applied``: this generation of the job was applied already (see :func:`host_conflicts`)."""
    checks = ((REASON_POD_SECURITY, lambda: pod_problems(job, policy)),
              (REASON_SERVICE_ACCOUNT, lambda: service_account_problems(job, policy)),
              (REASON_HOST_NOT_ALLOWED, lambda: host_problems(job, policy)),
              (REASON_PEER_ADDRESS, lambda: peer_address_problems(job, policy)),
              (REASON_HOST_CONFLICT, lambda: host_conflicts(job, created, cluster.claims, policy.ingress_address,
                                                            applied)),
              (REASON_RECORD_LIMIT, lambda: record_limit_problems(job, created, cluster.hosts,
                                                                  policy.records_per_namespace)))
    for reason, check in checks:
        problems = check()
        if problems:
            return Refusal(reason, problems)
    return None
