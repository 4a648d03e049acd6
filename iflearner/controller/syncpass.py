"""One pass over a valid job, decided by pure functions: what to do, and the status it ends with.

The reconciler gathers a :class:`JobView` (everything the pass reads before it decides), asks
:func:`plan` for the step, acts (preflight, signer, ``pulumi up``), gathers what the caches show
afterwards (:class:`Afterwards`), and asks :func:`conclude` for the whole new status and when to
look again. It parses the previous status once, into the view; nothing here does I/O or reads a
clock.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iflearner.certrenewal import CertificateTimes
from iflearner.controller import gating, mountedtrust, renewal
from iflearner.controller.carotation import IssuerChoice
from iflearner.controller.status import (
    RESULT_FAILED,
    RESULT_SUCCEEDED,
    STALLED,
    Observation,
    Operation,
    RouteStatus,
    compute_status,
    condition,
    rfc3339,
)
from iflearner.controller.workqueue import exponential_backoff
from iflearner.desired import DesiredResources
from iflearner.stackrunner import StackResult

# A backoff's requeue lands a little after its retry time, never just before it.
BACKOFF_MARGIN = 0.05


@dataclass(frozen=True)
class TrustView:
    """For a client job: which CAs its Pod trusts (``status.trust``) and what the bundle holds now."""

    previous: Mapping[str, Any] | None  # status.trust as the pass found it
    bundle: Mapping[str, Any] | None  # the cluster trust bundle's CAs now (what an up would copy)
    pod_uid_before: str | None  # the job's Pod before the pass acted


@dataclass(frozen=True)
class JobView:
    """What one pass over a valid job read before deciding."""

    desired: DesiredResources
    generation: int
    host: str
    previous: Mapping[str, Any]  # the status the pass starts from
    now: datetime.datetime
    fingerprint: str
    gate: gating.Decision  # gating's decision, a certificate due for renewal included
    last: Operation | None  # status.lastOperation
    failures: int  # status.lastOperation.failureCount
    served: CertificateTimes | None  # the certificate the job's TLS Secret serves
    issuer: IssuerChoice
    trust: TrustView | None  # None: not a client, or the operator does not read the bundle
    outputs: Mapping[str, Any]
    renewal_fraction: float
    # (reason, message): a tenancy policy this job, applied before it, breaks (status.POLICY_VIOLATION).
    policy_warning: tuple[str, str] | None = None
    template: str = ""  # template_digest of the job's Pod template

    def observation(self, **fields: Any) -> Observation:
        """An :class:`Observation` of this job with the pass's own ``fields``."""
        return Observation(generation=self.generation, pod_name=self.desired.names.pod, host=self.host,
                           outputs=self.outputs, policy_warning=self.policy_warning, **fields)


class Step(enum.Enum):
    IN_SYNC = "in sync"  # nothing changed: no Pulumi run
    BACKOFF = "backoff"  # a failed up waits for its retry time
    UPDATE = "update"  # preflight, then the signer and up


@dataclass(frozen=True)
class Plan:
    step: Step
    retry_at: datetime.datetime | None = None  # BACKOFF: when the next attempt may run
    requeue_after: float | None = None


def applied_before(previous: Mapping[str, Any], generation: int) -> bool:
    """Whether this generation of the job was applied already (before a policy it breaks existed):
    such a job keeps running with a warning until its spec changes, never stalled by an upgrade.
    A generation that was stalled (``observedGeneration`` moves then too) was never applied."""
    stalled = condition(previous, STALLED)
    if stalled is not None and stalled.get("status") == "True" and stalled.get("observedGeneration") == generation:
        return False
    return bool(previous.get("applied")) and previous.get("observedGeneration") == generation


def template_digest(template: Mapping[str, Any]) -> str:
    """A stable digest of a job's Pod template (``status.applied.template``)."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def legacy_token_mount(pod: Mapping[str, Any] | None, previous: Mapping[str, Any], generation: int,
                       template: str) -> bool:
    """Whether the job's running Pod predates ``automountServiceAccountToken: false`` (its spec
    leaves the field out) and was made from the template the job has now: keep it as it is (the
    field is immutable: a change would replace a training Pod at an operator upgrade, or at an
    edit of the job that does not touch its template). A status from before template digests:
    this generation was applied with that Pod."""
    if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if "automountServiceAccountToken" in (pod.get("spec") or {}):
        return False
    applied = previous.get("applied")
    if not isinstance(applied, Mapping):
        return False
    if applied.get("template") is not None:
        return bool(applied["template"] == template)
    return applied_before(previous, generation)


def plan(view: JobView) -> Plan:
    """The pass's step: skip, wait for the backoff of a failed up, or update."""
    if not view.gate.should_run:
        return Plan(Step.IN_SYNC)
    retry_at = gating.retry_time(view.last, view.failures, view.fingerprint)
    if retry_at is not None and retry_at > view.now:
        return Plan(Step.BACKOFF, retry_at, (retry_at - view.now).total_seconds() + BACKOFF_MARGIN)
    return Plan(Step.UPDATE)


