"""The stack runner's pure parts: change summaries, work directories (locks: test_stacklocks.py)."""

from __future__ import annotations

import json

from iflearner.stackrunner import StackResult, _summary_from_event_log


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


def test_each_backend_has_work_directories_of_its_own(tmp_path):
    from iflearner.stackrunner import RunnerSettings, backend_work_dir

    one = backend_work_dir(RunnerSettings("file:///a", "p", tmp_path))
    other = backend_work_dir(RunnerSettings("file:///b", "p", tmp_path))
    assert one != other and one.parent == other.parent == tmp_path / "stacks"
    secret_url = backend_work_dir(RunnerSettings("postgres://u:secret@h/db", "p", tmp_path))
    assert "secret" not in str(secret_url)
