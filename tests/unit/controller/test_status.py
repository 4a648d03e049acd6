"""Pure status decisions: phase, conditions, lastOperation, outputs."""

from __future__ import annotations

import datetime

from iflearner.controller.status import (
    RESULT_FAILED,
    RESULT_SUCCEEDED,
    Observation,
    Operation,
    compute_status,
    condition,
    failure_count_of,
    is_ready,
    merge_patch,
    outputs_for,
    parse_time,
    pod_failure_text,
    rfc3339,
)
from iflearner.desired import ClusterSettings, desired_resources
from iflearner.job import parse_job

T0, T1, T2, T3 = (f"2025-01-01T00:00:0{i}Z" for i in range(4))
UP_OK = Operation("up", RESULT_SUCCEEDED, T0, {"create": 7}, seconds=3.2, fingerprint="abc")


def cond(status, kind):
    found = condition(status, kind)
    assert found is not None, f"{kind} missing"
    return found["status"], found["reason"]


def test_time_helpers_round_trip():
    moment = datetime.datetime(2025, 3, 4, 5, 6, 7, 891, tzinfo=datetime.UTC)
    assert rfc3339(moment) == "2025-03-04T05:06:07Z"
    assert parse_time("2025-03-04T05:06:07Z") == moment.replace(microsecond=0)
    assert parse_time(None) is None and parse_time("garbage") is None


def test_new_job_before_any_operation_is_pending_and_reconciling():
    status = compute_status(None, Observation(generation=1, now=T0))
    assert status["phase"] == "Pending"
    assert status["observedGeneration"] == 1
    assert cond(status, "Ready") == ("False", "Progressing")
    assert cond(status, "Reconciling") == ("True", "Progressing")
    assert cond(status, "Stalled") == ("False", "SpecValid")
    assert "lastOperation" not in status
    for item in status["conditions"]:
        assert item["observedGeneration"] == 1 and item["lastTransitionTime"] == T0
        assert item["reason"][0].isupper() and " " not in item["reason"]


def test_up_in_progress_is_recorded_as_such():
    status = compute_status(None, Observation(generation=1, now=T0, in_progress="up"))
    assert cond(status, "Reconciling") == ("True", "StackUpdating")
    assert cond(status, "Ready") == ("False", "StackUpdating")
    assert status["lastOperation"]["result"] == "InProgress"
    assert status["lastOperation"]["kind"] == "up"
    assert status["message"] == "applying the job's stack (up)"


def test_successful_up_with_pod_pending_then_running():
    names = {"endpoint": "job1.server.iflearner.com", "pod": "job"}
    pending = compute_status(None, Observation(
        generation=1, now=T1, operation=UP_OK, pod_phase="Pending", pod_name="job",
        host="job1.server.iflearner.com", outputs=names,
    ))
    assert pending["phase"] == "Pending"
    assert cond(pending, "Ready") == ("False", "PodPending")
    assert cond(pending, "Reconciling") == ("True", "WaitingForPod")
    assert pending["lastOperation"] == {
        "kind": "up", "result": "Succeeded", "time": T0, "changes": {"create": 7},
        "failureCount": 0, "seconds": 3.2, "fingerprint": "abc",
    }
    assert pending["outputs"] == names

    running = compute_status(pending, Observation(
        generation=1, now=T2, pod_phase="Running", pod_name="job", host="job1.server.iflearner.com",
    ))
    assert running["phase"] == "Running"
    assert is_ready(running)
    assert cond(running, "Ready") == ("True", "PodRunning")
    assert cond(running, "Reconciling") == ("False", "Reconciled")
    assert running["lastOperation"] == pending["lastOperation"], "kept when no operation ran"
    assert running["outputs"] == names, "kept when not given"
    assert "job1.server.iflearner.com" in running["message"]
    ready = condition(running, "Ready")
    assert ready["lastTransitionTime"] == T2, "Ready flipped False -> True at T2"
    stalled = condition(running, "Stalled")
    assert stalled["lastTransitionTime"] == T1, "Stalled stayed False: its time does not move"


def test_same_observation_gives_an_identical_status():
    obs = Observation(generation=1, now=T1, operation=UP_OK, pod_phase="Running", pod_name="job")
    first = compute_status(None, obs)
    again = compute_status(first, Observation(generation=1, now=T3, pod_phase="Running", pod_name="job"))
    assert again == first, "a resync with nothing new must not change the status (no write)"


def test_transition_time_moves_only_when_status_flips():
    first = compute_status(None, Observation(generation=1, now=T0, operation=UP_OK, pod_phase="Pending"))
    missing = compute_status(first, Observation(generation=1, now=T1))
    assert cond(missing, "Ready") == ("False", "PodMissing")
    assert condition(missing, "Ready")["lastTransitionTime"] == T0, "reason changed, status did not"


