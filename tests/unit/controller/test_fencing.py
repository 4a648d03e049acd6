"""Fencing: the timing arithmetic, the watchdog that steps down while the API hangs, and stopping
real process trees (a CLI that ignores SIGTERM, with children) for certain."""

from __future__ import annotations

import copy
import os
import signal
import threading
import time

import pytest

from iflearner import pulumiruns
from iflearner.controller.leaderelection import (
    CLOCK_MARGIN_FRACTION,
    LeaderElectionConfig,
    LeaderElector,
    fencing_plan,
)
from iflearner.pulumiruns import KILL_SETTLE_SECONDS, FencedError, RunRegistry, RunTimeoutError, run_pulumi


def test_default_timing_kills_runs_before_the_lease_can_pass_on():
    plan = fencing_plan(LeaderElectionConfig(), max_term_grace=5.0, kill_settle=KILL_SETTLE_SECONDS)
    # 15 s lease, 10 s renew deadline: fence at 10.1 s, SIGKILL at 13.25 s, dead by 14.25 s.
    assert (plan.fence_at, plan.term_grace, plan.dead_by, plan.takeover_at) == (10.1, 3.15, 14.25, 15.0)
    assert plan.margin == pytest.approx(CLOCK_MARGIN_FRACTION * 15)


@pytest.mark.parametrize("duration", [3, 6, 10, 15, 30, 60, 137])
@pytest.mark.parametrize("deadline_fraction", [0.3, 0.5, 0.66, 0.8, 0.95])
def test_any_accepted_timing_leaves_its_margin(duration, deadline_fraction):
    config = LeaderElectionConfig(lease_duration=duration, renew_deadline=duration * deadline_fraction,
                                  retry_period=0.1)
    try:
        plan = fencing_plan(config, max_term_grace=5.0, kill_settle=KILL_SETTLE_SECONDS)
    except ValueError as error:
        assert "no time to stop Pulumi runs" in str(error)
        assert duration - config.renew_deadline < 0.1 + KILL_SETTLE_SECONDS + CLOCK_MARGIN_FRACTION * duration
        return
    assert 0 <= plan.term_grace <= 5.0
    assert plan.dead_by + CLOCK_MARGIN_FRACTION * duration <= plan.takeover_at + 1e-9


def test_a_timing_without_room_to_stop_runs_is_refused():
    with pytest.raises(ValueError, match="must exceed renew deadline"):
        fencing_plan(LeaderElectionConfig(lease_duration=15, renew_deadline=14, retry_period=2), 5.0, 1.0)


class HangingLeaseApi:
    """One Lease in memory; while ``hang`` is set, every call blocks until it is cleared."""

    def __init__(self) -> None:
        self.lease = None
        self.hang = threading.Event()
        self.released = threading.Event()

    def _wait(self) -> None:
        if self.hang.is_set():
            self.released.wait(30)

    def get_or_none(self, path):
        self._wait()
        return copy.deepcopy(self.lease)

    def request(self, method, path, body=None, **_):
        self._wait()
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = "1"
        return copy.deepcopy(self.lease)


def test_the_leader_fences_at_the_renew_deadline_while_its_renewal_call_still_hangs():
    api, events = HangingLeaseApi(), []
    config = LeaderElectionConfig(identity="a", lease_duration=1.5, renew_deadline=0.6, retry_period=0.1)
    elector = LeaderElector(api, config, lambda: events.append("start"), lambda: events.append("stop"),
                            on_fence=lambda: events.append("fence"))
    elector.start()
    deadline = time.monotonic() + 5
    while not elector.is_leader and time.monotonic() < deadline:
        time.sleep(0.01)
    assert elector.is_leader
    api.hang.set()  # the API server stops answering: the next renewal blocks for 30 s
    deadline = time.monotonic() + 10
    while "stop" not in events and time.monotonic() < deadline:
        time.sleep(0.01)
    hanging = not api.released.is_set()
    api.released.set()
    elector.stop(release=False)
    assert "stop" in events, "the leader never stepped down"
    assert hanging, "it stepped down only after the hanging call returned"
    assert events.index("fence") < events.index("stop") and not elector.is_leader


IGNORES_TERM = ["sh", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"]


def alive(pids):
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}") and
            open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")]


