"""What a job's stack should declare, as plain data.

``desired_resources`` maps a validated job plus the cluster's settings to the
Kubernetes objects of the per-role contract (see DESIGN.md): TLS Secret,
trust ConfigMap (clients), DNS zone files, Service, the job's route and Pod.
It is pure and deterministic (no I/O, no Pulumi), so the Pulumi program, the
preview command and the tests all agree on one description.

The route depends on the transport (a cluster setting, overridable per job):

- ``gateway``: Gateway API. The job's TLS listener (its host and its own
  certificate) is a Gateway of the cluster's GatewayClass in the job's
  namespace, and a GRPCRoute attaches the job's Service to it. Gateway API
  v1.5 has ListenerSet for exactly this (an application's listener attached
  to a shared Gateway); Traefik v3.6, the gateway this project builds, does
  not implement ListenerSet. A Gateway per job is the closest conformant
  form: it is a standard object, the job owns it alone, and Traefik serves
  every Gateway of its class on the same entry point, picking the
  certificate by SNI. No job edits a shared object.
- ``ingress``: the original's Ingress with the nginx annotations (served by
  Traefik's kubernetesIngressNGINX provider, or by an ingress-nginx fork).
"""

from __future__ import annotations

import copy
import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from iflearner.api.podsecurity import parse_level
from iflearner.api.tenancy import (
    DEFAULT_RECORDS_PER_NAMESPACE,
    DEFAULT_SERVICE_ACCOUNT,
    TenancyPolicy,
    check_domain,
    parse_networks,
)
from iflearner.certrenewal import DEFAULT_RENEWAL_FRACTION, check_fraction
from iflearner.job import ZONE_KEY_PREFIX, IflearnerJob, Role, short_hash

MANAGED_BY = "iflearner-operator"
MAX_DNS_RECORD_SHARDS = 64
# What the bootstrap configures unless told otherwise (`dnsRecordShards`): room for about
# 37,000 jobs' records.
BOOTSTRAP_DNS_RECORD_SHARDS = 8
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB_NAME = "iflearner.git.iflytek.com/job-name"
LABEL_JOB_NAMESPACE = "iflearner.git.iflytek.com/job-namespace"
LABEL_ROLE = "iflearner.git.iflytek.com/role"
# The uid of the IflearnerJob whose stack created the object. It is what the
# controller trusts to tell the job's own objects from someone else's that
# merely have the same name (see iflearner.controller.preflight): names and
# the other labels are predictable, a job's uid is not.
LABEL_JOB_UID = "iflearner.git.iflytek.com/job-uid"

GRPC_PORT, GRPC_TARGET_PORT = 80, 50001
HTTP_PORT, HTTP_TARGET_PORT = 82, 50002

SERVER_TRUST_KEY = "server-iflearner-secret.crt"
PARTY_TRUST_KEY = "party-iflearner-secret.crt"
# (volume name, ConfigMap key); the mount path is /etc/<key>, as in the original.
TRUST_VOLUMES = (("server-iflearner-crt", SERVER_TRUST_KEY), ("party-iflearner-crt", PARTY_TRUST_KEY))

INGRESS_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/backend-protocol": "GRPC",
    "nginx.ingress.kubernetes.io/ssl-redirect": "true",
    "nginx.ingress.kubernetes.io/proxy-body-size": "1024m",
}

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
# The listener's name in every job's Gateway (the GRPCRoute's sectionName).
GATEWAY_LISTENER = "https"
# Service ports named this way carry gRPC without TLS (HTTP/2 cleartext):
# Gateway implementations take the backend protocol from it (GEP-1911).
H2C_APP_PROTOCOL = "kubernetes.io/h2c"


class Transport(StrEnum):
    """How a job is reached from outside its cluster."""

    GATEWAY = "gateway"
    INGRESS = "ingress"


ZONE_NAMESERVER = "ns.iflearner.local."
ZONE_HOSTMASTER = "hostmaster.iflearner.local."
ZONE_TTL = 60

