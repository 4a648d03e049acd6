"""What an IflearnerJob's ``status`` says, decided by pure functions.

The reconciler gathers an :class:`Observation` (the spec's validity, the
stack operation it ran or is running, the failure count, the Pod's phase,
the names the stack declares) and :func:`compute_status` turns it, together
with the previous status, into the new ``status`` object:

- ``phase``: the Pod's phase with the pod-phase meanings existing clients
  poll (Pending, Running, Succeeded, Failed, Unknown); no Pod yet reads
  Pending, as a Pod that is accepted but not running does.
- ``conditions``: ``Ready``, ``Reconciling`` and ``Stalled`` after the
  Kubernetes API conventions: CamelCase reasons, a message,
  ``observedGeneration``, and a ``lastTransitionTime`` that changes only when
  the condition's status flips.
- ``Ready`` also needs the gateway to have accepted the job's route (for the
  ``gateway`` transport): :func:`gateway_route_status` reads the Gateway's,
  its listener's and the GRPCRoute's own conditions, and a refusal carries
  the gateway's reason into the job's condition message.
- ``observedGeneration``, ``message`` (one short line for the printer
  column), ``lastOperation`` (kind, result, time, changes, failureCount,
  error) and ``outputs`` (names only, never keys or certificates).

Nothing here does I/O or reads a clock: time comes in as ``now``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_TYPES = (READY, RECONCILING, STALLED)

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")

RESULT_SUCCEEDED = "Succeeded"
RESULT_FAILED = "Failed"
RESULT_IN_PROGRESS = "InProgress"

# Reasons (CamelCase, machine readable).
REASON_INVALID_SPEC = "InvalidSpec"
# One of the job's object names is held by an object the job does not own.
REASON_NAME_CONFLICT = "NameConflict"
# The API server's dry-run refused the Pod the job's template makes.
REASON_INVALID_POD_TEMPLATE = "InvalidPodTemplate"
# A job applied before the cluster's tenancy policy that breaks it now: it keeps running (an
# upgrade never deletes a running job) with this condition, until its spec changes.
POLICY_VIOLATION = "PolicyViolation"
REASON_SPEC_VALID = "SpecValid"
REASON_STACK_UPDATING = "StackUpdating"
REASON_STACK_UPDATE_FAILED = "StackUpdateFailed"
# The operator's signer could not issue the job's certificate (no usable CA Secret): no Pulumi run.
REASON_CERTIFICATE_NOT_ISSUED = "CertificateNotIssued"
REASON_BACKOFF = "RetryingAfterFailure"
REASON_PROGRESSING = "Progressing"
REASON_WAITING_FOR_POD = "WaitingForPod"
REASON_RECONCILED = "Reconciled"
REASON_DELETING = "Deleting"
REASON_DESTROYING = "DestroyingStack"
REASON_DESTROY_FAILED = "DestroyFailed"
REASON_ROUTE_PENDING = "RoutePending"
REASON_ROUTE_REFUSED = "RouteRefused"
POD_REASONS = {
    None: "PodMissing",
    "Pending": "PodPending",
    "Running": "PodRunning",
    "Succeeded": "PodSucceeded",
    "Failed": "PodFailed",
    "Unknown": "PodUnknown",
}

MAX_ERROR = 1000
MAX_MESSAGE = 200
MAX_CONDITION_MESSAGE = 1000


def rfc3339(moment: datetime.datetime) -> str:
    """Kubernetes' time format: UTC, seconds, trailing Z."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime.datetime | None:
    """Parse an RFC 3339 time written by :func:`rfc3339` (None when absent or bad)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marking the cut."""
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Operation:
    """One stack operation: what ran, when, and how it went."""

    kind: str  # "preview" | "up" | "destroy"
    result: str  # RESULT_SUCCEEDED | RESULT_FAILED | RESULT_IN_PROGRESS
    time: str
    changes: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    seconds: float | None = None
    fingerprint: str | None = None
    # Why a failed run failed, when it is more than "the update failed":
    # StackLocked (a live run holds the stack), RunTimedOut (stopped at the timeout).
    reason: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.result == RESULT_SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.result == RESULT_FAILED

    def to_status(self, failure_count: int, next_retry_time: str | None) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": self.kind,
            "result": self.result,
            "time": self.time,
            "changes": {k: int(v) for k, v in sorted(self.changes.items())},
            "failureCount": int(failure_count),
        }
        if self.seconds is not None:
            status["seconds"] = round(float(self.seconds), 3)
        if self.error:
            status["error"] = truncate(self.error, MAX_ERROR)
        if self.fingerprint:
            status["fingerprint"] = self.fingerprint
        if self.reason and self.failed:
            status["reason"] = self.reason
        if next_retry_time and self.failed:
            status["nextRetryTime"] = next_retry_time
        return status

    @classmethod
    def from_status(cls, raw: object) -> Operation | None:
        """Read back ``status.lastOperation`` (None when absent or malformed)."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("kind"), str):
            return None
        changes = raw.get("changes") if isinstance(raw.get("changes"), Mapping) else {}
        seconds = raw.get("seconds")
        return cls(
            kind=str(raw["kind"]),
            result=str(raw.get("result") or RESULT_FAILED),
            time=str(raw.get("time") or ""),
            changes={str(k): int(v) for k, v in changes.items() if isinstance(v, int)},
            error=raw.get("error") if isinstance(raw.get("error"), str) else None,
            seconds=float(seconds) if isinstance(seconds, int | float) else None,
            fingerprint=raw.get("fingerprint") if isinstance(raw.get("fingerprint"), str) else None,
            reason=raw.get("reason") if isinstance(raw.get("reason"), str) else None,
        )


def failure_count_of(status: Mapping[str, Any] | None) -> int:
    """``status.lastOperation.failureCount`` (0 when absent)."""
    raw = (status or {}).get("lastOperation")
    count = raw.get("failureCount") if isinstance(raw, Mapping) else 0
    return count if isinstance(count, int) and count > 0 else 0


ROUTE_ACCEPTED = "Accepted"
ROUTE_PENDING = "Pending"
ROUTE_REFUSED = "Refused"


@dataclass(frozen=True)
class RouteStatus:
    """Whether the gateway serves the job's route, in the gateway's own words."""

    state: str  # ROUTE_ACCEPTED | ROUTE_PENDING | ROUTE_REFUSED
    message: str
    reason: str = ""  # the gateway's CamelCase reason, for a refusal

    @property
    def accepted(self) -> bool:
        return self.state == ROUTE_ACCEPTED


def _conditions_by_type(raw: object) -> dict[str, Mapping[str, Any]]:
    if not isinstance(raw, list):
        return {}
    return {str(c["type"]): c for c in raw if isinstance(c, Mapping) and isinstance(c.get("type"), str)}


def _judge(
    what: str, conditions: Mapping[str, Mapping[str, Any]], wanted: Sequence[str], generation: object,
    refusals: Sequence[str] = (),
) -> RouteStatus | None:
    """None when every wanted condition is True for the current generation.

    A condition the controller has not written yet, or wrote for an older
    generation, or left with reason Pending, means "not yet"; any other False
    (or a true refusal condition such as Conflicted) is the gateway's no.
    """
    for kind in refusals:
        found = conditions.get(kind)
        if found is not None and found.get("status") == "True":
            return RouteStatus(ROUTE_REFUSED, f"{what}: {kind}: {found.get('reason')}: {found.get('message', '')}",
                               str(found.get("reason") or kind))
    for kind in wanted:
        found = conditions.get(kind)
        current = (found is not None and isinstance(generation, int)
                   and found.get("observedGeneration") in (None, generation))
        if not current or found is None:
            return RouteStatus(ROUTE_PENDING, f"waiting for the gateway to report {what} {kind}")
        if found.get("status") != "True":
            reason = str(found.get("reason") or "Unknown")
            if reason == "Pending":
                return RouteStatus(ROUTE_PENDING, f"{what} is not {kind} yet: {found.get('message', '')}")
            return RouteStatus(ROUTE_REFUSED, f"{what} not {kind}: {reason}: {found.get('message', '')}", reason)
    return None


def _route_parent_status(route: Mapping[str, Any], gateway_name: str) -> Mapping[str, Any] | None:
    namespace = (route.get("metadata") or {}).get("namespace")
    for parent in (route.get("status") or {}).get("parents") or []:
        ref = parent.get("parentRef") if isinstance(parent, Mapping) else None
        if (isinstance(ref, Mapping) and ref.get("name") == gateway_name
                and ref.get("namespace") in (None, namespace) and ref.get("kind", "Gateway") == "Gateway"):
            return parent
    return None


def gateway_route_status(
    gateway: Mapping[str, Any] | None, route: Mapping[str, Any] | None, listener: str
) -> RouteStatus:
    """The gateway's verdict on a job's Gateway (its TLS listener) and GRPCRoute.

    Listener first (its conditions say why, e.g. a missing certificate or an
    unknown port), then the Gateway (Accepted, Programmed), then the route's
    status for that parent (Accepted, ResolvedRefs).
    """
    if gateway is None:
        return RouteStatus(ROUTE_PENDING, "waiting for the job's Gateway to exist")
    if route is None:
        return RouteStatus(ROUTE_PENDING, "waiting for the job's GRPCRoute to exist")
    gateway_name = str((gateway.get("metadata") or {}).get("name"))
    gateway_generation = (gateway.get("metadata") or {}).get("generation")
    status = gateway.get("status") or {}
    for entry in status.get("listeners") or []:
        if isinstance(entry, Mapping) and entry.get("name") == listener:
            verdict = _judge(f"Gateway {gateway_name} listener {listener}",
                             _conditions_by_type(entry.get("conditions")),
                             ("Accepted", "ResolvedRefs", "Programmed"), gateway_generation, ("Conflicted",))
            if verdict is not None:
                return verdict
    verdict = _judge(f"Gateway {gateway_name}", _conditions_by_type(status.get("conditions")),
                     ("Accepted", "Programmed"), gateway_generation)
    if verdict is not None:
        return verdict
    route_name = (route.get("metadata") or {}).get("name")
    parent = _route_parent_status(route, gateway_name)
    if parent is None:
        return RouteStatus(ROUTE_PENDING, f"waiting for the gateway to report GRPCRoute {route_name}")
    verdict = _judge(f"GRPCRoute {route_name}", _conditions_by_type(parent.get("conditions")),
                     ("Accepted", "ResolvedRefs"), (route.get("metadata") or {}).get("generation"))
    if verdict is not None:
        return verdict
    return RouteStatus(ROUTE_ACCEPTED, f"GRPCRoute {route_name} is accepted by Gateway {gateway_name}")


def pod_failure_text(pod: Mapping[str, Any]) -> str | None:
    """Why a Pod's containers ended unsuccessfully: exit code, reason and the
    container's termination message (what it wrote to /dev/termination-log,
    e.g. a party's TLS verification error), for the job's condition."""
    status = pod.get("status") or {}
    parts = []
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if not terminated or terminated.get("exitCode") == 0:
            continue
        text = f"container {container.get('name')} exited with code {terminated.get('exitCode')}"
        if terminated.get("reason"):
            text += f" ({terminated['reason']})"
        message = " ".join(str(terminated.get("message") or "").split())
        parts.append(f"{text}: {message}" if message else text)
    if not parts and status.get("reason"):  # e.g. Evicted, DeadlineExceeded: the Pod's own reason
        parts.append(f"{status['reason']}: {status.get('message') or ''}".rstrip(": "))
    return "; ".join(parts) or None


@dataclass(frozen=True)
class Observation:
    """What the reconciler saw and did in one pass."""

    generation: int
    now: str
    problems: tuple[str, ...] = ()  # "field: message" lines; empty when the spec is valid
    # Why ``problems`` stall the job: InvalidSpec, InvalidPodTemplate or NameConflict.
    stall_reason: str = REASON_INVALID_SPEC
    in_progress: str | None = None  # kind of the operation starting now ("up", "destroy")
    operation: Operation | None = None  # the operation this pass ran; None keeps the previous
    failure_count: int = 0
    next_retry_time: str | None = None
    pod_phase: str | None = None
    pod_name: str | None = None
    pod_failure: str | None = None  # why a Failed Pod's containers ended (see pod_failure_text)
    host: str | None = None
    outputs: Mapping[str, Any] | None = None  # None keeps the previous outputs
    applied: Mapping[str, Any] | None = None  # the gating record; None keeps the previous
    deleting: bool = False
    route: RouteStatus | None = None  # None: the transport has no acceptance to wait for (Ingress)
    # (reason, message) of a tenancy policy a job applied before it breaks (see POLICY_VIOLATION).
    policy_warning: tuple[str, str] | None = None


@dataclass(frozen=True)
class _Condition:
    status: str
    reason: str
    message: str


def _condition(
    kind: str, wanted: _Condition, previous: Sequence[Any], generation: int, now: str
) -> dict[str, Any]:
    """A condition whose lastTransitionTime moves only when its status flips."""
    transition = now
    for old in previous:
        if isinstance(old, Mapping) and old.get("type") == kind:
            if old.get("status") == wanted.status and old.get("lastTransitionTime"):
                transition = str(old["lastTransitionTime"])
            break
    return {
        "type": kind,
        "status": wanted.status,
        "reason": wanted.reason,
        "message": truncate(wanted.message, MAX_CONDITION_MESSAGE),
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }


def _previous_condition(previous: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for old in previous.get("conditions") or []:
        if isinstance(old, Mapping) and old.get("type") == kind:
            return old
    return None


def _retry_text(obs: Observation) -> str:
    return f"; next attempt at {obs.next_retry_time}" if obs.next_retry_time else ""


def _pod_conditions(obs: Observation, host: str) -> tuple[_Condition, _Condition, str]:
    phase = obs.pod_phase
    pod = obs.pod_name or "the job's pod"
    reason = POD_REASONS.get(phase, "PodUnknown")
    if phase == "Running":
        where = f"; reachable at {host}" if host else ""
        return (_Condition("True", reason, f"pod {pod} is Running{where}"),
                _Condition("False", REASON_RECONCILED, "the job's stack is up to date"),
                f"pod {pod} is Running{where}")
    if phase == "Succeeded":
        return (_Condition("True", reason, f"pod {pod} completed successfully"),
                _Condition("False", REASON_RECONCILED, "the job's stack is up to date"),
                f"pod {pod} completed successfully")
    if phase == "Failed":
        why = f": {obs.pod_failure}" if obs.pod_failure else ""
        text = f"pod {pod} failed{why}; read its logs (kubectl logs {pod})"
        return (_Condition("False", reason, text),
                _Condition("False", REASON_RECONCILED, "the job's stack is up to date"), text)
    if phase == "Unknown":
        text = f"the state of pod {pod} is unknown (its node may be unreachable)"
        return (_Condition("False", reason, text),
                _Condition("False", REASON_RECONCILED, "the job's stack is up to date"), text)
    text = f"pod {pod} is Pending" if phase == "Pending" else f"waiting for pod {pod} to appear"
    return (_Condition("False", reason, text), _Condition("True", REASON_WAITING_FOR_POD, text), text)


def _decide(
    obs: Observation, last: Operation | None, previous: Mapping[str, Any]
) -> tuple[_Condition, _Condition, _Condition, str]:
    """(Ready, Reconciling, Stalled, message) for one observation."""
    not_stalled = _Condition("False", REASON_SPEC_VALID, "the spec is valid")
    host = obs.host or ""
    if obs.deleting:
        ready = _Condition("False", REASON_DELETING, "the job is being deleted")
        if obs.problems:
            # Destroying the stack now would delete by name an object that is not the job's.
            detail = "; ".join(obs.problems)
            text = f"the stack is not destroyed while a name it recorded is held by another object: {detail}"
            return (ready, _Condition("True", obs.stall_reason, text), _Condition("True", obs.stall_reason, text),
                    truncate(f"deletion waits: {obs.problems[0]}", MAX_MESSAGE))
        if last is not None and last.kind == "destroy" and last.failed and obs.in_progress is None:
            error = truncate(last.error or "unknown error", MAX_CONDITION_MESSAGE - 80)
            text = f"destroying the stack failed (attempt {obs.failure_count}): {error}{_retry_text(obs)}"
            return ready, _Condition("True", last.reason or REASON_DESTROY_FAILED, text), not_stalled, text
        text = "destroying the job's stack"
        return ready, _Condition("True", REASON_DESTROYING, text), not_stalled, text
    if obs.problems and obs.stall_reason == REASON_NAME_CONFLICT:
        detail = "; ".join(obs.problems)
        stalled = _Condition("True", REASON_NAME_CONFLICT,
                             f"name conflict: {detail}; checked again at every resync and on every spec change")
        more = f" (+{len(obs.problems) - 1} more)" if len(obs.problems) > 1 else ""
        return (_Condition("False", REASON_NAME_CONFLICT, "a name the job needs is taken; see the Stalled condition"),
                _Condition("False", REASON_NAME_CONFLICT, "waiting for the name to be free"), stalled,
                f"name conflict: {obs.problems[0]}{more}")
    if obs.problems:
        reason = obs.stall_reason
        detail = "; ".join(obs.problems)
        what = "invalid spec" if reason in (REASON_INVALID_SPEC, REASON_INVALID_POD_TEMPLATE) else \
            f"refused by the cluster's policy ({reason})"
        stalled = _Condition("True", reason, f"{what}: {detail}; fix the job and apply it again")
        more = f" (+{len(obs.problems) - 1} more)" if len(obs.problems) > 1 else ""
        message = f"{what}: {obs.problems[0]}{more}"
        return (_Condition("False", reason, "the spec is invalid; see the Stalled condition"),
                _Condition("False", reason, "waiting for a corrected spec"), stalled, message)
    if obs.in_progress is not None:
        text = f"applying the job's stack ({obs.in_progress})"
        # Ready is replaced by the previous Ready condition in compute_status when there is one.
        ready = _Condition("False", REASON_STACK_UPDATING, text)
        return ready, _Condition("True", REASON_STACK_UPDATING, text), not_stalled, text
    if last is not None and last.kind == "up" and last.failed:
        error = truncate(last.error or "unknown error", MAX_CONDITION_MESSAGE - 80)
        ready = _Condition("False", last.reason or REASON_STACK_UPDATE_FAILED, f"the stack update failed: {error}")
        retry = _Condition(
            "True", REASON_BACKOFF, f"attempt {obs.failure_count} failed{_retry_text(obs)}"
        )
        message = f"stack update failed (attempt {obs.failure_count}): {error}"
        return ready, retry, not_stalled, message
    if last is None or last.kind != "up" or not last.succeeded:
        text = "the job's stack has not been applied yet"
        return (_Condition("False", REASON_PROGRESSING, text), _Condition("True", REASON_PROGRESSING, text),
                not_stalled, text)
    ready, reconciling, message = _pod_conditions(obs, host)
    if obs.route is not None and not obs.route.accepted and obs.pod_phase == "Running":
        # The Pod serves, but callers cannot reach it until the gateway takes the route.
        if obs.route.state == ROUTE_REFUSED:
            text = f"the gateway refused the job's route: {obs.route.message}"
            return (_Condition("False", REASON_ROUTE_REFUSED, text),
                    _Condition("False", REASON_RECONCILED, "the job's stack is up to date"), not_stalled, text)
        text = f"pod is Running; {obs.route.message}"
        return (_Condition("False", REASON_ROUTE_PENDING, text),
                _Condition("True", REASON_ROUTE_PENDING, text), not_stalled, text)
    return ready, reconciling, not_stalled, message


def compute_status(previous: Mapping[str, Any] | None, obs: Observation) -> dict[str, Any]:
    """The new ``status`` for an observation, given the previous one."""
    previous = previous or {}
    last = obs.operation or (None if obs.in_progress else Operation.from_status(previous.get("lastOperation")))
    ready, reconciling, stalled, message = _decide(obs, last, previous)
    old_conditions = previous.get("conditions") or []
    conditions = [
        _condition(kind, wanted, old_conditions, obs.generation, obs.now)
        for kind, wanted in ((READY, ready), (RECONCILING, reconciling), (STALLED, stalled))
    ]
    observed_generation = obs.generation
    applying = obs.in_progress is not None and not obs.deleting and not obs.problems
    old_ready = _previous_condition(previous, READY)
    if applying and old_ready is not None:
        # While the new generation is being applied, Ready still describes the previous one:
        # keep it as it was (with its observedGeneration), and so does status.observedGeneration,
        # so that "observedGeneration == generation and Ready" means the new spec is in effect.
        conditions[0] = dict(old_ready)
        if isinstance(previous.get("observedGeneration"), int):
            observed_generation = previous["observedGeneration"]
    if obs.policy_warning is not None and not obs.problems:
        reason, text = obs.policy_warning
        conditions.append(_condition(POLICY_VIOLATION, _Condition(
            "True", reason, f"the job breaks the cluster's policy and keeps running only because it was "
            f"applied before: {text}; its next spec change must comply"), old_conditions, obs.generation, obs.now))
    status: dict[str, Any] = {
        "phase": obs.pod_phase if obs.pod_phase in PHASES else "Pending",
        "message": truncate(message, MAX_MESSAGE),
        "observedGeneration": observed_generation,
        "conditions": conditions,
    }
    if obs.in_progress is not None:
        status["lastOperation"] = Operation(obs.in_progress, RESULT_IN_PROGRESS, obs.now).to_status(
            obs.failure_count, None)
    elif last is not None:
        status["lastOperation"] = last.to_status(obs.failure_count, obs.next_retry_time)
    outputs = obs.outputs if obs.outputs is not None else previous.get("outputs")
    if outputs:
        status["outputs"] = dict(outputs)
    applied = obs.applied if obs.applied is not None else previous.get("applied")
    if applied:
        status["applied"] = dict(applied)
    return status


def condition(status: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    """The condition of type ``kind`` in a status (None when absent)."""
    return _previous_condition(status or {}, kind)


def is_ready(status: Mapping[str, Any] | None) -> bool:
    found = condition(status, READY)
    return found is not None and found.get("status") == "True"


def outputs_for(host: str, namespace: str, names: Any, has_trust: bool, transport: str = "ingress") -> dict[str, str]:
    """The names the job's stack declares, for ``status.outputs`` (never key material).

    ``names`` is a :class:`iflearner.desired.JobNames`; ``transport`` says
    which route objects exist (an Ingress, or a Gateway and a GRPCRoute).
    """
    outputs = {
        "endpoint": host,
        "namespace": namespace,
        "pod": names.pod,
        "service": names.service,
        "tlsSecret": names.tls_secret,
    }
    if transport == "gateway":
        outputs.update(transport=transport, gateway=names.gateway, grpcRoute=names.route)
    else:
        outputs["ingress"] = names.ingress
    if has_trust:
        outputs["trustConfigMap"] = names.trust_configmap
    return outputs


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """An RFC 7386 merge patch turning ``old`` into ``new`` (removed keys become null)."""
    old = old or {}
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = value
    return patch
