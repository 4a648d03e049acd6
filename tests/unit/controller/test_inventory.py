"""Lost stacks, pure parts: which applied jobs have no stack, and a backend that cannot be listed."""

from __future__ import annotations

from typing import Any

from iflearner.controller import gating
from iflearner.controller.inventory import REBUILD_REASON, Inventory, lost_stacks


def _job(namespace: str, name: str, applied: Any = None, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"namespace": namespace, "name": name}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-06T00:00:00Z"
    return {"metadata": metadata, "status": {"applied": applied} if applied is not None else {}}


APPLIED = {"fingerprint": "f", "objects": {}}


def test_only_applied_jobs_without_a_stack_are_lost() -> None:
    jobs = [_job("a", "kept", APPLIED), _job("a", "lost", APPLIED), _job("a", "new"),
            _job("a", "going", APPLIED, deleting=True), _job("b", "odd", "not a record")]
    assert lost_stacks(jobs, {"a.kept"}) == ["a/lost"]
    assert lost_stacks(jobs, {"a.kept", "a.lost"}) == []


def test_a_backend_that_cannot_be_listed_rebuilds_nothing() -> None:
    listings: list[Any] = [{"a.kept"}, RuntimeError("connection refused")]

    def list_stacks() -> set[str]:
        result = listings.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    inventory = Inventory(list_stacks)
    jobs = [_job("a", "kept", APPLIED), _job("a", "lost", APPLIED)]
    assert inventory.take(jobs) == ["a/lost"] and inventory.is_lost("a/lost")
    inventory.rebuilt("a/lost")
    assert not inventory.is_lost("a/lost")
    assert inventory.take(jobs) is None  # unreachable: no verdict, nothing marked
    assert not inventory.is_lost("a/lost")


def test_a_lost_stack_runs_up_only_when_nothing_else_does() -> None:
    in_sync = gating.Decision(False, "up to date")
    rebuild = gating.with_lost_stack(in_sync, True, REBUILD_REASON)
    assert rebuild.should_run and not rebuild.refresh and rebuild.reason == REBUILD_REASON
    assert gating.with_lost_stack(in_sync, False, REBUILD_REASON) == in_sync
