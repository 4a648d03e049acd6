"""The stack runner's pure parts: change summaries, stale-lock decisions."""

from __future__ import annotations

import json
import os

from iflearner.stackrunner import LockHolder, StackResult, _summary_from_event_log, lock_holders, lock_is_stale


def test_summary_is_read_from_the_last_summary_event(tmp_path):
    log = tmp_path / "events.json"
    log.write_text("\n".join([
        json.dumps({"sequence": 1, "preludeEvent": {}}),
        "not json",
        json.dumps({"sequence": 9, "summaryEvent": {"resourceChanges": {"create": 7, "same": 2}}}),
    ]))
    assert _summary_from_event_log(log) == {"create": 7, "same": 2}
    assert _summary_from_event_log(tmp_path / "missing.json") == {}


def test_reads_and_sames_are_not_changes():
    assert not StackResult("up", "s", True, changes={"same": 9, "read": 1}).changed
    assert StackResult("up", "s", True, changes={"same": 9, "update": 1}).changed


def test_lock_holders_are_parsed_from_the_backend_error():
    error = ("the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or "
             "delete the lock file with `pulumi cancel`.\n  file:///s/.pulumi/locks/x.json: "
             "created by root@node-1 (pid 4242) at 2026-11-29T17:00:00Z")
    assert lock_holders(error) == [LockHolder("node-1", 4242)]


def test_only_dead_or_elected_foreign_locks_are_stale():
    assert not lock_is_stale(LockHolder("here", os.getpid()), "here", foreign_locks_are_stale=True)
    dead = LockHolder("here", 2**22 + 12345)
    assert lock_is_stale(dead, "here", foreign_locks_are_stale=False)
    assert not lock_is_stale(LockHolder("elsewhere", 1), "here", foreign_locks_are_stale=False)
    assert lock_is_stale(LockHolder("elsewhere", 1), "here", foreign_locks_are_stale=True)


def test_each_backend_has_work_directories_of_its_own(tmp_path):
    from iflearner.stackrunner import RunnerSettings, backend_work_dir

    one = backend_work_dir(RunnerSettings("file:///a", "p", tmp_path))
    other = backend_work_dir(RunnerSettings("file:///b", "p", tmp_path))
    assert one != other and one.parent == other.parent == tmp_path / "stacks"
    secret_url = backend_work_dir(RunnerSettings("postgres://u:secret@h/db", "p", tmp_path))
    assert "secret" not in str(secret_url)