def test_pod_succeeded_failed_unknown():
    base = compute_status(None, Observation(generation=1, now=T0, operation=UP_OK))
    done = compute_status(base, Observation(generation=1, now=T1, pod_phase="Succeeded", pod_name="p"))
    assert done["phase"] == "Succeeded" and cond(done, "Ready") == ("True", "PodSucceeded")
    assert cond(done, "Reconciling")[0] == "False"
    failed = compute_status(base, Observation(generation=1, now=T1, pod_phase="Failed", pod_name="p"))
    assert failed["phase"] == "Failed" and cond(failed, "Ready") == ("False", "PodFailed")
    assert "kubectl logs p" in failed["message"]
    unknown = compute_status(base, Observation(generation=1, now=T1, pod_phase="Unknown"))
    assert unknown["phase"] == "Unknown" and cond(unknown, "Ready") == ("False", "PodUnknown")
    weird = compute_status(base, Observation(generation=1, now=T1, pod_phase="Bogus"))
    assert weird["phase"] == "Pending"


def test_invalid_spec_is_stalled_with_the_field_named():
    problems = ("spec.template.spec.containers[0].image: is required: set the container's image",
                "spec.peers[0].address: must be an IPv4 address")
    status = compute_status(None, Observation(generation=3, now=T0, problems=problems))
    assert cond(status, "Stalled") == ("True", "InvalidSpec")
    assert cond(status, "Ready") == ("False", "InvalidSpec")
    assert cond(status, "Reconciling") == ("False", "InvalidSpec")
    stalled = condition(status, "Stalled")
    assert "spec.template.spec.containers[0].image" in stalled["message"]
    assert "spec.peers[0].address" in stalled["message"]
    assert status["message"].startswith("invalid spec: spec.template.spec.containers[0].image")
    assert "(+1 more)" in status["message"]
    assert status["observedGeneration"] == 3
    assert status["phase"] == "Pending"


def test_fixing_an_invalid_spec_clears_stalled():
    invalid = compute_status(None, Observation(generation=1, now=T0, problems=("spec.host: bad",)))
    fixed = compute_status(invalid, Observation(generation=2, now=T1, operation=UP_OK, pod_phase="Running"))
    assert cond(fixed, "Stalled") == ("False", "SpecValid")
    assert condition(fixed, "Stalled")["lastTransitionTime"] == T1
    assert condition(fixed, "Stalled")["observedGeneration"] == 2


def test_failed_up_reports_backoff_and_failure_count():
    failure = Operation("up", RESULT_FAILED, T1, {}, error="kubernetes: connection refused\n" * 200)
    status = compute_status(None, Observation(
        generation=1, now=T1, operation=failure, failure_count=3, next_retry_time=T3,
    ))
    assert cond(status, "Ready") == ("False", "StackUpdateFailed")
    assert cond(status, "Reconciling") == ("True", "RetryingAfterFailure")
    assert T3 in condition(status, "Reconciling")["message"]
    op = status["lastOperation"]
    assert op["result"] == "Failed" and op["failureCount"] == 3 and op["nextRetryTime"] == T3
    assert len(op["error"]) <= 1000 and op["error"].endswith("...")
    assert failure_count_of(status) == 3
    assert len(status["message"]) <= 200
    # Later passes while waiting for the retry keep everything as it is.
    waiting = compute_status(status, Observation(generation=1, now=T2, failure_count=3, next_retry_time=T3))
    assert waiting == status


def test_recovery_after_failure_resets_the_count():
    failure = Operation("up", RESULT_FAILED, T1, {}, error="boom")
    failed = compute_status(None, Observation(generation=1, now=T1, operation=failure, failure_count=1))
    ok = compute_status(failed, Observation(generation=1, now=T2, operation=UP_OK, pod_phase="Running"))
    assert ok["lastOperation"]["failureCount"] == 0
    assert "error" not in ok["lastOperation"] and "nextRetryTime" not in ok["lastOperation"]
    assert is_ready(ok)


def test_update_of_a_ready_job_keeps_the_previous_ready_and_generation_while_applying():
    ready = compute_status(None, Observation(generation=1, now=T0, operation=UP_OK, pod_phase="Running"))
    applying = compute_status(ready, Observation(generation=2, now=T1, in_progress="up", pod_phase="Running"))
    assert condition(applying, "Ready") == condition(ready, "Ready"), "Ready still describes generation 1"
    assert applying["observedGeneration"] == 1, "generation 2 is not in effect yet"
    assert cond(applying, "Reconciling") == ("True", "StackUpdating")
    assert condition(applying, "Reconciling")["observedGeneration"] == 2
    done = compute_status(applying, Observation(generation=2, now=T2, operation=UP_OK, pod_phase="Pending"))
    assert done["observedGeneration"] == 2 and cond(done, "Ready") == ("False", "PodPending")