_DNS_1035_LABEL_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_MAX_LABEL = 63
_MAX_FIELD_MANAGER = 128
_MAX_CONFIGMAP_KEY = 253
# X.509 (RFC 5280 ub-common-name) and the `cryptography` library refuse longer
# common names; the host is always in the subjectAltName, which is what TLS checks.
MAX_COMMON_NAME = 64


@dataclass(frozen=True)
class ClusterSettings:
    """Per-cluster settings the bootstrap stack establishes."""

    operator_namespace: str = "iflearner-system"
    ca_secret_name: str = "iflearner-ca"
    trust_configmap_name: str = "iflearner-trust"
    ingress_class_name: str = "nginx"
    ingress_address: str | None = None
    dns_namespace: str = "kube-system"
    dns_configmap_name: str = "iflearner-dns-records"
    # Job DNS records are spread by a stable hash of their key over this many ConfigMaps: the
    # API server caps one at 1 MiB (about 4,700 jobs' records). Shard 0 is dns_configmap_name
    # (where every record lived before shards), shard i its "-i" sibling. The bootstrap creates
    # and mounts them all; settings written before shards existed mean one.
    dns_record_shards: int = 1
    certificate_validity_hours: int = 24 * 365
    # Overrides the hours when set: lifetimes of seconds, for tests of renewal.
    certificate_validity_seconds: int | None = None
    # Job certificates are renewed when this fraction of their lifetime has passed.
    certificate_renewal_fraction: float = DEFAULT_RENEWAL_FRACTION
    # During a CA rotation the retiring CA keeps issuing until every running client Pod
    # trusts the new one, or this long after the new CA's notBefore (controller.carotation).
    ca_rotation_window_seconds: int = 7 * 24 * 3600
    # Settings written before the gateway existed have no transport: they keep
    # their Ingresses. The bootstrap writes "gateway" for new clusters.
    transport: str = Transport.INGRESS.value
    gateway_class_name: str = "iflearner"
    # Traefik matches a Gateway listener to its entry point by port: this is
    # the gateway's TLS entry point (its Service maps 443 and a NodePort to it).
    gateway_listener_port: int = 8443
    # Tenancy (iflearner.api.tenancy): the Pod Security level job Pods meet, the service accounts
    # they may name, the domains their hosts lie under (empty: any, as clusters bootstrapped before
    # job domains), and the networks peer records may not (refused) or may (allowed) point at.
    pod_security: str = "baseline"
    job_service_accounts: tuple[str, ...] = (DEFAULT_SERVICE_ACCOUNT,)
    job_domains: tuple[str, ...] = ()
    peer_domains: tuple[str, ...] = ()  # other clusters' domains peer hosts may name too
    refused_peer_networks: tuple[str, ...] = ()
    allowed_peer_networks: tuple[str, ...] = ()
    dns_records_per_namespace: int = DEFAULT_RECORDS_PER_NAMESPACE

    def __post_init__(self) -> None:
        for name, key in (("job_service_accounts", "jobServiceAccounts"), ("job_domains", "jobDomains"),
                          ("peer_domains", "peerDomains"),
                          ("refused_peer_networks", "refusedPeerNetworks"),
                          ("allowed_peer_networks", "allowedPeerNetworks")):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise ValueError(f"{key} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(str(v) for v in value))  # from YAML: a list
        if not isinstance(self.dns_records_per_namespace, int) or self.dns_records_per_namespace < 1:
            raise ValueError("dnsRecordsPerNamespace must be a positive integer, "
                             f"got {self.dns_records_per_namespace!r}")
        self.tenancy_policy()  # a clear error for a bad level, domain or network
        try:
            Transport(self.transport)
        except ValueError:
            choices = " or ".join(repr(t.value) for t in Transport)
            raise ValueError(f"transport must be {choices}, got {self.transport!r}") from None
        check_fraction(self.certificate_renewal_fraction)
        if not 1 <= self.dns_record_shards <= MAX_DNS_RECORD_SHARDS:
            raise ValueError(f"dnsRecordShards must be between 1 and {MAX_DNS_RECORD_SHARDS}, "
                             f"got {self.dns_record_shards}")

    def tenancy_policy(self) -> TenancyPolicy:
        return TenancyPolicy(
            pod_security=parse_level(self.pod_security), service_accounts=self.job_service_accounts,
            domains=tuple(check_domain(d) for d in self.job_domains),
            peer_domains=tuple(check_domain(d, "peerDomains") for d in self.peer_domains),
            ingress_address=self.ingress_address,
            refused_peer_networks=parse_networks("refusedPeerNetworks", self.refused_peer_networks),
            allowed_peer_networks=parse_networks("allowedPeerNetworks", self.allowed_peer_networks),
            records_per_namespace=self.dns_records_per_namespace)


@dataclass(frozen=True)
class JobNames:
    """Names of a job's objects: the job's name where Kubernetes allows it."""

    base: str
    pod: str
    service: str
    ingress: str
    gateway: str
    route: str
    tls_secret: str
    trust_configmap: str
    dns_key: str
    field_manager: str


@dataclass(frozen=True)
class CertificateRequest:
    """The leaf certificate the program signs with the cluster CA."""

    common_name: str
    dns_names: tuple[str, ...]
    validity_hours: int
    validity_seconds: int | None = None  # overrides validity_hours when set
    renewal_fraction: float = DEFAULT_RENEWAL_FRACTION


@dataclass(frozen=True)
class DnsShard:
    """The zone files of a job that live in one records ConfigMap."""

    index: int
    configmap: str
    files: Mapping[str, str]


@dataclass(frozen=True)
class DnsRecord:
    """One A record the cluster DNS must serve."""

    fqdn: str
    address: str


@dataclass(frozen=True)
class DesiredResources:
    """Everything a job's stack declares, as plain manifests and values."""

    names: JobNames
    labels: Mapping[str, str]
    certificate: CertificateRequest
    tls_secret: dict[str, Any]
    trust_configmap: dict[str, Any] | None
    dns_records: tuple[DnsRecord, ...]
    dns_zone_files: Mapping[str, str]
    # The same files grouped by records ConfigMap; shard 0 last, so that a record moving out
    # of it is added to its new shard before it leaves the old one.
    dns_shards: tuple[DnsShard, ...]
    service: dict[str, Any]
    transport: Transport
    ingress: dict[str, Any] | None  # transport ingress
    gateway: dict[str, Any] | None  # transport gateway: the job's TLS listener
    grpc_route: dict[str, Any] | None  # transport gateway
    pod: dict[str, Any]

    @property
    def route_manifests(self) -> list[dict[str, Any]]:
        """The objects that route traffic to the job's Service, for its transport."""
        return [m for m in (self.ingress, self.gateway, self.grpc_route) if m is not None]


def _truncate_with_hash(text: str, limit: int, seed: str, strip: str = "-.") -> str:
    """Cut ``text`` to fit ``limit`` with a hash of ``seed`` keeping it unique."""
    suffix = short_hash(seed)
    prefix = text[: limit - len(suffix) - 1].rstrip(strip)
    return f"{prefix}-{suffix}" if prefix else suffix


def base_name(namespace: str, name: str) -> str:
    """The job's name if it is a legal Service name (DNS-1035 label), else a derived one.

    iflearner-flow finds the Pod and Service by the job's name, so we keep it
    whenever we can. Otherwise: lowercase, dots to dashes, start with a letter,
    truncated, plus a hash of namespace/name so distinct jobs never collide.
    """
    if len(name) <= _MAX_LABEL and _DNS_1035_LABEL_RE.fullmatch(name):
        return name
    cleaned = re.sub(r"[^a-z0-9-]", "-", name.lower().replace(".", "-"))
    cleaned = re.sub(r"-+", "-", cleaned).lstrip("-0123456789") or "job"
    return _truncate_with_hash(cleaned, _MAX_LABEL, f"{namespace}/{name}")


def job_names(job: IflearnerJob) -> JobNames:
    """All names for a job.

    In-namespace names (Pod, Service, ...) derive from the base name, so a
    legal job name gives the same names in every namespace; the DNS key and
    field manager act across namespaces and therefore include the namespace.
    """
    base = base_name(job.namespace, job.name)
    seed = f"{job.namespace}/{job.name}"
    dns_key = f"db.{job.namespace}.{job.name}"
    if len(dns_key) > _MAX_CONFIGMAP_KEY:
        dns_key = _truncate_with_hash(dns_key, _MAX_CONFIGMAP_KEY, seed)
    manager = f"iflearner-{job.namespace}.{job.name}"
    if len(manager) > _MAX_FIELD_MANAGER:
        manager = _truncate_with_hash(manager, _MAX_FIELD_MANAGER, seed)
    return JobNames(
        base=base, pod=base, service=base, ingress=base, gateway=base, route=base,
        tls_secret=f"{base}-tls", trust_configmap=f"{base}-trust",
        dns_key=dns_key, field_manager=manager,
    )


def _label_value(value: str, seed: str) -> str:
    """A legal label value for ``value`` (hash-suffixed when too long)."""
    if len(value) <= _MAX_LABEL and _LABEL_VALUE_RE.fullmatch(value):
        return value
    # Characters a label value cannot hold become '-', and it must start with a letter or digit;
    # the hash of the original keeps distinct values distinct.
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value).lstrip("-._")
    return _truncate_with_hash(cleaned, _MAX_LABEL, seed, strip="-._")


