"""The preflight decisions, without a cluster: who owns a name, and how the API server's refusal of a
Pod becomes problems that name the job's fields. (Against the real API server:
tests/integration/controller/test_controller_preflight.py.)"""

from __future__ import annotations

import json

import pytest

from iflearner.controller.preflight import (
    applied_keys_of,
    is_template_rejection,
    job_field,
    name_conflicts,
    owner_of,
    rejection_problems,
)
from iflearner.desired import LABEL_JOB_UID, ClusterSettings, desired_resources, owned_object_refs
from iflearner.job import parse_job

JOB = {
    "apiVersion": "git.iflytek.com/v1", "kind": "IflearnerJob",
    "metadata": {"name": "job", "namespace": "team", "uid": "1111-aaaa"},
    "spec": {"role": "client", "host": "job.a.party.iflearner.com",
             "template": {"spec": {"containers": [{"name": "c", "image": "img"}]}}},
}
DESIRED = desired_resources(parse_job(JOB), ClusterSettings())
LABELS = DESIRED.labels
REFS = owned_object_refs(DESIRED)


def obj(labels: dict[str, str] | None = None) -> dict:
    return {"metadata": {"name": "x", "namespace": "team", "labels": labels or {}}}


def test_every_object_of_a_job_from_the_cluster_carries_its_uid() -> None:
    assert LABELS[LABEL_JOB_UID] == "1111-aaaa"
    for manifest in (DESIRED.tls_secret, DESIRED.trust_configmap, DESIRED.service, DESIRED.ingress, DESIRED.pod):
        assert manifest is not None and manifest["metadata"]["labels"][LABEL_JOB_UID] == "1111-aaaa"


def test_a_job_owns_objects_with_its_uid_only() -> None:
    assert owner_of(obj(dict(LABELS)), "1111-aaaa", LABELS, frozenset(), "Service/job") is None
    other = {**LABELS, LABEL_JOB_UID: "2222-bbbb"}
    assert "2222-bbbb" in str(owner_of(obj(other), "1111-aaaa", LABELS, frozenset(), "Service/job"))
    assert owner_of(obj(), "1111-aaaa", LABELS, frozenset(), "Service/job") == "it was not created by this job"


def test_objects_made_before_the_uid_label_are_the_jobs_only_if_its_status_recorded_them() -> None:
    legacy = {k: v for k, v in LABELS.items() if k != LABEL_JOB_UID}
    assert owner_of(obj(legacy), "1111-aaaa", LABELS, frozenset({"Service/job"}), "Service/job") is None
    # The same labels copied onto an object the job never applied: not the job's.
    holder = owner_of(obj(legacy), "1111-aaaa", LABELS, frozenset(), "Service/job")
    assert holder is not None and "no record" in holder


def test_name_conflicts_lists_each_foreign_object_by_kind_namespace_and_name() -> None:
    observed = [(ref, None) for ref in REFS]
    assert name_conflicts(observed, "1111-aaaa", LABELS, frozenset()) == ()
    service = next(r for r in REFS if r[1] == "Service")
    secret = next(r for r in REFS if r[1] == "Secret")
    observed = [(ref, obj() if ref in (service, secret) else None) for ref in REFS]
    conflicts = name_conflicts(observed, "1111-aaaa", LABELS, frozenset())
    assert [c.object for c in conflicts] == ["Secret team/job-tls", "Service team/job"]
    problem = conflicts[1].problem()
    assert problem.field == "metadata.name"
    assert "Service team/job already exists and is not this job's" in problem.message
    assert "delete or rename that object" in problem.message


def test_applied_keys_of_reads_the_record_of_the_last_up() -> None:
    status = {"applied": {"fingerprint": "f", "objects": {"Pod/job": "uid", "Service/job": "7"}}}
    assert applied_keys_of(status) == {"Pod/job", "Service/job"}
    assert applied_keys_of({}) == frozenset() and applied_keys_of({"applied": "junk"}) == frozenset()


