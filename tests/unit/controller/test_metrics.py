"""The series the alerts read: computed from the jobs' status and the served certificate."""

from __future__ import annotations

import datetime

from prometheus_client.parser import text_string_to_metric_families

from iflearner.certrenewal import CertificateTimes
from iflearner.controller.metrics import Metrics, job_families


def _samples(families) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # noqa: ANN001
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def _job(name: str, **status: object) -> dict:
    return {"metadata": {"namespace": "team", "name": name}, "status": status}


def test_stalled_and_failing_jobs_each_get_a_series_and_healthy_ones_none() -> None:
    jobs = [
        _job("ok", phase="Running", conditions=[{"type": "Ready", "status": "True"}],
             lastOperation={"kind": "up", "result": "Succeeded", "failureCount": 0}),
        _job("stalled", conditions=[{"type": "Stalled", "status": "True", "reason": "PodSecurity"}]),
        _job("was-stalled", conditions=[{"type": "Stalled", "status": "False", "reason": "PodSecurity"}]),
        _job("locked", phase="Running",
             lastOperation={"kind": "up", "result": "Failed", "failureCount": 4, "reason": "StackLocked"}),
        _job("failing", lastOperation={"kind": "destroy", "result": "Failed", "failureCount": 2}),
        _job("retrying", lastOperation={"kind": "up", "result": "InProgress", "failureCount": 3}),
    ]
    samples = _samples(job_families(jobs))
    assert samples[("iflearner_jobs", (("phase", "Running"),))] == 2
    assert samples[("iflearner_jobs", (("phase", "None"),))] == 4
    stalled = {k: v for k, v in samples.items() if k[0] == "iflearner_job_stalled"}
    assert stalled == {("iflearner_job_stalled", (("name", "stalled"), ("namespace", "team"),
                                                  ("reason", "PodSecurity"))): 1}
    failing = {dict(k[1])["name"]: (dict(k[1]), v) for k, v in samples.items()
               if k[0] == "iflearner_job_failed_operations"}
    # a retry in progress still counts the failures before it
    assert set(failing) == {"locked", "failing", "retrying"}
    assert failing["locked"] == ({"namespace": "team", "name": "locked", "operation": "up",
                                  "reason": "StackLocked"}, 4)
    assert failing["failing"][0]["reason"] == "OperationFailed" and failing["failing"][1] == 2


def test_certificate_series_carry_expiry_and_renewal_time_and_go_with_the_job() -> None:
    metrics = Metrics()
    issued = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    served = CertificateTimes("ab", issued, issued + datetime.timedelta(seconds=900))
    metrics.set_certificate("team", "server", served, 2 / 3)
    text = metrics.exposition().decode()
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.labels.get("name") == "server"}
    assert values["iflearner_certificate_expiry_timestamp_seconds"] == issued.timestamp() + 900
    assert values["iflearner_certificate_renewal_timestamp_seconds"] == issued.timestamp() + 600
    metrics.set_certificate("team", "server", None, 2 / 3)
    metrics.set_certificate("team", "never-had-one", None, 2 / 3)
    assert 'name="server"' not in metrics.exposition().decode()


def test_a_retry_in_progress_keeps_the_failing_series_and_its_reason() -> None:
    reasons: dict[str, str] = {}

    def failing(status: dict) -> dict:
        samples = _samples(job_families([_job("locked", **status)], reasons))
        return {dict(k[1])["reason"]: v for k, v in samples.items() if k[0] == "iflearner_job_failed_operations"}

    assert failing({"lastOperation": {"kind": "up", "result": "Failed", "failureCount": 2,
                                      "reason": "StackLocked"}}) == {"StackLocked": 2}
    # the retry runs: its in-progress record keeps the count but names no reason
    assert failing({"lastOperation": {"kind": "up", "result": "InProgress", "failureCount": 2}}) == {"StackLocked": 2}
    assert failing({"lastOperation": {"kind": "up", "result": "Succeeded", "failureCount": 0}}) == {}
    assert reasons == {}, "a job that succeeded is forgotten"
