"""The typed IflearnerJob model and its validation.

The CRD refuses what it can at ``kubectl apply``; this module re-checks every
field (jobs may come from files, older CRDs or clusters without CEL) and
collects all problems at once, so the controller can report them in a
condition and a user can fix them in one pass instead of one per retry.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

API_VERSION = "git.iflytek.com/v1"
KIND = "IflearnerJob"
DEFAULT_NAMESPACE = "default"
RESTART_POLICIES = ("Always", "OnFailure", "Never")
TRANSPORTS = ("gateway", "ingress")  # iflearner.desired.Transport's values

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN_RE = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_DNS_LABEL_RE = re.compile(_DNS_LABEL)
_STACK_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_MAX_SUBDOMAIN = 253
# Every host gets a CoreDNS zone stored under the ConfigMap key 'db.<host>'
# (the auto plugin reads the zone's origin from the key, so it cannot be
# shortened), and ConfigMap keys are at most 253 characters.
ZONE_KEY_PREFIX = "db."
MAX_HOST = _MAX_SUBDOMAIN - len(ZONE_KEY_PREFIX)
_MAX_STACK_NAME = 100  # Pulumi refuses longer stack names.
_HOST_EXAMPLE = "job1.server.iflearner.com"


class Role(StrEnum):
    """The two roles of horizontal federated learning."""

    SERVER = "server"
    CLIENT = "client"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a job: where, what, and how to fix it."""

    field: str
    message: str


