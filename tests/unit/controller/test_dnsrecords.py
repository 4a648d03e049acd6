"""DNS record repair, pure parts: what the cache keeps, which keys an event took away, which jobs
publish them, and whether a job's records are served as declared."""

from __future__ import annotations

from typing import Any

from iflearner.controller import gating
from iflearner.controller.dnsrecords import (
    RECORDS_KEY,
    changed_keys,
    jobs_holding,
    record_digest,
    record_problem,
    records_transform,
)
from iflearner.desired import DnsShard, zone_file, zone_file_key

HOST = "job1.server.iflearner.com"
KEY = zone_file_key(HOST)
TEXT = zone_file(HOST, "10.0.0.1")


def _cached(data: dict[str, str]) -> dict[str, Any]:
    return records_transform({"kind": "ConfigMap", "metadata": {"name": "records", "managedFields": [{}]},
                              "data": dict(data)})


def test_the_cache_keeps_a_digest_per_key_not_the_zone_files() -> None:
    cached = _cached({KEY: TEXT})
    assert cached[RECORDS_KEY] == {KEY: record_digest(TEXT)}
    assert "data" not in cached and "managedFields" not in cached["metadata"]


def test_removed_and_changed_keys_need_repair_added_ones_do_not() -> None:
    other = zone_file_key("job2.server.iflearner.com")
    old = _cached({KEY: TEXT, other: TEXT})
    assert changed_keys(old, _cached({other: TEXT})) == {KEY}
    assert changed_keys(old, _cached({KEY: "edited", other: TEXT})) == {KEY}
    assert changed_keys(old, None) == {KEY, other}  # the shard deleted
    assert changed_keys(_cached({}), old) == set()
    assert changed_keys(None, old) == set()


def test_jobs_holding_a_key_are_found_by_their_applied_records() -> None:
    jobs = [
        {"metadata": {"namespace": "a", "name": "server"}, "status": {"applied": {"records": {HOST: "10.0.0.1"}}}},
        {"metadata": {"namespace": "b", "name": "other"},
         "status": {"applied": {"records": {"x.party.iflearner.com": "10.0.0.1"}}}},
        {"metadata": {"namespace": "c", "name": "new"}, "status": {}},
        {"metadata": {"namespace": "d", "name": "odd"}, "status": {"applied": "not a mapping"}},
    ]
    assert jobs_holding({KEY}, jobs) == ["a/server"]
    assert jobs_holding(set(), jobs) == []


def test_a_record_missing_changed_or_without_its_shard_is_a_problem() -> None:
    shards = (DnsShard(0, "records", {KEY: TEXT}),)
    assert record_problem(shards, "kube-system", lambda name: _cached({KEY: TEXT})) is None
    assert record_problem(shards, "kube-system", lambda name: _cached({})) == (
        f"its DNS record {KEY} is missing from kube-system/records")
    assert "was changed outside the operator" in record_problem(shards, "kube-system",
                                                                lambda name: _cached({KEY: "x"}))
    assert record_problem(shards, "kube-system", lambda name: None) == (
        "the DNS records ConfigMap kube-system/records is missing")
    assert record_problem((), "kube-system", lambda name: None) is None


def test_a_record_problem_runs_up_with_a_refresh_only_when_nothing_else_does() -> None:
    in_sync = gating.Decision(False, "up to date")
    repaired = gating.with_record_problem(in_sync, "its DNS record db.x is missing from kube-system/records")
    assert repaired.should_run and repaired.refresh and "db.x is missing" in repaired.reason
    assert gating.with_record_problem(in_sync, None) == in_sync
    changed = gating.Decision(True, "the spec changed")
    assert gating.with_record_problem(changed, "anything") == changed
