"""The demo's own loop and its failure report, without a cluster (the real
demo runs in tests/integration/test_demo.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iflearner.local import demo as demo_module
from iflearner.local.demo import Demo


def _job(name: str, phase: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"role": "client", "host": f"{name}.example"},
            "status": {"phase": phase, "outputs": {"pod": name}}}


def test_a_party_whose_first_output_comes_late_is_followed_to_its_final_metric(tmp_path, capsys):
    demo = Demo(tmp_path, timeout=30)
    demo.poll_interval = 0
    polls = {"n": 0}

    def list_jobs() -> list[dict[str, Any]]:
        polls["n"] += 1
        done = polls["n"] >= 6
        return [_job(n.removesuffix(".yaml"), "Succeeded" if done else "Running") for n in demo_module.EXAMPLES]

    def read_log(pod: str) -> str | None:
        if pod != "party-b":
            return ""
        if polls["n"] < 4:
            return None  # started, nothing printed yet: what the kubernetes client returns
        return ("FL-START party=party-b epochs=1\nFL-EPOCH party=party-b epoch=1 loss=0.5 accuracy=0.7\n"
                "FL-DONE party=party-b epochs=1 loss=0.5 accuracy=0.7\n")

    jobs = demo.follow_training(list_jobs, read_log)

    assert {j["status"]["phase"] for j in jobs} == {"Succeeded"}
    out = capsys.readouterr().out
    assert "party-b epoch 1: loss 0.5000, accuracy 0.700" in out
    assert "final metric of party-b: loss 0.5000, accuracy 0.700" in out
    assert out.count("party-b epoch 1:") == 1


def test_an_unexpected_failure_says_where_and_keeps_the_traceback_then_cleans_up(tmp_path, monkeypatch, capsys):
    demo = Demo(tmp_path, timeout=30)
    cleaned = []
    monkeypatch.setattr(demo.cluster, "running_state", lambda: None)
    monkeypatch.setattr(demo, "down", lambda: cleaned.append(True) or True)

    def broken_bring_up() -> Path:
        text: Any = None
        return text.splitlines()  # the crash of issue 23

    monkeypatch.setattr(demo, "_bring_up", broken_bring_up)
    with pytest.raises(AttributeError):
        demo.run(keep=False)

    assert cleaned == [True]
    out = capsys.readouterr().out
    assert "failed with AttributeError at test_demo_progress.py:" in out and "in broken_bring_up" in out
    assert str(demo.failure_log) in out
    assert "text.splitlines()" in demo.failure_log.read_text()
