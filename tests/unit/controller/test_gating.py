"""Gating: up only when the spec, settings or owned objects changed, or the last up failed."""

from __future__ import annotations

import copy
import datetime
from dataclasses import replace

from iflearner.controller.gating import (
    applied_record,
    decide,
    fingerprint,
    object_key,
    observe,
    retry_time,
    version_of,
)
from iflearner.controller.status import RESULT_FAILED, RESULT_IN_PROGRESS, RESULT_SUCCEEDED, Operation
from iflearner.desired import ClusterSettings, desired_resources, owned_object_refs
from iflearner.job import parse_job

MANIFEST = {
    "apiVersion": "git.iflytek.com/v1", "kind": "IflearnerJob",
    "metadata": {"name": "iflearnerjob-server", "namespace": "default", "generation": 1},
    "spec": {"role": "server", "host": "job1.server.iflearner.com",
             "template": {"spec": {"containers": [{"name": "s", "image": "img:1"}]}}},
}
SETTINGS = ClusterSettings()
OK = Operation("up", RESULT_SUCCEEDED, "2025-01-01T00:00:00Z", fingerprint="x")


def desired(manifest=MANIFEST, settings=SETTINGS):
    return desired_resources(parse_job(manifest), settings)


def objects_for(d):
    """A fake cache holding every owned object, as the API would return them."""
    cache = {}
    for index, ref in enumerate(owned_object_refs(d)):
        cache[ref] = {"metadata": {"name": ref[3], "namespace": ref[2], "uid": f"uid-{index}",
                                   "resourceVersion": str(100 + index)}}
    return cache


def recorded(d):
    cache = objects_for(d)
    versions = observe(owned_object_refs(d), cache.get)
    return cache, applied_record(fingerprint(d, SETTINGS), versions)


def test_fingerprint_is_stable_and_sensitive():
    d = desired()
    assert fingerprint(d, SETTINGS) == fingerprint(desired(), SETTINGS)
    changed = copy.deepcopy(MANIFEST)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "img:2"
    assert fingerprint(desired(changed), SETTINGS) != fingerprint(d, SETTINGS)
    other_settings = replace(SETTINGS, ingress_class_name="traefik")
    assert fingerprint(d, other_settings) != fingerprint(d, SETTINGS)
    relabelled = copy.deepcopy(MANIFEST)
    relabelled["metadata"]["generation"] = 7  # metadata that does not change what is declared
    assert fingerprint(desired(relabelled), SETTINGS) == fingerprint(d, SETTINGS)


def test_pod_is_identified_by_uid_other_objects_by_resource_version():
    obj = {"metadata": {"uid": "u", "resourceVersion": "5"}}
    assert version_of("Pod", obj) == "u"
    assert version_of("Service", obj) == "5"
    assert version_of("Service", None) is None
    assert version_of("Service", {"metadata": {"resourceVersion": "5", "deletionTimestamp": "t"}}) is None
    ingress = {"metadata": {"uid": "u", "resourceVersion": "5", "generation": 2}}
    assert version_of("Ingress", ingress) == "u/2", "status-only updates (new rv) do not count"


def test_unchanged_job_runs_nothing():
    d = desired()
    cache, applied = recorded(d)
    # The Pod's status changes all the time: a new resourceVersion, same uid.
    pod_ref = next(ref for ref in cache if ref[1] == "Pod")
    cache[pod_ref]["metadata"]["resourceVersion"] = "999"
    decision = decide(fingerprint(d, SETTINGS), applied, observe(owned_object_refs(d), cache.get), OK)
    assert decision.should_run is False and decision.reason == "up to date"


def test_first_up_runs():
    d = desired()
    decision = decide(fingerprint(d, SETTINGS), None, observe(owned_object_refs(d), {}.get), None)
    assert decision.should_run and "not been applied" in decision.reason


def test_changed_spec_runs():
    d = desired()
    cache, applied = recorded(d)
    changed = copy.deepcopy(MANIFEST)
    changed["spec"]["template"]["spec"]["containers"][0]["args"] = ["--epochs=3"]
    d2 = desired(changed)
    decision = decide(fingerprint(d2, SETTINGS), applied, observe(owned_object_refs(d2), cache.get), OK)
    assert decision.should_run and "spec" in decision.reason
    assert not decision.refresh, "a spec change needs no refresh"


def test_missing_owned_object_runs():
    d = desired()
    cache, applied = recorded(d)
    service = next(ref for ref in cache if ref[1] == "Service")
    del cache[service]
    decision = decide(fingerprint(d, SETTINGS), applied, observe(owned_object_refs(d), cache.get), OK)
    assert decision == decision.__class__(True, f"{object_key('Service', service[3])} is missing", refresh=True)


def test_owned_object_changed_behind_our_back_runs():
    d = desired()
    cache, applied = recorded(d)
    ingress = next(ref for ref in cache if ref[1] == "Ingress")
    cache[ingress]["metadata"]["resourceVersion"] = "12345"
    decision = decide(fingerprint(d, SETTINGS), applied, observe(owned_object_refs(d), cache.get), OK)
    assert decision.should_run and "changed outside" in decision.reason and decision.refresh


def test_replaced_pod_runs():
    d = desired()
    cache, applied = recorded(d)
    pod = next(ref for ref in cache if ref[1] == "Pod")
    cache[pod]["metadata"]["uid"] = "another-uid"
    decision = decide(fingerprint(d, SETTINGS), applied, observe(owned_object_refs(d), cache.get), OK)
    assert decision.should_run


def test_failed_or_interrupted_up_runs_again():
    d = desired()
    cache, applied = recorded(d)
    observed = observe(owned_object_refs(d), cache.get)
    failed = Operation("up", RESULT_FAILED, "2025-01-01T00:00:00Z", error="boom")
    assert decide(fingerprint(d, SETTINGS), applied, observed, failed).should_run
    interrupted = Operation("up", RESULT_IN_PROGRESS, "2025-01-01T00:00:00Z")
    decision = decide(fingerprint(d, SETTINGS), applied, observed, interrupted)
    assert decision.should_run and "interrupted" in decision.reason and decision.refresh


def test_applied_record_shape():
    record = applied_record("fp", {"Pod/a": "uid", "Service/a": "7", "Ingress/a": None})
    assert record == {"fingerprint": "fp", "objects": {"Pod/a": "uid", "Service/a": "7"}}


def test_retry_waits_for_backoff_of_the_same_fingerprint_only():
    failed = Operation("up", RESULT_FAILED, "2025-01-01T00:00:00Z", error="boom", fingerprint="fp")
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    assert retry_time(failed, 1, "fp") == start + datetime.timedelta(seconds=1)
    assert retry_time(failed, 4, "fp") == start + datetime.timedelta(seconds=8)
    assert retry_time(failed, 50, "fp") == start + datetime.timedelta(seconds=300)
    assert retry_time(failed, 4, "new-spec") is None, "a changed spec is retried at once"
    assert retry_time(OK, 0, "fp") is None
