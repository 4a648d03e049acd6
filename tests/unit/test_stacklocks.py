"""Stack locks: parsing the backend's listing, and the pure decision to remove a lock or wait."""

from __future__ import annotations

import datetime

from iflearner import stacklocks
from iflearner.stacklocks import (
    ALIVE_FOREIGN_HOST,
    ALIVE_PROCESS_RUNNING,
    ALIVE_UNKNOWN,
    DEAD_OWN_RUN_STOPPED,
    DEAD_PID_REUSED,
    DEAD_PROCESS_EXITED,
    DEAD_PROCESS_GONE,
    ProcessFacts,
    StackLock,
    StoppedRun,
    decide,
    judge_lock,
    parse_locks,
)

AT = datetime.datetime(2026, 11, 29, 17, 0, 0, tzinfo=datetime.UTC)
T = AT.timestamp()
ERROR = ("error: the stack is currently locked by 2 lock(s). Either wait for the other process(es) to end or "
         "delete the lock file with `pulumi cancel`.\n"
         "  s3://bucket/.pulumi/locks/organization/iflearner-jobs/s/1b2c.json: created by alice@laptop (pid 4242)"
         " at 2026-11-29T17:00:00Z\n"
         "  file:///var/state/.pulumi/locks/organization/iflearner-jobs/s/9f.json: created by root@operator-0 "
         "(pid 57) at 2026-11-29T18:00:00+01:00")


def lock(host: str = "here", pid: int = 57, created: datetime.datetime | None = AT) -> StackLock:
    return StackLock("file:///s/.pulumi/locks/x.json", "root", host, pid, created)


def test_locks_are_parsed_with_holder_and_time_from_the_backend_listing():
    locks = parse_locks(ERROR)
    assert [(lk.user, lk.host, lk.pid) for lk in locks] == [("alice", "laptop", 4242), ("root", "operator-0", 57)]
    assert locks[0].url == "s3://bucket/.pulumi/locks/organization/iflearner-jobs/s/1b2c.json"
    assert locks[0].created == AT and locks[1].created == AT  # the offset is honoured
    assert locks[0].describe() == "alice@laptop (pid 4242) since 2026-11-29T17:00:00Z"


def test_a_lock_from_another_host_is_never_removed_even_by_a_leader():
    verdict = judge_lock(lock(host="laptop"), "here", None)
    assert (verdict.dead, verdict.reason) == (False, ALIVE_FOREIGN_HOST)
    decision = decide("s", [lock(host="laptop")], "here", {})
    assert not decision.remove
    assert "root@laptop (pid 57) since 2026-11-29T17:00:00Z" in decision.message
    assert "pulumi cancel" in decision.message


def test_same_host_lock_whose_process_is_gone_or_exited_is_dead():
    assert judge_lock(lock(), "here", ProcessFacts(exists=False)).reason == DEAD_PROCESS_GONE
    assert judge_lock(lock(), "here", ProcessFacts(exists=True, exited=True)).reason == DEAD_PROCESS_EXITED


def test_a_reused_pid_is_told_apart_by_the_process_start_time():
    # After a container restart, pid 57 is a new process that started after the lock was written.
    reused = ProcessFacts(exists=True, started=T + 30, command="python")
    verdict = judge_lock(lock(), "here", reused)
    assert (verdict.dead, verdict.reason) == (True, DEAD_PID_REUSED)
    # The writer itself started before it wrote the lock: alive, wait.
    writer = ProcessFacts(exists=True, started=T - 5, command="pulumi")
    assert judge_lock(lock(), "here", writer).reason == ALIVE_PROCESS_RUNNING
    # Within the clock-rounding margin nothing is proven: wait.
    close = ProcessFacts(exists=True, started=T + stacklocks.START_TIME_MARGIN_SECONDS - 0.1, command="pulumi")
    assert not judge_lock(lock(), "here", close).dead


def test_a_pid_held_by_another_program_than_pulumi_is_not_the_writer():
    """PIDs wrap quickly on a busy host (pid_max 32768): a new process may get the writer's PID within
    the start-time margin; only a pulumi CLI can be the writer."""
    other = ProcessFacts(exists=True, started=T + 0.5, command="python3")
    verdict = judge_lock(lock(), "here", other)
    assert (verdict.dead, verdict.reason) == (True, DEAD_PID_REUSED) and "python3" in verdict.detail
    assert not judge_lock(lock(), "here", ProcessFacts(exists=True, started=T + 0.5, command="pulumi")).dead


def test_without_times_a_live_pid_is_waited_on():
    assert judge_lock(lock(created=None), "here", ProcessFacts(exists=True, started=T)).reason == ALIVE_UNKNOWN
    assert judge_lock(lock(), "here", ProcessFacts(exists=True, started=None)).reason == ALIVE_UNKNOWN


def test_a_lock_left_by_our_own_stopped_run_is_dead_even_if_the_pid_was_reused():
    ours = [StoppedRun(pid=57, started=T - 1)]
    reused_before = ProcessFacts(exists=True, started=T - 100)  # cannot happen for a reaped pid, but ours wins
    assert judge_lock(lock(), "here", reused_before, ours).reason == DEAD_OWN_RUN_STOPPED
    # A stopped run that started after the lock was written did not write it.
    later = [StoppedRun(pid=57, started=T + 60)]
    assert judge_lock(lock(), "here", reused_before, later).reason == ALIVE_PROCESS_RUNNING


def test_locks_are_removed_only_when_every_holder_is_dead():
    dead, foreign = lock(pid=57), lock(host="laptop", pid=4242)
    facts = {57: ProcessFacts(exists=False)}
    assert decide("s", [dead], "here", facts).remove
    both = decide("s", [dead, foreign], "here", facts)
    assert not both.remove and "laptop" in both.message and "HeldByAnotherHost" in both.message
    unknown = decide("s", [], "here", {})
    assert not unknown.remove and "did not say by whom" in unknown.message


def test_process_facts_of_this_process_and_of_a_missing_pid():
    import os
    import time

    mine = stacklocks.process_facts(os.getpid())
    assert mine.exists and not mine.exited and mine.started is not None
    assert mine.started <= time.time() + 1
    assert not stacklocks.process_facts(2**22 + 12345).exists


def test_a_lock_of_a_former_leader_host_is_dead_once_this_replica_leads():
    old_pod = lock(host="iflearner-operator-7d9f-abcde")
    verdict = judge_lock(old_pod, "iflearner-operator-7d9f-xyz12", None,
                         fenced_hosts=["iflearner-operator-7d9f-abcde"])
    assert (verdict.dead, verdict.reason) == (True, stacklocks.DEAD_FENCED_FORMER_LEADER)
    # Any other host is still waited on.
    assert not decide("s", [old_pod, lock(host="laptop")], "here", {},
                      fenced_hosts=["iflearner-operator-7d9f-abcde"]).remove