def job_labels(job: IflearnerJob) -> dict[str, str]:
    """Labels every object of the job carries, so its objects can be found.

    The uid label is there only when the job has a uid (it came from the
    cluster); a job read from a file (``preview``) has none.
    """
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_JOB_NAME: _label_value(job.name, f"{job.namespace}/{job.name}"),
        LABEL_JOB_NAMESPACE: job.namespace,
        LABEL_ROLE: job.role.value,
    }
    if job.uid:
        labels[LABEL_JOB_UID] = job_uid_label(job.uid)
    return labels


def job_uid_label(uid: str) -> str:
    """The value of the ``job-uid`` label of a job with this uid."""
    return _label_value(uid, uid)


def common_name(host: str) -> str:
    """The certificate's common name: the host when it fits in 64 characters, else a hashed prefix of it."""
    return host if len(host) <= MAX_COMMON_NAME else _truncate_with_hash(host, MAX_COMMON_NAME, host)


def _metadata(name: str, job: IflearnerJob, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": job.namespace, "labels": dict(labels)}


def zone_file(fqdn: str, address: str) -> str:
    """An RFC 1035 zone for ``fqdn.`` answering ``address`` at its apex.

    CoreDNS's file/auto plugins reload a zone only when the SOA serial
    differs, so the serial is a checksum of the record: it changes exactly
    when the content does, and stays pure (no clock).
    """
    record = f"@ IN A {address}"
    serial = zlib.crc32(f"{fqdn} {record}".encode()) or 1
    return (
        f"$ORIGIN {fqdn}.\n"
        f"$TTL {ZONE_TTL}\n"
        f"@ IN SOA {ZONE_NAMESERVER} {ZONE_HOSTMASTER} {serial} 7200 3600 1209600 {ZONE_TTL}\n"
        f"@ IN NS {ZONE_NAMESERVER}\n"
        f"{record}\n"
    )


def zone_file_key(fqdn: str) -> str:
    """ConfigMap key of a zone file: 'db.<fqdn>' (auto plugin: ``db\\.(.*) {1}``).

    At most 253 characters because job validation bounds hosts (``iflearner.job.MAX_HOST``).
    """
    return f"{ZONE_KEY_PREFIX}{fqdn}"


def dns_configmap_names(settings: ClusterSettings) -> tuple[str, ...]:
    """The records ConfigMaps, by shard index."""
    base = settings.dns_configmap_name
    return (base, *(f"{base}-{index}" for index in range(1, settings.dns_record_shards)))


def dns_shard_of(key: str, shards: int) -> int:
    """The shard of a zone file key: stable across processes and versions (not Python's hash)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % shards


def _dns_shards(files: Mapping[str, str], settings: ClusterSettings) -> tuple[DnsShard, ...]:
    names = dns_configmap_names(settings)
    grouped: dict[int, dict[str, str]] = {}
    for key, text in files.items():
        grouped.setdefault(dns_shard_of(key, settings.dns_record_shards), {})[key] = text
    return tuple(DnsShard(index, names[index], grouped[index])
                 for index in sorted(grouped, key=lambda i: (i == 0, i)))


def _dns_records(job: IflearnerJob, settings: ClusterSettings) -> tuple[DnsRecord, ...]:
    own = (DnsRecord(job.host, settings.ingress_address),) if settings.ingress_address else ()
    return own + tuple(DnsRecord(p.host, p.address) for p in job.peers)


def transport_of(job: IflearnerJob, settings: ClusterSettings) -> Transport:
    """The job's own choice, else the cluster's."""
    return Transport(job.transport or settings.transport)


def _service(
    job: IflearnerJob, names: JobNames, labels: Mapping[str, str], transport: Transport
) -> dict[str, Any]:
    grpc: dict[str, Any] = {"name": "grpc", "port": GRPC_PORT, "targetPort": GRPC_TARGET_PORT, "protocol": "TCP"}
    if transport is Transport.GATEWAY:
        # Only for the gateway: an Ingress job's Service stays byte for byte
        # what it was, so existing jobs see no change.
        grpc["appProtocol"] = H2C_APP_PROTOCOL
    ports = [grpc]
    if job.role is Role.SERVER:
        ports.append({"name": "http", "port": HTTP_PORT, "targetPort": HTTP_TARGET_PORT, "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names.service, job, labels),
        "spec": {"type": "ClusterIP", "selector": {"app": names.base}, "ports": ports},
    }


def _ingress(
    job: IflearnerJob, names: JobNames, labels: Mapping[str, str], settings: ClusterSettings
) -> dict[str, Any]:
    metadata = _metadata(names.ingress, job, labels)
    metadata["annotations"] = dict(INGRESS_ANNOTATIONS)
    backend = {"service": {"name": names.service, "port": {"number": GRPC_PORT}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": {
            "ingressClassName": job.ingress_class_name or settings.ingress_class_name,
            "rules": [{"host": job.host, "http": {"paths": [path]}}],
            "tls": [{"hosts": [job.host], "secretName": names.tls_secret}],
        },
    }


def _gateway(
    job: IflearnerJob, names: JobNames, labels: Mapping[str, str], settings: ClusterSettings
) -> dict[str, Any]:
    """The job's TLS listener: its host, its certificate, routes from its namespace only."""
    listener = {
        "name": GATEWAY_LISTENER,
        "hostname": job.host,
        "port": settings.gateway_listener_port,
        "protocol": "HTTPS",
        "tls": {"mode": "Terminate",
                "certificateRefs": [{"group": "", "kind": "Secret", "name": names.tls_secret}]},
        "allowedRoutes": {"namespaces": {"from": "Same"},
                          "kinds": [{"group": GATEWAY_API_GROUP, "kind": "GRPCRoute"}]},
    }
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "Gateway",
        "metadata": _metadata(names.gateway, job, labels),
        "spec": {"gatewayClassName": settings.gateway_class_name, "listeners": [listener]},
    }


