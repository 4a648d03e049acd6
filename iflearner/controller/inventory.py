"""The state backend's inventory: a job whose stack was lost is rebuilt, not left without one.

A job in sync never touches the state backend (gating), so a lost stack (the state volume gone,
the backend URL changed to an empty one) would go unnoticed until the job changes, and a chaos
run's invariant "one stack per job" would not hold. So when the workers start and at every resync
the controller lists the backend's stacks once (one CLI process for all jobs) and compares them
with the jobs that were applied (``status.applied``): an applied job without a stack had its state
lost. Its next pass runs ``up``, which creates the stack again and adopts the job's objects as
they are: the provider creates by server-side apply (an upsert), so an object of the same name is
updated in place, not deleted or duplicated, and the Pod, whose spec did not change, stays the
same Pod. Preflight has made sure first that each such object is the job's own (its ``job-uid``
label). An Event (``StackRebuilt``) says what happened.

A backend that cannot be listed (unreachable, refused credentials) proves nothing: no job is
rebuilt, the failure is logged and counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from iflearner.job import stack_name_of

log = logging.getLogger(__name__)

REBUILD_REASON = "the job's stack is missing from the state backend: rebuilding it from the job's objects"


def lost_stacks(jobs: Iterable[Mapping[str, Any]], existing: Collection[str]) -> list[str]:
    """The jobs (``namespace/name``) that were applied but have no stack in ``existing``."""
    lost = []
    for job in jobs:
        metadata = job.get("metadata") or {}
        applied = (job.get("status") or {}).get("applied")
        if metadata.get("deletionTimestamp") or not isinstance(applied, Mapping) or not applied.get("fingerprint"):
            continue
        namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
        if stack_name_of(namespace, name) not in existing:
            lost.append(f"{namespace}/{name}")
    return sorted(lost)


class Inventory:
    """Which jobs' stacks are lost, from the last listing of the backend."""

    def __init__(self, list_stacks: Callable[[], Collection[str]]) -> None:
        self._list_stacks = list_stacks
        self._lost: set[str] = set()
        self._lock = threading.Lock()

    def take(self, jobs: Iterable[Mapping[str, Any]]) -> list[str] | None:
        """List the backend and note the jobs whose stacks are lost; those keys (to re-queue), or
        None when the backend cannot be listed (then the last listing's verdict stands)."""
        try:
            existing = set(self._list_stacks())
        except Exception as error:  # noqa: BLE001 - a backend that cannot be listed proves nothing
            log.warning("cannot list the state backend's stacks: no lost stack is rebuilt until it can be",
                        extra={"error": str(error)[:500]})
            return None
        lost = lost_stacks(jobs, existing)
        with self._lock:
            self._lost = set(lost)
        if lost:
            log.warning("jobs whose stacks are missing from the state backend", extra={"jobs": ", ".join(lost)})
        return lost

    def is_lost(self, key: str) -> bool:
        with self._lock:
            return key in self._lost

    def rebuilt(self, key: str) -> None:
        with self._lock:
            self._lost.discard(key)
