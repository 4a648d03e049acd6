"""One pass over a valid job, decided without any cluster: the step, and the status it ends with."""

from __future__ import annotations

import datetime

import pytest

from iflearner.certrenewal import CertificateTimes
from iflearner.controller import syncpass
from iflearner.controller.carotation import ISSUING_KEYS, IssuerChoice
from iflearner.controller.gating import Decision
from iflearner.controller.status import RESULT_FAILED, Operation, condition, rfc3339
from iflearner.desired import ClusterSettings, desired_resources
from iflearner.job import parse_job
from iflearner.stackrunner import StackResult

NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
SERVER = {
    "apiVersion": "git.iflytek.com/v1", "kind": "IflearnerJob",
    "metadata": {"name": "iflearnerjob-server", "namespace": "default", "generation": 2, "uid": "u1"},
    "spec": {"role": "server", "host": "job1.server.iflearner.com",
             "template": {"spec": {"containers": [{"name": "s", "image": "img:1"}]}}},
}
CLIENT = {**SERVER, "metadata": {**SERVER["metadata"], "name": "iflearnerjob-client"},
          "spec": {**SERVER["spec"], "role": "client"}}
BUNDLE = {"server": [{"subject": "ca-2", "sha256": "bb"}], "party": []}


def view(manifest=SERVER, *, run: bool = True, last: Operation | None = None, failures: int = 0,
         served: CertificateTimes | None = None, switch_at: datetime.datetime | None = None,
         trust: syncpass.TrustView | None = None, previous: dict | None = None) -> syncpass.JobView:
    job = parse_job(manifest)
    if previous is None and last is not None:  # the view's last operation is the status's
        previous = {"lastOperation": last.to_status(failures, None)}
    return syncpass.JobView(
        desired=desired_resources(job, ClusterSettings()), generation=2, host=job.host, previous=previous or {},
        now=NOW, fingerprint="fp-2", gate=Decision(run, "spec changed" if run else "unchanged"), last=last,
        failures=failures, served=served, issuer=IssuerChoice(ISSUING_KEYS, None, "one CA", switch_at),
        trust=trust, outputs={"podName": "iflearnerjob-server"}, renewal_fraction=2 / 3, template="t-1")


def afterwards(phase: str | None = "Running", uid: str | None = "pod-1",
               served: CertificateTimes | None = None) -> syncpass.Afterwards:
    return syncpass.Afterwards(NOW, phase, None, uid, None, served)


def failed_up() -> Operation:
    """An up of the same spec that failed just now."""
    return Operation("up", RESULT_FAILED, rfc3339(NOW), error="boom", fingerprint="fp-2")


def test_an_unchanged_job_is_in_sync_and_keeps_its_last_operation():
    unchanged = view(run=False, previous={"lastOperation": {"kind": "up", "result": "Succeeded", "time": "t"}})
    chosen = syncpass.plan(unchanged)
    assert chosen == syncpass.Plan(syncpass.Step.IN_SYNC)
    status, requeue = syncpass.conclude(unchanged, chosen, None, afterwards(), None)
    assert status["lastOperation"]["result"] == "Succeeded" and requeue is None
    assert condition(status, "Ready")["status"] == "True"


def test_a_failed_up_waits_for_its_backoff_and_the_status_says_when():
    waiting = view(last=failed_up(), failures=1)
    chosen = syncpass.plan(waiting)
    assert chosen.step is syncpass.Step.BACKOFF and chosen.retry_at is not None and chosen.retry_at > NOW
    assert chosen.requeue_after == pytest.approx((chosen.retry_at - NOW).total_seconds() + 0.05)
    status, requeue = syncpass.conclude(waiting, chosen, None, afterwards(), None)
    assert status["lastOperation"]["nextRetryTime"] == rfc3339(chosen.retry_at)
    assert requeue == chosen.requeue_after


