"""Host-wide settings are made by the first slot's up and restored by the last slot's down, to
the values before the first, across crashes (the registry's logic, on a temporary record)."""

from __future__ import annotations

from pathlib import Path

import pytest

from iflearner.localcluster import hostshare


@pytest.fixture(autouse=True)
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(hostshare, "RECORD", tmp_path / "host.json")
    monkeypatch.setattr(hostshare, "LOCK", tmp_path / "host.lock")
    return tmp_path / "host.json"


class Host:
    """A fake host: one setting, the clusters that are alive, what was restored."""

    def __init__(self) -> None:
        self.ip_forward = "0"
        self.alive: set[int] = set()
        self.restored: list[dict[str, str]] = []

    def snapshot(self) -> dict[str, str]:
        return {"ip_forward": self.ip_forward}

    def change(self, _before: dict[str, str]) -> None:
        self.ip_forward = "1"

    def restore(self, before: dict[str, str]) -> list[str]:
        self.ip_forward = before["ip_forward"]
        self.restored.append(before)
        return []

    def up(self, slot: int) -> None:
        hostshare.acquire(slot, f"/data/{slot}", self.snapshot, lambda s, _d: s in self.alive, self.change)
        self.alive.add(slot)

    def down(self, slot: int) -> None:
        self.alive.discard(slot)
        hostshare.release(slot, f"/data/{slot}", lambda s, _d: s in self.alive, self.restore)


def test_the_last_down_restores_what_the_first_up_saw(record: Path) -> None:
    host = Host()
    host.up(0)
    host.up(1)
    host.down(0)
    assert host.ip_forward == "1" and not host.restored, "slot 1 still runs"
    host.down(1)
    assert host.ip_forward == "0" and host.restored == [{"ip_forward": "0"}]
    assert not record.exists()


def test_a_crashed_slot_is_dropped_and_the_first_snapshot_survives(record: Path) -> None:
    host = Host()
    host.up(0)
    host.alive.discard(0)  # slot 0 crashes: its changes stay on the host
    host.up(1)  # no live holder, but the snapshot is the one from before slot 0
    assert hostshare.holders() == {1: "/data/1"}
    host.down(1)
    assert host.ip_forward == "0" and host.restored == [{"ip_forward": "0"}]


def test_a_slot_that_never_held_restores_nothing(record: Path) -> None:
    host = Host()
    host.up(0)
    hostshare.release(1, "/data/1", lambda s, _d: s in host.alive, host.restore)
    assert host.ip_forward == "1" and not host.restored and hostshare.holders() == {0: "/data/0"}
