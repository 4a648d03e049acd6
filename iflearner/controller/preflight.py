"""Checks a job must pass before its stack runs: it owns every name it would take, and the
API server accepts the Pod it would create.

Both turn an error that Pulumi would otherwise hit on every retry (or worse,
not hit at all) into a ``Stalled`` condition that names what to fix:

- **No adoption.** The provider build in use creates objects by server-side
  apply, which upserts: a user's own Service or Secret that happens to have a
  job's name would be taken over by the job's stack and deleted with it.
  Before an ``up``, the controller reads every object the stack declares from
  the API server (not from its informers: they see only labelled objects) and
  :func:`name_conflicts` decides which ones the job does not own.
- **The API server's own rules.** The Pod carries the user's template, which
  the CRD cannot check (it preserves unknown fields). A server-side dry-run
  of the Pod (:func:`dry_run_pod`) applies every rule the real request
  would; :func:`rejection_problems` turns the refusal into problems that name
  the job's field. The dry-run is a server-side *apply*, as the stack's own
  request is: a plain create accepts things apply refuses (duplicate ports or
  env names, unknown fields), which would fail every ``up``.

Ownership is decided by the ``job-uid`` label the stack puts on every object
(:data:`iflearner.desired.LABEL_JOB_UID`): a job's uid is unique and not
predictable, so a foreign object cannot carry it by accident. Objects made
before that label existed are recognised by the job's other labels *and* by
the job's own ``status.applied`` record of having applied them, so upgrading
the operator stalls no running job; the next ``up`` adds the label.

Everything here is pure except :func:`dry_run_pod`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from iflearner.controller.kubeapi import KubeApi, object_path
from iflearner.desired import LABEL_JOB_NAME, LABEL_JOB_NAMESPACE, LABEL_JOB_UID, LABEL_MANAGED_BY
from iflearner.job import Problem

ObjectRef = tuple[str, str, str, str]  # (apiVersion, kind, namespace, name)

# The labels that marked a job's objects before the uid label existed.
_LEGACY_LABELS = (LABEL_MANAGED_BY, LABEL_JOB_NAME, LABEL_JOB_NAMESPACE)
MAX_CAUSES = 8
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML
PROBE_MANAGER = "iflearner-preflight"
PROBE_SUFFIX = "preflight"


@dataclass(frozen=True)
class NameConflict:
    """An object that holds one of the job's names and is not the job's."""

    kind: str
    namespace: str
    name: str
    holder: str  # who holds it, as far as its labels say

    @property
    def object(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def problem(self) -> Problem:
        """The conflict as a problem on ``metadata.name`` (the job's name decides its objects' names)."""
        return Problem(
            "metadata.name",
            f"{self.object} already exists and is not this job's ({self.holder}); the job will not take it "
            "over: delete or rename that object, or give the job another name",
        )


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def owner_of(
    obj: Mapping[str, Any],
    job_uid: str,
    job_labels: Mapping[str, str],
    applied_keys: frozenset[str],
    key: str,
) -> str | None:
    """None when the job owns ``obj``; otherwise who holds it, for the message.

    ``key`` is the object's 'Kind/name' in the job's ``status.applied`` record.
    """
    labels = _labels(obj)
    uid = labels.get(LABEL_JOB_UID)
    if uid is not None:
        if uid == job_labels.get(LABEL_JOB_UID, job_uid):  # the label value, as the stack wrote it
            return None
        return f"it belongs to another IflearnerJob (uid {uid}), perhaps an earlier job of the same name"
    if all(labels.get(k) == job_labels.get(k) for k in _LEGACY_LABELS) and key in applied_keys:
        return None  # made by this job before the uid label existed; the next up labels it
    if labels.get(LABEL_MANAGED_BY) == job_labels.get(LABEL_MANAGED_BY):
        return "it has the operator's labels but no record says this job created it"
    return "it was not created by this job"


def applied_keys_of(status: Mapping[str, Any] | None) -> frozenset[str]:
    """The 'Kind/name' keys the job's last successful ``up`` recorded in ``status.applied``."""
    applied = (status or {}).get("applied")
    objects = applied.get("objects") if isinstance(applied, Mapping) else None
    return frozenset(str(k) for k in objects) if isinstance(objects, Mapping) else frozenset()


def name_conflicts(
    observed: Sequence[tuple[ObjectRef, Mapping[str, Any] | None]],
    job_uid: str,
    job_labels: Mapping[str, str],
    applied_keys: frozenset[str],
) -> tuple[NameConflict, ...]:
    """The observed objects that hold one of the job's names without being the job's.

    ``observed`` pairs each object the stack declares with what the API server
    has under that name (None: the name is free).
    """
    conflicts = []
    for (_, kind, namespace, name), obj in observed:
        if obj is None:
            continue
        holder = owner_of(obj, job_uid, job_labels, applied_keys, f"{kind}/{name}")
        if holder is not None:
            conflicts.append(NameConflict(kind, namespace, name, holder))
    return tuple(conflicts)


# --- the API server's validation of the Pod -------------------------------------------------