def test_deleting_and_destroy_failure():
    ready = compute_status(None, Observation(generation=1, now=T0, operation=UP_OK, pod_phase="Running"))
    deleting = compute_status(ready, Observation(generation=1, now=T1, deleting=True, in_progress="destroy",
                                                 pod_phase="Running"))
    assert cond(deleting, "Ready") == ("False", "Deleting")
    assert cond(deleting, "Reconciling") == ("True", "DestroyingStack")
    failed = Operation("destroy", RESULT_FAILED, T2, error="the stack is locked")
    status = compute_status(deleting, Observation(generation=1, now=T2, deleting=True, operation=failed,
                                                  failure_count=1, next_retry_time=T3))
    assert cond(status, "Reconciling") == ("True", "DestroyFailed")
    assert "the stack is locked" in status["message"]
    assert status["lastOperation"]["kind"] == "destroy"


def test_outputs_hold_names_only():
    manifest = {
        "apiVersion": "git.iflytek.com/v1", "kind": "IflearnerJob",
        "metadata": {"name": "iflearnerjob-client1", "namespace": "default"},
        "spec": {"role": "client", "host": "job1.a.party.iflearner.com",
                 "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
    }
    job = parse_job(manifest)
    desired = desired_resources(job, ClusterSettings())
    outputs = outputs_for(job.host, job.namespace, desired.names, desired.trust_configmap is not None)
    assert outputs == {
        "endpoint": "job1.a.party.iflearner.com", "namespace": "default", "pod": "iflearnerjob-client1",
        "service": "iflearnerjob-client1", "ingress": "iflearnerjob-client1",
        "tlsSecret": "iflearnerjob-client1-tls", "trustConfigMap": "iflearnerjob-client1-trust",
    }
    assert not any("BEGIN" in str(v) for v in outputs.values())


def test_operation_round_trips_through_status():
    op = Operation("up", RESULT_FAILED, T1, {"create": 1}, error="x", seconds=1.5, fingerprint="f")
    assert Operation.from_status(op.to_status(2, T2)) == op
    assert Operation.from_status(None) is None
    assert Operation.from_status({"result": "Succeeded"}) is None


def test_merge_patch_nulls_removed_keys_and_skips_unchanged():
    old = {"phase": "Pending", "lastOperation": {"error": "x", "kind": "up"}, "applied": {"a": 1}}
    new = {"phase": "Running", "lastOperation": {"kind": "up"}, "conditions": [{"type": "Ready"}]}
    assert merge_patch(old, new) == {
        "phase": "Running", "lastOperation": {"error": None}, "applied": None,
        "conditions": [{"type": "Ready"}],
    }
    assert merge_patch(new, new) == {}


def test_failed_pod_condition_says_why_its_container_ended():
    pod = {"status": {"phase": "Failed", "containerStatuses": [
        {"name": "sidecar", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "party", "state": {"terminated": {
            "exitCode": 3, "reason": "Error",
            "message": "TLS verification failed: the server h at h:30031 presented a certificate\n"
                       "that /etc/server-iflearner-secret.crt does not accept"}}}]}}
    why = pod_failure_text(pod)
    assert why == ("container party exited with code 3 (Error): TLS verification failed: the server h at "
                   "h:30031 presented a certificate that /etc/server-iflearner-secret.crt does not accept")
    base = compute_status(None, Observation(generation=1, now=T0, operation=UP_OK))
    failed = compute_status(base, Observation(generation=1, now=T1, pod_phase="Failed", pod_name="p",
                                              pod_failure=why))
    ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "PodFailed" and "TLS verification failed" in ready["message"], ready
    assert pod_failure_text({"status": {"phase": "Failed", "reason": "Evicted", "message": "low memory"}}) \
        == "Evicted: low memory"
    assert pod_failure_text({"status": {"phase": "Running"}}) is None


def test_a_failed_run_with_a_reason_shows_it_in_ready():
    locked = Operation("up", "Failed", T1, error="stack s is locked by a run that may still be alive",
                       reason="StackLocked")
    status = compute_status(None, Observation(generation=1, now=T1, operation=locked, failure_count=1))
    assert cond(status, "Ready") == ("False", "StackLocked")
    assert status["lastOperation"]["reason"] == "StackLocked"
    assert Operation.from_status(status["lastOperation"]).reason == "StackLocked"
    plain = Operation("up", "Failed", T1, error="boom")
    assert cond(compute_status(None, Observation(generation=1, now=T1, operation=plain, failure_count=1)),
                "Ready") == ("False", "StackUpdateFailed")
