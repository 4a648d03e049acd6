"""The work queue: dedup, one worker per key, delays and per-key backoff."""

from __future__ import annotations

import threading
import time

from iflearner.controller.workqueue import WorkQueue, exponential_backoff


def test_backoff_doubles_from_one_second_and_caps_at_five_minutes():
    assert [exponential_backoff(n) for n in range(0, 6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert exponential_backoff(9) == 256.0
    assert exponential_backoff(10) == 300.0
    assert exponential_backoff(10_000) == 300.0


def test_adding_a_queued_key_again_is_a_no_op():
    queue = WorkQueue()
    queue.add("ns/a")
    queue.add("ns/b")
    queue.add("ns/a")
    assert len(queue) == 2
    assert queue.get(timeout=1) == "ns/a"
    assert queue.get(timeout=1) == "ns/b"
    assert queue.get(timeout=0.01) is None


def test_key_added_while_processing_is_handed_out_only_after_done():
    queue = WorkQueue()
    queue.add("ns/a")
    key = queue.get(timeout=1)
    queue.add("ns/a")  # an event arrives while a worker holds the key
    assert len(queue) == 0
    assert queue.get(timeout=0.05) is None, "a second worker must not get the same key"
    queue.done(key)
    assert len(queue) == 1
    assert queue.get(timeout=1) == "ns/a"
    queue.done("ns/a")
    assert queue.get(timeout=0.01) is None


def test_never_two_workers_on_one_key():
    queue = WorkQueue()
    active: set[str] = set()
    overlaps: list[str] = []
    processed: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            key = queue.get()
            if key is None:
                return
            with lock:
                if key in active:
                    overlaps.append(key)
                active.add(key)
            time.sleep(0.002)
            with lock:
                active.discard(key)
                processed.append(key)
            queue.done(key)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for i in range(400):
        queue.add(f"ns/{i % 5}")
        if i % 50 == 0:
            time.sleep(0.005)
    deadline = time.monotonic() + 5
    while (len(queue) or queue.processing()) and time.monotonic() < deadline:
        time.sleep(0.01)
    queue.shutdown()
    for thread in threads:
        thread.join(timeout=5)
    assert not overlaps
    assert set(processed) == {f"ns/{i}" for i in range(5)}
    assert len(processed) < 400, "repeated adds of a queued key are coalesced"


def test_add_after_delays_and_the_earlier_delay_wins():
    queue = WorkQueue()
    queue.add_after("ns/a", 10)
    queue.add_after("ns/a", 0.05)
    assert len(queue) == 0 and queue.delayed() == 1
    started = time.monotonic()
    assert queue.get(timeout=2) == "ns/a"
    assert 0.04 <= time.monotonic() - started < 1
    queue.done("ns/a")
    assert queue.get(timeout=0.1) is None, "the superseded 10 s delay is dropped"


def test_later_delay_does_not_postpone_an_earlier_one():
    queue = WorkQueue()
    queue.add_after("ns/a", 0.05)
    queue.add_after("ns/a", 10)
    assert queue.get(timeout=2) == "ns/a"


def test_add_now_overrides_a_pending_delay():
    queue = WorkQueue()
    queue.add_after("ns/a", 10)
    queue.add("ns/a")
    assert queue.get(timeout=0.5) == "ns/a"
    queue.done("ns/a")
    assert queue.delayed() == 0


def test_rate_limited_requeues_back_off_exponentially_until_forget():
    queue = WorkQueue(base_delay=0.01, max_delay=0.04)
    delays = [queue.add_rate_limited("ns/a") for _ in range(4)]
    assert delays == [0.01, 0.02, 0.04, 0.04]
    assert queue.num_requeues("ns/a") == 4
    assert queue.num_requeues("ns/b") == 0
    queue.forget("ns/a")
    assert queue.num_requeues("ns/a") == 0
    assert queue.add_rate_limited("ns/a") == 0.01
    assert queue.get(timeout=1) == "ns/a"


def test_get_blocks_until_an_add_from_another_thread():
    queue = WorkQueue()
    timer = threading.Timer(0.05, queue.add, args=("ns/a",))
    timer.start()
    assert queue.get(timeout=2) == "ns/a"
    timer.join()


def test_shutdown_wakes_blocked_workers_and_refuses_new_keys():
    queue = WorkQueue()
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(queue.get()))
    thread.start()
    time.sleep(0.05)
    queue.shutdown()
    thread.join(timeout=2)
    assert results == [None]
    queue.add("ns/a")
    assert len(queue) == 0 and queue.shutting_down


def test_wait_idle_waits_for_in_flight_keys():
    queue = WorkQueue()
    queue.add("ns/a")
    key = queue.get(timeout=1)
    queue.shutdown()
    assert not queue.wait_idle(timeout=0.05)
    threading.Timer(0.05, queue.done, args=(key,)).start()
    assert queue.wait_idle(timeout=2)
