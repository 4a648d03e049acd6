"""A rate-limited work queue of keys, with the semantics of client-go's.

- A key is queued at most once: adding a queued key again does nothing.
- A key is never handed to two workers at once: a key added while a worker
  holds it is marked dirty and handed out again only after ``done``.
- ``add_after`` delays a key; when the same key is delayed twice, the
  earlier time wins.
- ``add_rate_limited`` delays a key by an exponential per-key backoff
  (base 1 s, doubling, capped at 300 s) until ``forget`` resets it.

Delayed keys are moved into the queue by whichever worker waits in ``get``,
so no extra thread is needed.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

DEFAULT_BASE_DELAY = 1.0
DEFAULT_MAX_DELAY = 300.0


def exponential_backoff(
    failures: int, base: float = DEFAULT_BASE_DELAY, cap: float = DEFAULT_MAX_DELAY
) -> float:
    """Delay before retry number ``failures`` (1 -> base, 2 -> 2*base, ...), capped."""
    if failures <= 0:
        return 0.0
    # Avoid huge powers: 2**40 seconds is already far beyond any cap.
    return min(cap, base * (2 ** min(failures - 1, 40)))


class ShutDownError(RuntimeError):
    """Raised by ``add`` variants after ``shutdown`` (never by ``get``)."""


class WorkQueue:
    """A deduplicating, rate-limited, delaying queue of hashable keys."""

    def __init__(
        self,
        base_delay: float = DEFAULT_BASE_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._waiting: dict[Hashable, float] = {}  # key -> ready time of its earliest delay
        self._heap: list[tuple[float, int, Hashable]] = []
        self._sequence = itertools.count()
        self._failures: dict[Hashable, int] = {}
        self._shutting_down = False

    # -- adding ---------------------------------------------------------------------------------

    def add(self, key: Hashable) -> None:
        """Queue ``key`` now (no-op when already queued)."""
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: Hashable) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._waiting.pop(key, None)
        self._dirty.add(key)
        if key in self._processing:
            return  # handed out again after done()
        self._queue.append(key)
        self._cond.notify()

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Queue ``key`` after ``seconds``; an earlier pending delay of the same key wins."""
        if seconds <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutting_down:
                return
            ready = self._clock() + seconds
            current = self._waiting.get(key)
            if current is not None and current <= ready:
                return
            self._waiting[key] = ready
            heapq.heappush(self._heap, (ready, next(self._sequence), key))
            self._cond.notify()

    def when(self, key: Hashable) -> float:
        """Backoff for the next failure of ``key`` (and count that failure)."""
        with self._cond:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
        return exponential_backoff(failures, self._base_delay, self._max_delay)

    def add_rate_limited(self, key: Hashable) -> float:
        """Queue ``key`` after its per-key exponential backoff; returns the delay used."""
        delay = self.when(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        """Reset the backoff of ``key`` (call after a successful reconcile)."""
        with self._cond:
            self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        """How many rate-limited requeues ``key`` has had since its last ``forget``."""
        with self._cond:
            return self._failures.get(key, 0)

    # -- consuming ------------------------------------------------------------------------------

    def _promote_due_locked(self) -> float | None:
        """Move due delayed keys into the queue; return seconds until the next one."""
        now = self._clock()
        while self._heap:
            ready, _, key = self._heap[0]
            if self._waiting.get(key) != ready:
                heapq.heappop(self._heap)  # superseded by an earlier delay or an add
                continue
            if ready > now:
                return ready - now
            heapq.heappop(self._heap)
            del self._waiting[key]
            self._add_locked(key)
        return None

    def get(self, timeout: float | None = None) -> Hashable | None:
        """Block until a key is available and hand it out; None on shutdown or timeout.

        The caller must call ``done(key)`` when it has finished with the key.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                next_due = self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                if self._shutting_down:
                    return None
                wait = next_due
                if deadline is not None:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        return None
                    wait = remaining if wait is None else min(wait, remaining)
                self._cond.wait(wait)

    def done(self, key: Hashable) -> None:
        """Mark ``key`` finished; if it was added meanwhile, queue it again."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()
            elif self._shutting_down and not self._processing:
                self._cond.notify_all()

    # -- lifecycle and inspection ---------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop handing out keys: ``get`` returns None once the queue is drained of workers."""
        with self._cond:
            self._shutting_down = True
            self._queue.clear()
            self._dirty.clear()
            self._waiting.clear()
            self._heap.clear()
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """After ``shutdown``: wait until no key is being processed. True when idle."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while self._processing:
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def shutting_down(self) -> bool:
        with self._cond:
            return self._shutting_down

    def __len__(self) -> int:
        """Keys ready to be handed out (the queue-depth metric); delayed keys excluded."""
        with self._cond:
            self._promote_due_locked()
            return len(self._queue)

    def delayed(self) -> int:
        """Keys waiting for a delay to pass."""
        with self._cond:
            return len(self._waiting)

    def processing(self) -> int:
        with self._cond:
            return len(self._processing)