def starting_status(view: JobView, pod_phase: str | None) -> dict[str, Any]:
    """The status written as the update starts (``lastOperation`` in progress)."""
    status = compute_status(view.previous, view.observation(
        now=rfc3339(view.now), in_progress="up", failure_count=view.failures, pod_phase=pod_phase))
    renewal.with_certificate(status, view.served, view.renewal_fraction)
    return mountedtrust.with_trust(status, view.trust.previous if view.trust is not None else None)


@dataclass(frozen=True)
class UpdateOutcome:
    """What an update did, in the terms the status records."""

    operation: Operation
    failures: int
    applied: Mapping[str, Any] | None  # the gating record after a success
    trust_applied: Mapping[str, Any] | None  # the bundle a success copied into the job's ConfigMap
    retry_at: datetime.datetime | None  # after a failure: when the next attempt may run
    requeue_after: float | None

    @property
    def succeeded(self) -> bool:
        return self.operation.succeeded


def outcome_of(view: JobView, result: StackResult, finished: datetime.datetime,
               versions: Mapping[str, str | None] | None) -> UpdateOutcome:
    """The outcome of ``up``; ``versions``: the owned objects' versions after a successful one."""
    if result.succeeded:
        operation = Operation("up", RESULT_SUCCEEDED, rfc3339(finished), result.changes, seconds=result.seconds,
                              fingerprint=view.fingerprint)
        applied = gating.applied_record(view.fingerprint, versions or {}, host=view.host,
                                        records={r.fqdn: r.address for r in view.desired.dns_records},
                                        template=view.template)
        return UpdateOutcome(operation, 0, applied,
                             view.trust.bundle if view.trust is not None else None, None, None)
    failures = view.failures + 1
    operation = Operation("up", RESULT_FAILED, rfc3339(finished), result.changes, error=result.error,
                          seconds=result.seconds, fingerprint=view.fingerprint, reason=result.reason)
    return UpdateOutcome(operation, failures, None, None, gating.retry_time(operation, failures, view.fingerprint),
                         exponential_backoff(failures))


@dataclass(frozen=True)
class Afterwards:
    """What the caches show once the pass has acted."""

    now: datetime.datetime
    pod_phase: str | None
    pod_failure: str | None
    pod_uid: str | None
    route: RouteStatus | None
    served: CertificateTimes | None


def conclude(view: JobView, chosen: Plan, outcome: UpdateOutcome | None, seen: Afterwards,
             starting: Mapping[str, Any] | None) -> tuple[dict[str, Any], float | None]:
    """The pass's whole new status and when to look again (seconds; None: only on events).

    ``starting``: the status written as the update started (the one the new status follows)."""
    if outcome is not None:
        failures, retry_at, requeue = outcome.failures, outcome.retry_at, outcome.requeue_after
    else:
        failures, retry_at, requeue = view.failures, chosen.retry_at, chosen.requeue_after
    status = compute_status(starting if starting is not None else view.previous, view.observation(
        now=rfc3339(seen.now), operation=outcome.operation if outcome is not None else None,
        failure_count=failures, next_retry_time=gating.retry_time_text(retry_at) if requeue is not None else None,
        pod_phase=seen.pod_phase, applied=outcome.applied if outcome is not None else None,
        pod_failure=seen.pod_failure, route=seen.route))
    renewal.with_certificate(status, seen.served, view.renewal_fraction)
    requeue = renewal.requeue_after(requeue, seen.served, seen.now, view.renewal_fraction)
    if view.issuer.switch_at is not None:  # a rotation's window ends: issuing switches then
        until_switch = max(0.0, (view.issuer.switch_at - seen.now).total_seconds()) + renewal.REQUEUE_MARGIN
        requeue = until_switch if requeue is None else min(requeue, until_switch)
    if view.trust is not None:
        mountedtrust.with_trust(status, mountedtrust.next_trust_status(
            view.trust.previous, outcome.trust_applied if outcome is not None else None,
            view.trust.pod_uid_before, seen.pod_uid))
    return status, requeue
