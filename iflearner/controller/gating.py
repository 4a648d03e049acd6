"""Whether a reconcile needs to run ``pulumi up`` at all.

A Pulumi run costs seconds; most reconciles (resyncs, Pod status updates)
change nothing. ``up`` runs only when:

(a) the fingerprint of the desired resources (every manifest the stack
    declares plus the cluster settings, the program revision, and digests of
    what the stack reads from the operator namespace: the CA certificate and
    the trust bundle) differs from the one recorded after the last
    successful ``up``;
(b) an owned object is missing from the informer cache;
(c) an owned object changed behind the operator's back: its
    resourceVersion differs from the one recorded after the last ``up``
    (for the Pod its uid, since kubelets and kwok update Pod status all the
    time while a replaced Pod gets a new uid; for objects with a
    ``metadata.generation`` such as the Ingress, uid and generation, so that
    status written by an ingress controller does not count);
(d) the last ``up`` did not succeed (failed, or was interrupted);
(e) the cluster DNS does not serve the job's records as declared: a zone-file key
    missing from (or changed in) the shared records ConfigMaps
    (:mod:`iflearner.controller.dnsrecords`);
(f) the job's stack is missing from the state backend (:mod:`iflearner.controller.inventory`).

The reconciler adds one more reason, a certificate due for renewal (see
:mod:`iflearner.controller.renewal`). After a successful ``up`` the reconciler records
``{"fingerprint": ..., "objects": {"Kind/name": rv-or-uid}}`` in
``status.applied``. Everything here is pure.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iflearner import __version__
from iflearner.controller.status import Operation, parse_time, rfc3339
from iflearner.controller.workqueue import exponential_backoff
from iflearner.desired import ClusterSettings, DesiredResources

# Bump when the program's behaviour changes for the same desired resources,
# so that every job's stack is applied once more after an upgrade.
# 2: the signer issues certificates; the stack no longer reads the CA Secret, and
#    the one run after the upgrade removes the CA key from every job's state.
PROGRAM_REVISION = "2"

ObjectRef = tuple[str, str, str, str]  # (apiVersion, kind, namespace, name)


@dataclass(frozen=True)
class Decision:
    """Whether to run ``up``, why (for logs), and whether to refresh the stack's state first.

    A refresh reads every resource back from the cluster, so that ``up``
    recreates objects deleted or changed behind Pulumi's back; it is needed
    only when the cluster may have drifted from the state (an owned object
    missing or changed, a failed or interrupted run), not for a spec change.
    """

    should_run: bool
    reason: str
    refresh: bool = False


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def fingerprint(
    desired: DesiredResources, settings: ClusterSettings, inputs: Mapping[str, str | None] | None = None
) -> str:
    """A stable hash of everything the stack declares, the settings it uses, and ``inputs``:
    digests of what it reads from the cluster (the CA, the trust bundle; see
    :mod:`iflearner.controller.clusterinputs`)."""
    document = {
        "revision": PROGRAM_REVISION,
        "version": __version__,
        "desired": _canonical(desired),
        "settings": _canonical(settings),
        "inputs": dict(sorted((inputs or {}).items())),
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def object_key(kind: str, name: str) -> str:
    """Key of an owned object in the applied record: 'Kind/name'."""
    return f"{kind}/{name}"


def version_of(kind: str, obj: Mapping[str, Any] | None) -> str | None:
    """What identifies the state of an owned object.

    The Pod: its uid (its status changes all the time; a replaced Pod has a
    new uid). Objects with ``metadata.generation`` (the Ingress): uid and
    generation, which move on spec changes but not when an ingress
    controller writes the load-balancer status. Others (Service, Secret,
    ConfigMap): the resourceVersion.
    """
    if obj is None:
        return None
    metadata = obj.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return None  # going away: as good as missing
    if kind == "Pod":
        value = metadata.get("uid")
    elif metadata.get("generation") is not None and metadata.get("uid"):
        value = f"{metadata['uid']}/{metadata['generation']}"
    else:
        value = metadata.get("resourceVersion")
    return str(value) if value else None


def observe(
    refs: Sequence[ObjectRef], lookup: Callable[[ObjectRef], Mapping[str, Any] | None]
) -> dict[str, str | None]:
    """Versions of the owned objects as ``lookup`` (a cache or the API) sees them."""
    return {object_key(ref[1], ref[3]): version_of(ref[1], lookup(ref)) for ref in refs}


def applied_record(fingerprint_value: str, versions: Mapping[str, str | None], host: str | None = None,
                   records: Mapping[str, str] | None = None, template: str | None = None) -> dict[str, Any]:
    """What ``status.applied`` holds after a successful ``up``: the fingerprint and the owned
    objects' versions (gating); the host the job serves and the DNS records it publishes (what
    it holds against other namespaces: iflearner.api.tenancy); its Pod template's digest."""
    record: dict[str, Any] = {
        "fingerprint": fingerprint_value,
        "objects": {key: value for key, value in sorted(versions.items()) if value is not None},
    }
    if host is not None:
        record["host"] = host
    if records is not None:
        record["records"] = dict(sorted(records.items()))
    if template is not None:
        record["template"] = template
    return record


