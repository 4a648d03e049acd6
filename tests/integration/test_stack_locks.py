"""Stack locks and run timeouts with the real Pulumi engine and a real file:// backend.

Locks are written where and as the DIY backend writes them
(``.pulumi/locks/<org>/<project>/<stack>/<uuid>.json`` with pid, username,
hostname, timestamp), so the CLI itself lists them and refuses to run; the
runner then decides whether to remove them.
"""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pulumi
import pytest

from iflearner import pulumiruns
from iflearner.stackrunner import PROJECT_NAME, RunnerSettings, StackRunner


@pytest.fixture
def registry() -> RunRegistryT:
    return pulumiruns.RunRegistry()


RunRegistryT = pulumiruns.RunRegistry


@pytest.fixture
def settings(tmp_path: Path) -> RunnerSettings:
    return RunnerSettings.local(tmp_path / "pulumi", passphrase="lock-test")


def state_root(settings: RunnerSettings) -> Path:
    return Path(settings.backend_url.removeprefix("file://"))


def lock_dir(settings: RunnerSettings, stack: str) -> Path:
    return state_root(settings) / ".pulumi" / "locks" / "organization" / PROJECT_NAME / stack


def write_lock(settings: RunnerSettings, stack: str, host: str, pid: int, at: datetime.datetime,
               user: str = "alice") -> Path:
    path = lock_dir(settings, stack) / f"{uuid.uuid4()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "username": user, "hostname": host,
                                "timestamp": at.isoformat().replace("+00:00", "Z")}))
    return path


def locks(settings: RunnerSettings, stack: str) -> list[Path]:
    return sorted(lock_dir(settings, stack).glob("*.json"))


def exporting(value: int):
    return lambda: pulumi.export("value", value)


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process named ``pulumi`` (as a lock's writer is), doing nothing."""
    program = tmp_path / "bin" / "pulumi"
    program.parent.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
    process = subprocess.Popen([str(program), "300"])
    yield process
    process.kill()
    process.wait()


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_a_lock_from_another_host_is_waited_on_and_its_holder_named(settings, registry):
    runner = StackRunner(settings, registry=registry)
    assert runner.up("foreign", exporting(1)).succeeded
    # A person's `pulumi up` on a laptop against the same backend holds the stack.
    lock = write_lock(settings, "foreign", "alice-laptop", 4242, now())
    result = runner.up("foreign", exporting(2))
    assert not result.succeeded and result.reason == "StackLocked"
    assert "locked by a run that may still be alive: alice@alice-laptop (pid 4242) since" in result.error
    assert "HeldByAnotherHost" in result.error and "pulumi cancel" in result.error
    assert lock.exists(), "a lock of a run that may be alive is never removed"
    destroy = runner.destroy("foreign")
    assert not destroy.succeeded and destroy.reason == "StackLocked" and lock.exists()
    # The person's run ends (its lock goes): the next attempt proceeds.
    lock.unlink()
    assert runner.up("foreign", exporting(2)).succeeded


def test_a_lock_of_a_former_leader_pod_is_removed_by_the_current_leader(settings, registry):
    """The old leader's Pod was replaced (a new Pod has a new hostname); its runs were fenced before the
    Lease passed on, so the leader that recorded it as a former leader host removes its lock."""
    old_pod = "iflearner-operator-5c7d9-old01"
    assert StackRunner(settings, registry=registry).up("handover", exporting(1)).succeeded
    lock = write_lock(settings, "handover", old_pod, 77, now(), user="root")
    standby_view = StackRunner(settings, registry=registry).up("handover", exporting(2))
    assert not standby_view.succeeded and lock.exists(), "without the Lease's record it is waited on"
    leader = StackRunner(settings, registry=registry, fenced_hosts=lambda: [old_pod])
    result = leader.up("handover", exporting(2))
    assert result.succeeded, result.error
    assert not lock.exists()


def test_a_lock_of_a_live_process_on_this_host_is_waited_on(settings, registry, sleeper):
    runner = StackRunner(settings, registry=registry)
    assert runner.up("live", exporting(1)).succeeded
    time.sleep(2.5)  # the lock is written well after the holder started, as a real holder's is
    lock = write_lock(settings, "live", socket.gethostname(), sleeper.pid, now())
    result = runner.up("live", exporting(2))
    assert not result.succeeded and result.reason == "StackLocked"
    assert f"(pid {sleeper.pid})" in result.error and "HolderRunning" in result.error
    assert lock.exists()


def test_a_lock_whose_pid_now_belongs_to_a_younger_process_is_removed(settings, registry, sleeper):
    """After a container restart the PID of the lock's writer belongs to another process: the lock
    was written a minute before that process started, so its writer is dead."""
    runner = StackRunner(settings, registry=registry)
    assert runner.up("reused", exporting(1)).succeeded
    lock = write_lock(settings, "reused", socket.gethostname(), sleeper.pid,
                      now() - datetime.timedelta(seconds=60))
    result = runner.up("reused", exporting(2))
    assert result.succeeded, result.error
    assert not lock.exists() and locks(settings, "reused") == []


def test_a_run_over_its_timeout_is_stopped_and_its_lock_recovered(settings, registry):
    runner = StackRunner(settings, registry=registry, run_timeout=5, term_grace=0)
    assert runner.up("slow", exporting(1)).succeeded
    release = threading.Event()
    seen: list[int] = []

    def stuck() -> None:  # a program that never finishes (as a hung provider call would)
        release.wait(120)

    def watch() -> None:
        while not registry.live_pids():
            time.sleep(0.02)
        time.sleep(2)
        seen.extend(info.pid for pid in registry.live_pids() for info in pulumiruns.tree(pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = runner.up("slow", stuck)
    release.set()
    watcher.join(10)
    assert not result.succeeded and result.reason == "RunTimedOut"
    assert result.error.startswith("pulumi up for stack slow did not finish within 5 s; it was stopped")
    assert seen, "the run's processes were seen while it ran"
    assert pulumiruns.live_of(seen) == [], "the CLI and every plugin it started are dead"
    # SIGKILL (no grace) left the lock of the update: ours, and dead.
    assert locks(settings, "slow"), "the killed run left its lock"
    retry = runner.up("slow", exporting(3))
    assert retry.succeeded, retry.error
    assert locks(settings, "slow") == []
    assert runner.outputs("slow") == {"value": 3}
