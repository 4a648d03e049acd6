"""Host-wide settings that every real-node slot needs, made once and undone once.

Some of what a real node changes is the whole host's, not its slot's: sysctls
(``ip_forward``, ``bridge-nf-call-iptables``, kubelet's kernel tunables), the
propagation of ``/`` (kubelet needs it rshared), and system directories the
runtime creates (``/run/netns``, kubelet's fixed ``/var/lib/kubelet``). Each slot
used to record and restore them alone, so stopping one slot undid them under
another that still ran, and the last one out restored values that were
already changed.

They are reference-counted here instead, in one record under ``/run`` (gone at
reboot, with everything it describes), read and written under an exclusive
``flock``:

- the first ``up`` of any slot takes the snapshot (``before``) and then makes
  the changes; later ``up``s only add themselves as holders;
- ``down`` removes its holder; the last holder out gets the snapshot back to
  restore, and the record goes;
- a holder whose cluster is no longer alive (``kill -9``, a reboot of the
  processes) is dropped by whoever next takes the lock; the snapshot stays
  (the host still carries the changes), so that values seen before the very
  first ``up`` are what the last ``down`` restores, across any crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RECORD = Path("/run/iflearner-realnode-host.json")
LOCK = Path("/run/iflearner-realnode-host.lock")

Snapshot = dict[str, Any]


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load() -> dict[str, Any]:
    try:
        return json.loads(RECORD.read_text())
    except (OSError, ValueError):
        return {}


def _save(record: dict[str, Any]) -> None:
    temporary = RECORD.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=1, sort_keys=True))
    temporary.replace(RECORD)


def _live_holders(record: dict[str, Any], alive: Callable[[int, str], bool]) -> dict[str, str]:
    return {slot: data_dir for slot, data_dir in (record.get("holders") or {}).items()
            if alive(int(slot), data_dir)}


def acquire(slot: int, data_dir: str, snapshot: Callable[[], Snapshot],
            alive: Callable[[int, str], bool], change: Callable[[Snapshot], None]) -> Snapshot:
    """Join the holders; the first (no live holder, no snapshot) takes ``snapshot()``. Then
    ``change(before)`` is called under the lock, so that a concurrent ``down`` never restores
    between the snapshot and the change. Returns the snapshot (the values before the first)."""
    with _locked():
        record = _load()
        holders = _live_holders(record, alive)
        before = record.get("before")
        if before is None:
            before = snapshot()
        holders[str(slot)] = data_dir
        _save({"before": before, "holders": holders})
        change(before)
        return before


def release(slot: int, data_dir: str, alive: Callable[[int, str], bool],
            restore: Callable[[Snapshot], list[str]]) -> list[str]:
    """Leave the holders. The last one out calls ``restore(before)`` under the lock and removes
    the record; returns what could not be restored. A slot that was never a holder (an old
    state file) changes nothing."""
    with _locked():
        record = _load()
        if not record:
            return []
        holders = _live_holders(record, alive)
        if holders.get(str(slot)) == data_dir:
            del holders[str(slot)]
        if holders:
            _save({"before": record.get("before"), "holders": holders})
            return []
        problems = restore(record.get("before") or {})
        RECORD.unlink(missing_ok=True)
        return problems


def holders() -> dict[int, str]:
    """The slots recorded as holding the host's settings (alive or not), for tests and messages."""
    return {int(slot): data_dir for slot, data_dir in (_load().get("holders") or {}).items()}