def decide(
    fingerprint_value: str,
    applied: Mapping[str, Any] | None,
    observed: Mapping[str, str | None],
    last_operation: Operation | None,
) -> Decision:
    """Run ``up`` or not, with the first reason that applies."""
    if last_operation is not None and last_operation.kind == "up" and not last_operation.succeeded:
        state = "was interrupted" if last_operation.result == "InProgress" else "failed"
        return Decision(True, f"the last up {state}", refresh=True)
    if not applied or not isinstance(applied.get("fingerprint"), str):
        return Decision(True, "the stack has not been applied yet")
    if applied["fingerprint"] != fingerprint_value:
        return Decision(True, "the spec, the operator's settings, the CA or the trust bundle changed")
    recorded = applied.get("objects") if isinstance(applied.get("objects"), Mapping) else {}
    for key in sorted(observed):
        current = observed[key]
        if current is None:
            return Decision(True, f"{key} is missing", refresh=True)
        if key not in recorded:
            return Decision(True, f"{key} was not recorded after the last up", refresh=True)
        if str(recorded[key]) != current:
            return Decision(True, f"{key} was changed outside the operator", refresh=True)
    return Decision(False, "up to date")


def with_record_problem(decision: Decision, problem: str | None) -> Decision:
    """Gating's decision, or a run with a refresh when nothing else asks for one but the job's DNS
    records are not served as declared (``problem``: why). The refresh lets ``up`` see the records
    patch's keys as the cluster has them, so that it applies them again."""
    if decision.should_run or problem is None:
        return decision
    return Decision(True, problem, refresh=True)


def with_lost_stack(decision: Decision, lost: bool, reason: str) -> Decision:
    """Gating's decision, or a run (no refresh: an empty stack has nothing to read back) when
    nothing else asks for one but the job's stack was lost from the state backend."""
    if decision.should_run or not lost:
        return decision
    return Decision(True, reason)


def retry_time(
    last_operation: Operation | None,
    failure_count: int,
    fingerprint_value: str,
    base: float = 1.0,
    cap: float = 300.0,
) -> datetime.datetime | None:
    """When a failed ``up`` of this same fingerprint may be retried (None: no wait).

    The wait derives from ``status`` (the failure count and the failed
    attempt's time), so a restarted controller keeps backing off instead of
    hammering a broken stack. A changed spec (new fingerprint) retries at once.
    """
    if last_operation is None or not last_operation.failed or failure_count <= 0:
        return None
    if last_operation.fingerprint is not None and last_operation.fingerprint != fingerprint_value:
        return None
    failed_at = parse_time(last_operation.time)
    if failed_at is None:
        return None
    return failed_at + datetime.timedelta(seconds=exponential_backoff(failure_count, base, cap))


def retry_time_text(moment: datetime.datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None