class InvalidJobError(ValueError):
    """A job that cannot be run, with every problem found in it."""

    def __init__(self, problems: tuple[Problem, ...] | list[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{p.field}: {p.message}" for p in self.problems)


@dataclass(frozen=True)
class Peer:
    """An extra DNS A record: a peer's host and the IPv4 it resolves to."""

    host: str
    address: str


@dataclass(frozen=True)
class IflearnerJob:
    """A validated job. ``template`` is a private deep copy of the manifest's."""

    name: str
    namespace: str
    role: Role
    host: str
    template: Mapping[str, Any]
    peers: tuple[Peer, ...] = ()
    ingress_class_name: str | None = None
    transport: str | None = None  # None: the cluster's transport
    scheduler_name: str | None = None
    generation: int = 0
    uid: str | None = None


def is_dns_subdomain(value: object) -> bool:
    """True for a lowercase RFC 1123 subdomain of at most 253 characters."""
    return (
        isinstance(value, str)
        and len(value) <= _MAX_SUBDOMAIN
        and bool(_DNS_SUBDOMAIN_RE.fullmatch(value))
    )


def is_host_name(value: object) -> bool:
    """True for a DNS subdomain with at least one dot (an FQDN, not a label)."""
    return is_dns_subdomain(value) and "." in str(value)


def _describe(value: object) -> str:
    """Render a bad value for a message, short and unambiguous."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_host(field: str, value: object, problems: list[Problem]) -> str | None:
    """Validate an FQDN, explaining the fix; return it when valid."""
    if value is None or value == "":
        problems.append(Problem(field, f"is required: set the job's FQDN, e.g. '{_HOST_EXAMPLE}'"))
        return None
    if is_host_name(value) and len(str(value)) <= MAX_HOST:
        return str(value)
    if is_host_name(value):
        problems.append(Problem(field, (
            f"must be at most {MAX_HOST} characters (its DNS zone is stored under the ConfigMap key "
            f"'{ZONE_KEY_PREFIX}<host>', which Kubernetes limits to 253); got {len(str(value))} characters: "
            "use a shorter host")))
        return None
    hint = f"a lowercase DNS name with a dot, at most {MAX_HOST} characters, e.g. '{_HOST_EXAMPLE}'"
    if isinstance(value, str) and value != value.lower() and is_host_name(value.lower()):
        hint = f"lowercase: use '{value.lower()}'"
    problems.append(Problem(field, f"must be {hint}; got {_describe(value)}"))
    return None


def _check_header(manifest: Mapping[str, Any], problems: list[Problem]) -> None:
    for field, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if manifest.get(field) != expected:
            problems.append(Problem(field, f"must be '{expected}', got {_describe(manifest.get(field))}"))


def _check_metadata(
    manifest: Mapping[str, Any], problems: list[Problem]
) -> tuple[str, str, int, str | None]:
    metadata = manifest.get("metadata")
    if not isinstance(metadata, Mapping):
        problems.append(Problem("metadata", "is required: add metadata.name, e.g. 'iflearnerjob-server'"))
        return "", DEFAULT_NAMESPACE, 0, None
    name = metadata.get("name")
    if not name:
        problems.append(Problem("metadata.name", "is required: name the job, e.g. 'iflearnerjob-server'"))
        name = ""
    elif not is_dns_subdomain(name):
        problems.append(Problem(
            "metadata.name",
            "must be a lowercase DNS name (letters, digits, '-' and '.', starting and ending with a letter "
            f"or digit, at most 253 characters); got {_describe(name)}",
        ))
    namespace = metadata.get("namespace") or DEFAULT_NAMESPACE
    if not (isinstance(namespace, str) and _DNS_LABEL_RE.fullmatch(namespace)):
        problems.append(Problem(
            "metadata.namespace",
            f"must be a DNS label (at most 63 lowercase letters, digits, '-'); got {_describe(namespace)}",
        ))
    generation = metadata.get("generation") or 0
    if not isinstance(generation, int) or isinstance(generation, bool):
        problems.append(Problem("metadata.generation", f"must be an integer; got {_describe(generation)}"))
        generation = 0
    uid = metadata.get("uid")
    return str(name), str(namespace), generation, (str(uid) if uid else None)


def _check_role(spec: Mapping[str, Any], problems: list[Problem]) -> Role:
    role = spec.get("role")
    try:
        return Role(role)
    except ValueError:
        problems.append(Problem("spec.role", f"must be 'server' or 'client', got {_describe(role)}"))
        return Role.SERVER


def _check_string_map(field: str, value: object, problems: list[Problem]) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        problems.append(Problem(field, "must map strings to strings; quote values such as \"true\" or \"1\""))


def _check_containers(containers: object, problems: list[Problem]) -> None:
    field = "spec.template.spec.containers"
    if not isinstance(containers, list) or not containers:
        problems.append(Problem(field, "must be a non-empty list: add a container with a name and an image"))
        return
    for index, container in enumerate(containers):
        item = f"{field}[{index}]"
        if not isinstance(container, Mapping):
            problems.append(Problem(item, "must be a container object with at least 'name' and 'image'"))
            continue
        for key in ("name", "image"):
            if not isinstance(container.get(key), str) or not container.get(key):
                problems.append(Problem(f"{item}.{key}", f"is required: set the container's {key}"))
        _check_object_list(f"{item}.volumeMounts", container.get("volumeMounts"), problems,
                           "{name, mountPath} objects")


def _check_object_list(field: str, value: object, problems: list[Problem], what: str) -> None:
    """A list of objects or absent. Client Pods get the trust files added to ``volumes`` and
    ``volumeMounts``: anything else there would be silently mangled instead of refused."""
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        problems.append(Problem(field, f"must be a list of {what}; got {_describe(value)}"))


def _check_template(spec: Mapping[str, Any], problems: list[Problem]) -> Mapping[str, Any]:
    template = spec.get("template")
    if not isinstance(template, Mapping):
        problems.append(Problem("spec.template", "is required: add a pod template with spec.containers"))
        return {}
    metadata = template.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        problems.append(Problem("spec.template.metadata", "must be an object with labels and annotations"))
    elif metadata is not None:
        _check_string_map("spec.template.metadata.labels", metadata.get("labels"), problems)
        _check_string_map("spec.template.metadata.annotations", metadata.get("annotations"), problems)
    pod_spec = template.get("spec")
    if not isinstance(pod_spec, Mapping):
        problems.append(Problem("spec.template.spec", "is required: add a pod spec with containers"))
        return copy.deepcopy(dict(template))
    _check_containers(pod_spec.get("containers"), problems)
    _check_object_list("spec.template.spec.volumes", pod_spec.get("volumes"), problems, "{name, ...} volume objects")
    policy = pod_spec.get("restartPolicy")
    if policy is not None and policy not in RESTART_POLICIES:
        problems.append(Problem(
            "spec.template.spec.restartPolicy",
            f"must be Always, OnFailure or Never (Never for a job that finishes); got {_describe(policy)}",
        ))
    return copy.deepcopy(dict(template))


def _check_peer(index: int, raw: object, host: str | None, problems: list[Problem]) -> Peer | None:
    field = f"spec.peers[{index}]"
    if not isinstance(raw, Mapping):
        problems.append(Problem(field, "must be an object with 'host' and 'address'"))
        return None
    peer_host = _check_host(f"{field}.host", raw.get("host"), problems)
    address = raw.get("address")
    valid_address: str | None = None
    try:
        valid_address = str(ipaddress.IPv4Address(address if isinstance(address, str) else ""))
    except ValueError:
        problems.append(Problem(
            f"{field}.address",
            f"must be an IPv4 address such as '172.31.164.54' (the peer's ingress); got {_describe(address)}",
        ))
    if peer_host is not None and peer_host == host:
        problems.append(Problem(
            f"{field}.host",
            "must differ from spec.host (the job's own record is added automatically); remove this peer",
        ))
        return None
    if peer_host is None or valid_address is None:
        return None
    return Peer(peer_host, valid_address)


def _check_peers(
    spec: Mapping[str, Any], host: str | None, problems: list[Problem]
) -> tuple[Peer, ...]:
    raw_peers = spec.get("peers")
    if raw_peers is None:
        return ()
    if not isinstance(raw_peers, list):
        problems.append(Problem("spec.peers", "must be a list of {host, address} objects"))
        return ()
    peers: list[Peer] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_peers):
        peer = _check_peer(index, raw, host, problems)
        if peer is None:
            continue
        if peer.host in seen:
            problems.append(Problem(
                f"spec.peers[{index}].host",
                f"duplicates an earlier peer '{peer.host}'; keep one entry per host",
            ))
            continue
        seen.add(peer.host)
        peers.append(peer)
    return tuple(peers)


def _optional_string(
    spec: Mapping[str, Any], key: str, problems: list[Problem], *, dns: bool = False
) -> str | None:
    value = spec.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or (dns and not is_dns_subdomain(value)):
        kind = "a lowercase DNS name such as 'nginx'" if dns else "a string"
        problems.append(Problem(f"spec.{key}", f"must be {kind}; got {_describe(value)}"))
        return None
    return value


def parse_job(manifest: Mapping[str, Any]) -> IflearnerJob:
    """Validate an IflearnerJob manifest and return the typed job.

    Raises InvalidJobError listing every problem found. Does no I/O.
    """
    if not isinstance(manifest, Mapping):
        raise InvalidJobError([Problem("manifest", f"must be a YAML mapping; got {_describe(manifest)}")])
    problems: list[Problem] = []
    _check_header(manifest, problems)
    name, namespace, generation, uid = _check_metadata(manifest, problems)
    spec = manifest.get("spec")
    if not isinstance(spec, Mapping):
        problems.append(Problem("spec", "is required: set spec.role, spec.host and spec.template"))
        raise InvalidJobError(problems)
    role = _check_role(spec, problems)
    host = _check_host("spec.host", spec.get("host"), problems)
    template = _check_template(spec, problems)
    peers = _check_peers(spec, host, problems)
    ingress_class = _optional_string(spec, "ingressClassName", problems, dns=True)
    scheduler = _optional_string(spec, "schedulername", problems)
    transport = _optional_string(spec, "transport", problems)
    if transport is not None and transport not in TRANSPORTS:
        problems.append(Problem(
            "spec.transport",
            f"must be 'gateway' (Gateway API) or 'ingress' (an nginx-class Ingress), or be left out to use "
            f"the cluster's; got {_describe(transport)}",
        ))
    if problems:
        raise InvalidJobError(problems)
    assert host is not None  # guaranteed: a missing host is a problem above
    return IflearnerJob(
        name=name, namespace=namespace, role=role, host=host, template=template,
        peers=peers, ingress_class_name=ingress_class, transport=transport, scheduler_name=scheduler,
        generation=generation, uid=uid,
    )


def _file_error(message: str) -> InvalidJobError:
    return InvalidJobError([Problem("file", message)])


def load_job_file(path: str | Path) -> IflearnerJob:
    """Read a YAML file holding exactly one IflearnerJob and parse it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _file_error(f"cannot read {path}: {error}; check the path") from error
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        raise _file_error(f"{path} is not valid YAML ({detail}); fix the syntax") from error
    if len(documents) != 1:
        raise _file_error(
            f"{path} must hold exactly one IflearnerJob document, found {len(documents)}; "
            "use one file per job"
        )
    document = documents[0]
    if not isinstance(document, Mapping) or document.get("kind") != KIND:
        kind = document.get("kind") if isinstance(document, Mapping) else type(document).__name__
        raise _file_error(f"{path} must hold a document with kind {KIND}, found {_describe(kind)}")
    return parse_job(document)


def short_hash(text: str, length: int = 8) -> str:
    """A stable hex digest used to keep truncated names unique."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def stack_name(job: IflearnerJob) -> str:
    """The Pulumi stack name for a job (see :func:`stack_name_of`)."""
    return stack_name_of(job.namespace, job.name)


def stack_name_of(namespace: str, name: str) -> str:
    """The Pulumi stack name for the job ``namespace/name``: '<namespace>.<name>'.

    Namespaces never contain dots, so the first dot separates the two parts
    and the name is unique per (namespace, name). Names too long for Pulumi
    (100 characters) are truncated and suffixed with a hash of both parts.
    Takes names rather than a job so that the stack of a job whose spec no
    longer parses can still be found and destroyed.
    """
    full = f"{namespace}.{name}"
    if len(full) <= _MAX_STACK_NAME and _STACK_NAME_RE.fullmatch(full):
        return full
    suffix = short_hash(f"{namespace}/{name}")
    prefix = re.sub(r"[^A-Za-z0-9._-]", "-", full)[: _MAX_STACK_NAME - len(suffix) - 1]
    return f"{prefix}-{suffix}"