@pytest.mark.parametrize(("pod_field", "expected"), [
    ("spec.containers[0].name", "spec.template.spec.containers[0].name"),
    ("spec", "spec.template.spec"),
    ("metadata.labels", "spec.template.metadata.labels"),
    ("metadata.annotations[bad key]", "spec.template.metadata.annotations[bad key]"),
    ("metadata.name", "metadata.name"),
    ("specific", "spec.template (specific)"),
    (None, "spec.template"),
])
def test_pod_fields_map_to_the_jobs_fields(pod_field: str | None, expected: str) -> None:
    assert job_field(pod_field) == expected


def test_an_invalid_pod_names_every_field_the_api_server_names() -> None:
    body = {"kind": "Status", "code": 422, "reason": "Invalid", "message": "Pod \"job\" is invalid: ...",
            "details": {"causes": [
                {"reason": "FieldValueInvalid", "field": "spec.containers[0].name",
                 "message": "Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of ..."},
                {"reason": "FieldValueRequired", "field": "spec.containers[0].volumeMounts[0].name",
                 "message": "Required value"}]}}
    problems = rejection_problems(422, json.dumps(body))
    assert [p.field for p in problems] == ["spec.template.spec.containers[0].name",
                                           "spec.template.spec.containers[0].volumeMounts[0].name"]
    assert "Bad_Name" in problems[0].message and "API server" in problems[0].message


def test_a_pod_that_does_not_decode_names_the_go_field() -> None:
    message = ("Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal string into Go struct "
               "field Container.spec.containers.volumeMounts of type []v1.VolumeMount")
    (problem,) = rejection_problems(400, {"kind": "Status", "code": 400, "message": message})
    assert problem.field == "spec.template.spec.containers.volumeMounts"
    assert "cannot unmarshal string" in problem.message


@pytest.mark.parametrize(("message", "field", "detail"), [
    ('failed to create typed patch object (ns/job; /v1, Kind=Pod): .spec.containers[name="c"].ports: '
     'duplicate entries for key [containerPort=1,protocol="TCP"]',
     'spec.template.spec.containers[name="c"].ports', "duplicate entries"),
    ('failed to create typed patch object (ns/job; /v1, Kind=Pod): .spec.containers[name="c"].foo: '
     "field not declared in schema", 'spec.template.spec.containers[name="c"].foo', "not declared"),
    ("failed to convert new object (ns/job; /v1, Kind=Pod) to proper version: unable to convert unstructured "
     "object to /v1, Kind=Pod: cannot convert float64 to int32", "spec.template", "float64"),
])
def test_server_side_apply_refusals_name_the_field(message: str, field: str, detail: str) -> None:
    body = {"kind": "Status", "code": 500, "message": message}
    assert is_template_rejection(500, json.dumps(body))
    (problem,) = rejection_problems(500, body)
    assert problem.field == field and detail in problem.message


def test_other_server_errors_are_not_the_templates() -> None:
    assert not is_template_rejection(500, {"message": "etcdserver: request timed out"})


def test_an_unexplained_refusal_still_names_the_template() -> None:
    (problem,) = rejection_problems(400, "not json at all")
    assert problem.field == "spec.template" and "not json at all" in problem.message


def test_many_causes_are_capped_with_a_count() -> None:
    causes = [{"field": f"spec.containers[{i}].image", "message": "Required value"} for i in range(20)]
    problems = rejection_problems(422, {"message": "invalid", "details": {"causes": causes}})
    assert len(problems) == 9 and "12 more" in problems[-1].message


def test_only_refusals_of_the_pod_itself_stall() -> None:
    assert is_template_rejection(422, "{}") and is_template_rejection(400, "{}")
    assert is_template_rejection(403, {"message": 'pods "x" is forbidden: violates PodSecurity "restricted"'})
    assert not is_template_rejection(403, {"message": 'pods is forbidden: User "op" cannot create'})
    assert not is_template_rejection(500, "{}") and not is_template_rejection(409, "{}")
