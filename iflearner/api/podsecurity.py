"""Kubernetes Pod Security Standards, checked on a job's Pod template before any run.

The API server's Pod Security admission enforces the same levels on the job
namespaces (the bootstrap labels them); this check runs first so that a job
is ``Stalled`` with reason ``PodSecurity`` naming each field in the job's own
terms (``spec.template.spec...``), instead of a refused create deep in a
Pulumi run. The rules follow https://kubernetes.io/docs/concepts/security/pod-security-standards/
(baseline and restricted, as of Kubernetes 1.36).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any

from iflearner.job import Problem

TEMPLATE = "spec.template"


class Level(StrEnum):
    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"


BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
RESTRICTED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret", "image",
})
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
HOOKS = ("postStart", "preStop")


def parse_level(value: object) -> Level:
    try:
        return Level(str(value))
    except ValueError:
        choices = ", ".join(repr(level.value) for level in Level)
        raise ValueError(f"podSecurity must be one of {choices}, got {value!r}") from None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    """A list field; anything else is no entries (the API server's own validation refuses it)."""
    return value if isinstance(value, list) else []


def _strings(value: object) -> list[str]:
    return [str(v) for v in _list(value)]


def _containers(pod_spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for key in CONTAINER_LISTS:
        for index, container in enumerate(_list(pod_spec.get(key))):
            if isinstance(container, Mapping):
                yield f"{TEMPLATE}.spec.{key}[{index}]", container


def _baseline_context(where: str, context: Mapping[str, Any], problems: list[Problem]) -> None:
    """The securityContext rules baseline shares between the Pod and its containers."""
    if _mapping(context.get("windowsOptions")).get("hostProcess") is True:
        problems.append(Problem(f"{where}.windowsOptions.hostProcess", "must not be true (host process)"))
    selinux = _mapping(context.get("seLinuxOptions"))
    if (selinux.get("type") or "") not in SELINUX_TYPES:
        problems.append(Problem(f"{where}.seLinuxOptions.type",
                                f"must be unset or one of {', '.join(sorted(SELINUX_TYPES - {''}))}"))
    for key in ("user", "role"):
        if selinux.get(key):
            problems.append(Problem(f"{where}.seLinuxOptions.{key}", "must be unset"))
    if _mapping(context.get("seccompProfile")).get("type") == "Unconfined":
        problems.append(Problem(f"{where}.seccompProfile.type", "must not be Unconfined"))
    if _mapping(context.get("appArmorProfile")).get("type") == "Unconfined":
        problems.append(Problem(f"{where}.appArmorProfile.type", "must not be Unconfined"))


def _baseline(template: Mapping[str, Any], problems: list[Problem]) -> None:
    spec = _mapping(template.get("spec"))
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            problems.append(Problem(f"{TEMPLATE}.spec.{key}", "must not be true (the host's namespaces)"))
    pod_context = _mapping(spec.get("securityContext"))
    _baseline_context(f"{TEMPLATE}.spec.securityContext", pod_context, problems)
    for index, sysctl in enumerate(_list(pod_context.get("sysctls"))):
        name = _mapping(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            problems.append(Problem(f"{TEMPLATE}.spec.securityContext.sysctls[{index}].name",
                                    f"{name!r} is not a safe sysctl"))
    for index, volume in enumerate(_list(spec.get("volumes"))):
        if isinstance(volume, Mapping) and "hostPath" in volume:
            problems.append(Problem(f"{TEMPLATE}.spec.volumes[{index}].hostPath", "must not be used (host files)"))
    annotations = _mapping(_mapping(template.get("metadata")).get("annotations"))
    for key, value in annotations.items():
        if str(key).startswith(APPARMOR_ANNOTATION) and value not in ("", "runtime/default") \
                and not str(value).startswith("localhost/"):
            problems.append(Problem(f"{TEMPLATE}.metadata.annotations[{key}]",
                                    "must be runtime/default or localhost/<profile>"))
    for where, container in _containers(spec):
        context = _mapping(container.get("securityContext"))
        at = f"{where}.securityContext"
        if context.get("privileged") is True:
            problems.append(Problem(f"{at}.privileged", "must not be true"))
        added = _strings(_mapping(context.get("capabilities")).get("add"))
        extra = sorted(c for c in added if c not in BASELINE_CAPABILITIES)
        if extra:
            problems.append(Problem(f"{at}.capabilities.add", f"must not add {', '.join(extra)}"))
        if context.get("procMount") not in (None, "Default"):
            problems.append(Problem(f"{at}.procMount", "must be unset or Default"))
        _baseline_context(at, context, problems)
        for port_index, port in enumerate(_list(container.get("ports"))):
            if _mapping(port).get("hostPort") not in (None, 0):
                problems.append(Problem(f"{where}.ports[{port_index}].hostPort", "must be unset or 0"))
        _no_host_in_handlers(where, container, problems)


def _no_host_in_handlers(where: str, container: Mapping[str, Any], problems: list[Problem]) -> None:
    """Probes and lifecycle hooks reach only the Pod itself: their ``host`` stays unset."""
    handlers = [(f"{where}.{probe}", _mapping(container.get(probe))) for probe in PROBES]
    lifecycle = _mapping(container.get("lifecycle"))
    handlers += [(f"{where}.lifecycle.{hook}", _mapping(lifecycle.get(hook))) for hook in HOOKS]
    for at, handler in handlers:
        for kind in ("httpGet", "tcpSocket"):
            if _mapping(handler.get(kind)).get("host") not in (None, ""):
                problems.append(Problem(f"{at}.{kind}.host", "must be unset (a probe or hook may reach only its Pod)"))


def _restricted(template: Mapping[str, Any], problems: list[Problem]) -> None:
    spec = _mapping(template.get("spec"))
    pod_context = _mapping(spec.get("securityContext"))
    for index, volume in enumerate(_list(spec.get("volumes"))):
        kinds = [k for k in _mapping(volume) if k != "name"]
        bad = [k for k in kinds if k not in RESTRICTED_VOLUME_TYPES and k != "hostPath"]  # hostPath: baseline
        if bad:
            problems.append(Problem(f"{TEMPLATE}.spec.volumes[{index}].{bad[0]}",
                                    f"must be one of {', '.join(sorted(RESTRICTED_VOLUME_TYPES))}"))
    if pod_context.get("runAsUser") == 0:
        problems.append(Problem(f"{TEMPLATE}.spec.securityContext.runAsUser", "must not be 0 (root)"))
    if pod_context.get("runAsNonRoot") is False:
        problems.append(Problem(f"{TEMPLATE}.spec.securityContext.runAsNonRoot", "must be true or unset"))
    pod_non_root = pod_context.get("runAsNonRoot") is True
    pod_seccomp = _mapping(pod_context.get("seccompProfile")).get("type") in ("RuntimeDefault", "Localhost")
    for where, container in _containers(spec):
        context = _mapping(container.get("securityContext"))
        at = f"{where}.securityContext"
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(Problem(f"{at}.allowPrivilegeEscalation", "must be false"))
        non_root = context.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            problems.append(Problem(f"{at}.runAsNonRoot",
                                    "must be true (here or in spec.template.spec.securityContext)"))
        if context.get("runAsUser") == 0:
            problems.append(Problem(f"{at}.runAsUser", "must not be 0 (root)"))
        seccomp = _mapping(context.get("seccompProfile")).get("type")
        if seccomp is None and not pod_seccomp or seccomp not in (None, "RuntimeDefault", "Localhost"):
            problems.append(Problem(f"{at}.seccompProfile.type", "must be RuntimeDefault or Localhost "
                                    "(here or in spec.template.spec.securityContext)"))
        capabilities = _mapping(context.get("capabilities"))
        if "ALL" not in _strings(capabilities.get("drop")):
            problems.append(Problem(f"{at}.capabilities.drop", "must include ALL"))
        added = _strings(capabilities.get("add"))
        if any(c != "NET_BIND_SERVICE" for c in added) and all(c in BASELINE_CAPABILITIES for c in added):
            problems.append(Problem(f"{at}.capabilities.add", "may add only NET_BIND_SERVICE"))


def violations(template: Mapping[str, Any], level: Level) -> tuple[Problem, ...]:
    """Every field of the Pod ``template`` that breaks ``level``, named as in the job."""
    problems: list[Problem] = []
    if level is Level.PRIVILEGED:
        return ()
    _baseline(template, problems)
    if level is Level.RESTRICTED:
        _restricted(template, problems)
    return tuple(problems)
