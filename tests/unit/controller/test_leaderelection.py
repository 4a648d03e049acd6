"""Leader election: the pure decisions, and the loop against an in-memory Lease API."""

from __future__ import annotations

import copy
import datetime
import threading
import time

import pytest
from kubernetes.client.exceptions import ApiException

from iflearner.controller.leaderelection import (
    LeaderElectionConfig,
    LeaderElector,
    Observed,
    can_acquire,
    micro_time,
    next_spec,
    observe,
    released_spec,
)

WALL = datetime.datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)


def test_config_requires_duration_above_deadline_above_retry():
    LeaderElectionConfig().validated()
    with pytest.raises(ValueError, match="lease duration > renew deadline > retry period"):
        LeaderElectionConfig(lease_duration=10, renew_deadline=10, retry_period=2).validated()


def test_micro_time_format():
    assert micro_time(WALL) == "2025-01-01T12:00:00.123456Z"


def test_absent_or_released_or_own_lease_can_be_taken():
    assert can_acquire(Observed(None, 0), "me", 0, 15)
    assert can_acquire(Observed({"holderIdentity": ""}, 0), "me", 0, 15)
    assert can_acquire(Observed({"holderIdentity": "me", "leaseDurationSeconds": 15}, 0), "me", 1, 15)


def test_someone_elses_lease_only_after_it_stopped_changing_for_its_duration():
    spec = {"holderIdentity": "other", "leaseDurationSeconds": 15, "renewTime": "x"}
    seen = observe(None, spec, now=100.0)
    assert not can_acquire(seen, "me", 100.0, 15)
    assert not can_acquire(seen, "me", 114.9, 15)
    assert can_acquire(seen, "me", 115.0, 15)
    # The holder renewed: the spec changed, so the clock restarts.
    renewed = observe(seen, {**spec, "renewTime": "y"}, now=110.0)
    assert renewed.since == 110.0
    assert not can_acquire(renewed, "me", 115.0, 15)
    # An unchanged spec keeps the original observation time.
    assert observe(renewed, {**spec, "renewTime": "y"}, now=120.0).since == 110.0


def test_next_spec_counts_transitions_and_keeps_acquire_time_on_renew():
    first = next_spec(None, "a", WALL, 15)
    assert first == {"holderIdentity": "a", "leaseDurationSeconds": 15, "acquireTime": micro_time(WALL),
                     "renewTime": micro_time(WALL), "leaseTransitions": 0}
    later = WALL + datetime.timedelta(seconds=5)
    renewed = next_spec(first, "a", later, 15)
    assert renewed["acquireTime"] == first["acquireTime"] and renewed["renewTime"] == micro_time(later)
    assert renewed["leaseTransitions"] == 0
    taken = next_spec(renewed, "b", later, 15)
    assert taken["leaseTransitions"] == 1 and taken["acquireTime"] == micro_time(later)
    released = released_spec(taken, later)
    assert released["holderIdentity"] == "" and released["leaseTransitions"] == 1


class FakeLeaseApi:
    """Just enough of KubeApi for one Lease, with resourceVersion conflicts."""

    def __init__(self) -> None:
        self.lease = None
        self.lock = threading.Lock()
        self.version = 0
        self.down = False

    def get_or_none(self, path):
        if self.down:
            raise ConnectionError("apiserver unreachable")
        with self.lock:
            return copy.deepcopy(self.lease)

    def request(self, method, path, body=None, **_):
        if self.down:
            raise ConnectionError("apiserver unreachable")
        with self.lock:
            if method == "POST":
                if self.lease is not None:
                    raise ApiException(status=409)
            elif method == "PUT":
                if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
                    raise ApiException(status=409)
            self.version += 1
            self.lease = copy.deepcopy(body)
            self.lease["metadata"]["resourceVersion"] = str(self.version)
            return copy.deepcopy(self.lease)


FAST = dict(lease_duration=0.6, renew_deadline=0.4, retry_period=0.1)


def elector(api, identity, events):
    config = LeaderElectionConfig(identity=identity, **FAST)
    return LeaderElector(api, config, lambda: events.append(("start", identity)),
                         lambda: events.append(("stop", identity)))


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_only_one_of_two_candidates_leads_and_release_hands_over_at_once():
    api, events = FakeLeaseApi(), []
    a, b = elector(api, "a", events), elector(api, "b", events)
    a.start()
    assert wait_for(lambda: a.is_leader)
    b.start()
    time.sleep(1.0)  # well beyond the lease duration: a keeps renewing
    assert a.is_leader and not b.is_leader
    started = time.monotonic()
    a.stop(release=True)
    assert wait_for(lambda: b.is_leader)
    assert time.monotonic() - started < 0.5, "a released lease is taken at the next retry"
    assert api.lease["spec"]["leaseTransitions"] == 1
    b.stop()
    assert ("start", "a") in events and ("start", "b") in events


def test_dead_leader_is_replaced_after_the_lease_duration():
    api, events = FakeLeaseApi(), []
    a, b = elector(api, "a", events), elector(api, "b", events)
    a.start()
    assert wait_for(lambda: a.is_leader)
    b.start()
    time.sleep(0.3)
    a._stop.set()  # dies without releasing
    died = time.monotonic()
    assert wait_for(lambda: b.is_leader)
    assert 0.4 <= time.monotonic() - died <= 1.5
    b.stop()


def test_leader_that_cannot_renew_steps_down_after_the_renew_deadline():
    api, events = FakeLeaseApi(), []
    a = elector(api, "a", events)
    a.start()
    assert wait_for(lambda: a.is_leader)
    api.down = True
    lost_at = time.monotonic()
    assert wait_for(lambda: ("stop", "a") in events)
    assert 0.3 <= time.monotonic() - lost_at <= 1.0
    assert not a.is_leader