def _grpc_route(job: IflearnerJob, names: JobNames, labels: Mapping[str, str]) -> dict[str, Any]:
    """Every gRPC call for the job's host to its Service's grpc port (h2c)."""
    parent = {"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": names.gateway,
              "sectionName": GATEWAY_LISTENER}
    backend = {"group": "", "kind": "Service", "name": names.service, "port": GRPC_PORT}
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "GRPCRoute",
        "metadata": _metadata(names.route, job, labels),
        "spec": {"parentRefs": [parent], "hostnames": [job.host], "rules": [{"backendRefs": [backend]}]},
    }


def _replace_named(items: list[Any], new: Mapping[str, Any], *keys: str) -> list[Any]:
    """Drop entries that clash with ``new`` on any of ``keys``, then append it."""
    def clashes(item: Any) -> bool:
        return isinstance(item, Mapping) and any(item.get(k) == new[k] for k in keys)

    return [*(i for i in items if not clashes(i)), dict(new)]


def _mount_trust_files(spec: dict[str, Any], configmap: str) -> None:
    """Mount the two trust files into the first container, as the original did."""
    volumes = list(spec.get("volumes") or [])
    container = spec["containers"][0]
    mounts = list(container.get("volumeMounts") or [])
    for volume_name, key in TRUST_VOLUMES:
        volume = {"name": volume_name, "configMap": {"name": configmap, "items": [{"key": key, "path": key}]}}
        volumes = _replace_named(volumes, volume, "name")
        mount = {"name": volume_name, "mountPath": f"/etc/{key}", "subPath": key, "readOnly": True}
        mounts = _replace_named(mounts, mount, "name", "mountPath")
    spec["volumes"] = volumes
    container["volumeMounts"] = mounts


