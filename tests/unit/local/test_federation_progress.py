from __future__ import annotations

from iflearner.local.progress import LogFollower, describe, final_metrics, parse_event


def test_epoch_round_and_final_lines_become_progress():
    epoch = parse_event("FL-EPOCH party=client1 epoch=2 loss=0.412345 accuracy=0.801000 train_s=0.001")
    assert describe(epoch) == "client1 epoch 2: loss 0.4123, accuracy 0.801"
    done = parse_event("FL-DONE  party=client1 epochs=5 loss=0.369810 accuracy=0.834000")
    assert "final loss 0.3698, accuracy 0.834" in describe(done)
    assert final_metrics([epoch, done]) == {"client1": (0.36981, 0.834)}
    assert parse_event("2026-11-29 INFO something else") is None
    assert describe(parse_event("FL-START party=c epochs=5 server=h:1 samples=1000")) is None


def test_the_follower_yields_each_line_once_and_survives_missing_logs():
    logs = {"p": "FL-EPOCH party=p epoch=1 loss=1 accuracy=0.5\n"}

    def read(pod):
        if pod not in logs:
            raise RuntimeError("container not started")
        return logs[pod]

    follower = LogFollower(read)
    assert [e.fields["epoch"] for e in follower.new_events("p")] == ["1"]
    assert follower.new_events("p") == []
    logs["p"] += "noise\nFL-EPOCH party=p epoch=2 loss=0.9 accuracy=0.6\n"
    assert [e.fields["epoch"] for e in follower.new_events("p")] == ["2"]
    assert follower.new_events("missing") == []


def test_a_started_container_that_printed_nothing_yet_is_followed_once_it_prints():
    # The kubernetes client returns None (not "") for an empty log.
    answers = iter([None, None, "FL-START party=p epochs=1\nFL-EPOCH party=p epoch=1 loss=1 accuracy=0.5\n"])
    follower = LogFollower(lambda pod: next(answers))
    assert follower.new_events("p") == []
    assert follower.new_events("p") == []
    assert [e.kind for e in follower.new_events("p")] == ["FL-START", "FL-EPOCH"]


def test_secure_aggregation_is_reported_without_the_mask():
    event = parse_event("FL-MASK party=client1 peers=1 mask=0.624551")
    assert event is not None
    line = describe(event)
    assert line == "client1 exchanged keys and masks with 1 peer(s): its uploads are masked"
    assert "0.62" not in line
