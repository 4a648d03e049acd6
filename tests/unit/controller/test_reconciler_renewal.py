"""The reconciler renews due certificates and re-applies jobs when the CA or trust bundle changes
(in-memory fakes; the real API server and Pulumi engine: tests/integration/controller)."""

from __future__ import annotations

import copy

import pytest
from test_reconciler import JOB, KEY, Clock, World  # noqa: I001 - the fakes of the reconciler's tests

from iflearner.controller.events import EventRecorder
from iflearner.controller.metrics import Metrics
from iflearner.controller.reconciler import Reconciler
from iflearner.controller.renewal import SUMMARY_KEY
from iflearner.desired import ClusterSettings

TLS_SECRET = "default/iflearnerjob-server-tls"


@pytest.fixture
def world():
    w = World()
    w.jobs.store[KEY] = copy.deepcopy(JOB)
    return w


def _serve(world, clock, lifetime_seconds: int, serial: str = "a1") -> None:
    """The job's TLS Secret, as the informer caches it: the certificate's public facts only."""
    start = clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (clock.now + __import__("datetime").timedelta(seconds=lifetime_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    world.owned["Secret"].store[TLS_SECRET][SUMMARY_KEY] = {"serial": serial, "notBefore": start, "notAfter": end}


def test_unchanged_job_runs_up_once_its_certificate_is_due_and_requeues_at_renewal_time():
    world, clock = World(), Clock()
    world.jobs.store[KEY] = copy.deepcopy(JOB)
    metrics = Metrics()
    reconciler = Reconciler(world, world.jobs, world.owned, world, ClusterSettings(), None, EventRecorder(world),
                            metrics, clock=clock, cache_wait=0.2, signer=world)
    reconciler.reconcile(KEY)
    assert len(world.ups) == 1
    _serve(world, clock, 90)  # renewal at 2/3: 60 s from now

    result = reconciler.reconcile(KEY)
    assert len(world.ups) == 1, "not due yet: gated"
    assert result.requeue_after == pytest.approx(60.2)
    certificate = world.job()["status"]["certificate"]
    assert certificate["notAfter"] == "2025-01-01T00:01:30Z" and certificate["renewalTime"] == "2025-01-01T00:01:00Z"
    assert metrics.certificate_expiry.labels("default", "iflearnerjob-server")._value.get() > 0

    clock.advance(59)
    reconciler.reconcile(KEY)
    assert len(world.ups) == 1
    clock.advance(1)
    reconciler.reconcile(KEY)
    assert len(world.ups) == 2, "due: one up, with no spec change"


def test_ca_or_trust_change_reapplies_an_unchanged_job():
    world, clock = World(), Clock()
    world.jobs.store[KEY] = copy.deepcopy(JOB)
    digests = {"caCertificate": "ca-1"}
    reconciler = Reconciler(world, world.jobs, world.owned, world, ClusterSettings(), None, EventRecorder(world),
                            Metrics(), clock=clock, cache_wait=0.2, stack_inputs=lambda _desired: dict(digests),
                            signer=world)
    reconciler.reconcile(KEY)
    reconciler.reconcile(KEY)
    assert len(world.ups) == 1, "unchanged inputs: gated"
    digests["caCertificate"] = "ca-2"
    reconciler.reconcile(KEY)
    assert len(world.ups) == 2
    reconciler.reconcile(KEY)
    assert len(world.ups) == 2