def _pod(job: IflearnerJob, names: JobNames, labels: Mapping[str, str], legacy_token_mount: bool) -> dict[str, Any]:
    template = copy.deepcopy(dict(job.template))
    template_meta = template.get("metadata") or {}
    pod_labels = {**(template_meta.get("labels") or {}), **labels, "app": names.base}
    metadata = _metadata(names.pod, job, pod_labels)
    if template_meta.get("annotations"):
        metadata["annotations"] = dict(template_meta["annotations"])
    spec = template.get("spec") or {}
    if job.role is Role.CLIENT:
        _mount_trust_files(spec, names.trust_configmap)
    if "automountServiceAccountToken" not in spec and not legacy_token_mount:
        # A trainer never calls the API server: no token unless the template asks for one.
        spec["automountServiceAccountToken"] = False
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def desired_resources(job: IflearnerJob, settings: ClusterSettings,
                      legacy_token_mount: bool = False) -> DesiredResources:
    """Describe every object the job's stack declares. Pure and deterministic.

    ``legacy_token_mount``: the job's running Pod was made before job Pods lost the API token by
    default; its spec keeps that, so an operator upgrade never replaces a running Pod."""
    names = job_names(job)
    labels = job_labels(job)
    tls_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(names.tls_secret, job, labels),
        "type": "kubernetes.io/tls",
    }
    trust: dict[str, Any] | None = None
    if job.role is Role.CLIENT:
        trust_meta = _metadata(names.trust_configmap, job, labels)
        trust = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": trust_meta}
    records = _dns_records(job, settings)
    zone_files = {zone_file_key(r.fqdn): zone_file(r.fqdn, r.address) for r in records}
    transport = transport_of(job, settings)
    gateway = transport is Transport.GATEWAY
    return DesiredResources(
        names=names,
        labels=labels,
        certificate=CertificateRequest(common_name(job.host), (job.host,), settings.certificate_validity_hours,
                                       settings.certificate_validity_seconds, settings.certificate_renewal_fraction),
        tls_secret=tls_secret,
        trust_configmap=trust,
        dns_records=records,
        dns_zone_files=zone_files,
        dns_shards=_dns_shards(zone_files, settings),
        service=_service(job, names, labels, transport),
        transport=transport,
        ingress=None if gateway else _ingress(job, names, labels, settings),
        gateway=_gateway(job, names, labels, settings) if gateway else None,
        grpc_route=_grpc_route(job, names, labels) if gateway else None,
        pod=_pod(job, names, labels, legacy_token_mount),
    )


def owned_object_refs(desired: DesiredResources) -> list[tuple[str, str, str, str]]:
    """(apiVersion, kind, namespace, name) of every in-namespace object the job owns."""
    manifests = [desired.tls_secret, desired.trust_configmap, desired.service, *desired.route_manifests,
                 desired.pod]
    return [
        (m["apiVersion"], m["kind"], m["metadata"]["namespace"], m["metadata"]["name"])
        for m in manifests
        if m is not None
    ]
