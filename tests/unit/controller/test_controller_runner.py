"""The controller's runner: the change summary comes from the engine's event log."""

from __future__ import annotations

import json

from iflearner.controller.runner import ControllerStackRunner, _summary_from_event_log, supports_refresh


def test_summary_is_read_from_the_last_summary_event(tmp_path):
    log = tmp_path / "events.json"
    log.write_text("\n".join([
        json.dumps({"sequence": 1, "preludeEvent": {}}),
        "not json",
        json.dumps({"sequence": 9, "summaryEvent": {"resourceChanges": {"create": 7, "same": 2}}}),
    ]))
    assert _summary_from_event_log(log) == {"create": 7, "same": 2}
    assert _summary_from_event_log(tmp_path / "missing.json") == {}


def test_the_controller_runner_can_refresh():
    assert supports_refresh(ControllerStackRunner)
    assert not supports_refresh(object())