def test_once_the_backoff_is_over_the_pass_updates():
    later = view(last=failed_up(), failures=1)
    later = syncpass.JobView(**{**later.__dict__, "now": NOW + datetime.timedelta(hours=1)})
    assert syncpass.plan(later).step is syncpass.Step.UPDATE


def test_a_successful_update_records_what_it_applied_and_resets_failures():
    updating = view(last=failed_up(), failures=2)
    starting = syncpass.starting_status(updating, "Pending")
    assert starting["lastOperation"]["result"] == "InProgress"
    result = StackResult("up", "s", True, changes={"create": 3}, seconds=1.0)
    outcome = syncpass.outcome_of(updating, result, NOW, {"Pod/p": "uid-1"})
    assert outcome.succeeded and outcome.failures == 0 and outcome.retry_at is None
    status, requeue = syncpass.conclude(updating, syncpass.plan(updating), outcome, afterwards(), starting)
    # The owned objects' versions (gating), and what the job holds against other namespaces (its
    # host; its DNS records: none here, the settings have no ingress address) and its template digest.
    assert status["applied"] == {"fingerprint": "fp-2", "objects": {"Pod/p": "uid-1"},
                                 "host": "job1.server.iflearner.com", "records": {}, "template": "t-1"}
    assert status["lastOperation"]["failureCount"] == 0 and "nextRetryTime" not in status["lastOperation"]
    assert requeue is None


def test_a_failed_update_counts_the_failure_and_comes_back_after_its_backoff():
    updating = view()
    result = StackResult("up", "s", False, error="the API server refused", reason="StackLocked")
    outcome = syncpass.outcome_of(updating, result, NOW, None)
    assert outcome.failures == 1 and outcome.applied is None and outcome.retry_at is not None
    status, requeue = syncpass.conclude(updating, syncpass.plan(updating), outcome, afterwards(),
                                        syncpass.starting_status(updating, None))
    assert status["lastOperation"]["reason"] == "StackLocked"
    assert status["lastOperation"]["nextRetryTime"] == rfc3339(outcome.retry_at)
    assert requeue == outcome.requeue_after and "applied" not in status


def test_the_served_certificate_is_in_the_status_and_brings_the_job_back_at_its_renewal_time():
    served = CertificateTimes("a1", NOW, NOW + datetime.timedelta(seconds=90), "ca-1")
    status, requeue = syncpass.conclude(view(run=False), syncpass.Plan(syncpass.Step.IN_SYNC), None,
                                        afterwards(served=served), None)
    assert status["certificate"]["renewalTime"] == "2025-01-01T00:01:00Z"
    assert requeue == pytest.approx(60.2)


def test_a_rotation_window_brings_the_job_back_when_issuing_switches():
    switch = NOW + datetime.timedelta(seconds=30)
    _, requeue = syncpass.conclude(view(run=False, switch_at=switch), syncpass.Plan(syncpass.Step.IN_SYNC), None,
                                   afterwards(), None)
    assert requeue == pytest.approx(30.2)


def test_a_client_pod_created_by_this_update_mounted_the_bundle_the_update_applied():
    trust = syncpass.TrustView(previous=None, bundle=BUNDLE, pod_uid_before=None)
    updating = view(CLIENT, trust=trust)
    outcome = syncpass.outcome_of(updating, StackResult("up", "s", True), NOW, {})
    status, _ = syncpass.conclude(updating, syncpass.plan(updating), outcome, afterwards(uid="pod-9"),
                                  syncpass.starting_status(updating, None))
    assert status["trust"]["applied"] == BUNDLE
    assert status["trust"]["mounted"] == {"podUid": "pod-9", **BUNDLE}


def test_a_job_that_reads_no_bundle_has_no_trust_status():
    status, _ = syncpass.conclude(view(run=False), syncpass.Plan(syncpass.Step.IN_SYNC), None, afterwards(), None)
    assert "trust" not in status