_POD_TO_JOB = (
    ("spec", "spec.template.spec"),
    ("metadata.labels", "spec.template.metadata.labels"),
    ("metadata.annotations", "spec.template.metadata.annotations"),
    ("metadata.name", "metadata.name"),
    ("metadata.namespace", "metadata.namespace"),
)
# A body that does not decode: "... Go struct field Container.spec.containers.volumeMounts of type ..."
_GO_FIELD_RE = re.compile(r"Go struct field [A-Za-z0-9_]+\.([A-Za-z0-9_.\[\]]+) of type")
# Server-side apply refusing the object's shape (answered with HTTP 500):
# 'failed to create typed patch object (ns/x; /v1, Kind=Pod): .spec.containers[name="c"].ports: expected list, ...'
_APPLY_SHAPE_RE = re.compile(r"failed to create typed patch object \([^)]*\): \.([^:\s]+): ")
# ... or its values: 'failed to convert new object (...) to proper version: ...: cannot convert float64 to int32'
_APPLY_PREFIXES = ("failed to create typed patch object", "failed to convert new object")
_UNKNOWN = "spec.template"


def job_field(pod_field: str | None) -> str:
    """The job's field that becomes ``pod_field`` of its Pod ('spec.x' -> 'spec.template.spec.x')."""
    if not pod_field:
        return _UNKNOWN
    for prefix, target in _POD_TO_JOB:
        if pod_field == prefix or pod_field.startswith((prefix + ".", prefix + "[")):
            return target + pod_field[len(prefix):]
    return f"{_UNKNOWN} ({pod_field})"


def _status_body(body: object) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            parsed = json.loads(body)
        except ValueError:
            return {"message": body}
        return parsed if isinstance(parsed, Mapping) else {"message": body}
    return {}


def rejection_problems(code: int, body: object) -> tuple[Problem, ...]:
    """The API server's refusal of the job's Pod, as problems naming the job's fields.

    422 (Invalid) lists its causes with the Pod's field paths; 400 (a body that
    does not decode, e.g. a string where a list belongs) names the Go field in
    its message; 403 from PodSecurity admission names the namespace's policy.
    """
    status = _status_body(body)
    message = str(status.get("message") or f"the API server refused the Pod (HTTP {code})")
    details = status.get("details") if isinstance(status.get("details"), Mapping) else {}
    causes = [c for c in (details.get("causes") or []) if isinstance(c, Mapping)]
    suffix = "(the API server's validation of the Pod this job creates)"
    problems = [
        Problem(job_field(str(c.get("field") or "") or None), f"{c.get('message') or message} {suffix}")
        for c in causes[:MAX_CAUSES]
    ]
    if len(causes) > MAX_CAUSES:
        problems.append(Problem(_UNKNOWN, f"and {len(causes) - MAX_CAUSES} more problems: {message}"))
    if problems:
        return tuple(problems)
    shape = _APPLY_SHAPE_RE.search(message)
    if shape is not None:
        return (Problem(job_field(shape.group(1)), f"{message[shape.end():]} {suffix}"),)
    found = _GO_FIELD_RE.search(message)
    if found is not None:
        return (Problem(job_field(found.group(1)), f"has the wrong type: {message} {suffix}"),)
    if "PodSecurity" in message:
        return (Problem("spec.template.spec", f"{message} (the namespace's Pod Security admission)"),)
    return (Problem(_UNKNOWN, f"{message} {suffix}"),)


def is_template_rejection(code: int, body: object) -> bool:
    """True when the refusal is about the Pod itself, not about the cluster or the operator's rights.

    400 and 422 are the Pod's; a 500 only when server-side apply could not
    type the object (its shape or values are wrong); a 403 only when
    PodSecurity admission refused it (a 403 from RBAC, a quota or a limit
    range is the cluster's state: retried, like any other error).
    """
    if code in (400, 422):
        return True
    message = str(_status_body(body).get("message") or "")
    if code == 500:
        return message.startswith(_APPLY_PREFIXES)
    return code == 403 and "violates PodSecurity" in message


def probe_name(pod_name: str) -> str:
    """A name for the dry-run when the job's Pod exists: applying to the existing Pod would be an
    update, which a Pod's immutable spec refuses, while the stack replaces the Pod (a create)."""
    return f"{pod_name}-{PROBE_SUFFIX}"


def dry_run_pod(api: KubeApi, pod: Mapping[str, Any], *, exists: bool = False) -> tuple[Problem, ...]:
    """Ask the API server to validate and admit the Pod, as the stack's server-side apply would,
    without creating it. Empty when the Pod would be accepted.

    ``exists``: the job's own Pod has the name now; the dry-run then uses
    :func:`probe_name` (names are the operator's, never the user's input).
    Errors that are not about the Pod (the API server unreachable, RBAC)
    raise, for the work queue's backoff.
    """
    metadata = dict(pod.get("metadata") or {})
    namespace = str(metadata.get("namespace") or "default")
    if exists:
        metadata["name"] = probe_name(str(metadata.get("name")))
    body = {**pod, "metadata": metadata}
    path = object_path("/api/v1", "pods", namespace, str(metadata.get("name")))
    try:
        api.request("PATCH", path, query={"dryRun": "All", "fieldManager": PROBE_MANAGER, "force": True},
                    body=json.dumps(body), content_type=APPLY_PATCH)
    except ApiException as error:
        if is_template_rejection(int(error.status or 0), error.body):
            return rejection_problems(int(error.status or 0), error.body)
        raise
    return ()