def wait_for_tree(pid, size):
    deadline = time.monotonic() + 5
    while len(pulumiruns.tree(pid)) < size and time.monotonic() < deadline:
        time.sleep(0.01)
    return [info.pid for info in pulumiruns.tree(pid)]


def test_fencing_kills_a_process_tree_that_ignores_sigterm_and_refuses_new_runs():
    reasons: list[str] = []
    registry = RunRegistry(on_stop=reasons.append)
    process = registry.start(IGNORES_TERM, "/", os.environ, "up test")
    pids = wait_for_tree(process.pid, 3)
    assert len(pids) == 3
    registry.fence(grace=0.3)
    assert alive(pids) == [], "every process of the run is dead once fence() returns"
    assert process.returncode == -signal.SIGKILL
    assert [run.pid for run in registry.stopped_runs()] == [process.pid]
    assert reasons == ["fenced"]
    with pytest.raises(FencedError):
        registry.start(["true"], "/", os.environ, "up after fencing")


def test_a_run_that_exceeds_its_timeout_is_stopped_and_says_so():
    reasons: list[str] = []
    registry = RunRegistry(on_stop=reasons.append)
    seen: list[int] = []

    def watch():
        while not registry.live_pids():
            time.sleep(0.01)
        seen.extend(wait_for_tree(registry.live_pids()[0], 3))

    watcher = threading.Thread(target=watch)
    watcher.start()
    with pytest.raises(RunTimeoutError) as error:
        run_pulumi(IGNORES_TERM, "/", os.environ, operation="up", stack="ns-job", timeout=0.5, term_grace=0.2,
                   registry=registry)
    watcher.join()
    assert str(error.value).startswith("pulumi up for stack ns-job did not finish within 0.5 s; it was stopped")
    assert len(seen) == 3 and alive(seen) == []
    assert registry.live_pids() == [] and reasons == ["timeout"]


def test_a_failing_run_raises_the_automation_api_error_with_its_output():
    from pulumi.automation import CommandError

    with pytest.raises(CommandError, match="the stack is currently locked"):
        run_pulumi(["sh", "-c", "echo 'error: the stack is currently locked by 1 lock(s)' >&2; exit 255"], "/",
                   os.environ, operation="up", stack="s", timeout=10, registry=RunRegistry())


def test_leader_hosts_are_recorded_once_and_bounded():
    from iflearner.controller.leaderelection import (
        LEADER_HOSTS_ANNOTATION,
        MAX_LEADER_HOSTS,
        leader_hosts,
        with_leader_host,
    )

    first = with_leader_host(None, "pod-a")
    assert leader_hosts(first) == ["pod-a"]
    assert with_leader_host(first, "pod-a") is None, "no write when already recorded"
    both = with_leader_host({**first, "other": "kept"}, "pod-b")
    assert leader_hosts(both) == ["pod-a", "pod-b"] and both["other"] == "kept"
    many = None
    for index in range(MAX_LEADER_HOSTS + 5):
        many = with_leader_host(many, f"pod-{index}")
    assert len(leader_hosts(many)) == MAX_LEADER_HOSTS and leader_hosts(many)[-1] == f"pod-{MAX_LEADER_HOSTS + 4}"
    assert leader_hosts({LEADER_HOSTS_ANNOTATION: "not json"}) == []


def test_a_new_leader_knows_the_former_leader_hosts_and_a_standby_knows_none():
    from test_leaderelection import FakeLeaseApi

    api, events = FakeLeaseApi(), []
    fast = dict(lease_duration=0.6, renew_deadline=0.4, retry_period=0.1)
    a = LeaderElector(api, LeaderElectionConfig(identity="a", **fast), lambda: None, lambda: None)
    b = LeaderElector(api, LeaderElectionConfig(identity="b", **fast), lambda: None, lambda: None)
    a.hostname, b.hostname = "pod-a", "pod-b"
    a.start()
    deadline = time.monotonic() + 5
    while not a.is_leader and time.monotonic() < deadline:
        time.sleep(0.01)
    b.start()
    time.sleep(0.3)
    assert a.former_leader_hosts() == [] and b.former_leader_hosts() == []
    a._stop.set()  # the leader's Pod goes away without releasing
    deadline = time.monotonic() + 5
    while not b.is_leader and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b.is_leader
    assert b.former_leader_hosts() == ["pod-a"]
    b.stop()
    assert events == []
