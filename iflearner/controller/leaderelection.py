"""Lease-based leader election (coordination.k8s.io/v1), after client-go's.

A candidate tries to create or take over the Lease every ``retry_period``.
A Lease held by someone else can be taken once it has not changed for
``lease_duration`` as measured on *this* process's monotonic clock since it
was last observed to change (client-go's approach: no trust in other
machines' clocks). The leader renews every ``retry_period``; when renewing
has failed for ``renew_deadline`` it has lost the lease and must stop. On a
clean shutdown the leader releases the Lease so a standby takes over at its
next retry instead of after ``lease_duration``.

Fencing. Stopping is not enough: the Pulumi runs the leader started must be
dead before another replica may start its own on the same stacks. A
watchdog thread (not the renew loop, whose API call may hang for the
request timeout) fences at ``renewed + renew_deadline``, where ``renewed``
is when the last *successful* renewal was *sent*. The arithmetic
(:func:`fencing_plan`), all on each process's own monotonic clock:

- the API server stored that renewal after it was sent, and a standby saw it
  no earlier, so a standby may take over at ``renewed + lease_duration`` at
  the earliest;
- the old leader's runs are dead by ``renewed + renew_deadline + tick +
  term_grace + kill_settle`` (SIGTERM, SIGKILL after ``term_grace``, the
  kernel's teardown);
- ``term_grace`` is chosen so that this is at least ``clock_margin`` (5 % of
  the lease duration, for clocks that run at slightly different rates)
  before the earliest takeover; a configuration that leaves no room for it
  is refused.

With the defaults (15 s / 10 s / 2 s): fence at 10.1 s, SIGKILL at 13.25 s,
all dead by 14.25 s, takeover not before 15 s.

Former leaders. Each leader adds its hostname to the Lease's
``iflearner.git.iflytek.com/leader-hosts`` annotation. While this process
holds the Lease, every other host in it is a former leader whose runs were
fenced, so a stack lock such a host left (its Pod was replaced: a new Pod
has a new hostname) is known to be dead (:mod:`iflearner.stacklocks`).

The decisions (:func:`can_acquire`, :func:`next_spec`, :func:`fencing_plan`,
:func:`with_leader_host`) are pure.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from iflearner.controller.kubeapi import KubeApi, collection_path, object_path

log = logging.getLogger(__name__)

LEASES = "/apis/coordination.k8s.io/v1"


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


@dataclass(frozen=True)
class LeaderElectionConfig:
    namespace: str = "iflearner-system"
    name: str = "iflearner-operator"
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def validated(self) -> LeaderElectionConfig:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > retry period > 0, got "
                f"{self.lease_duration} / {self.renew_deadline} / {self.retry_period}"
            )
        return self


# How often the watchdog looks at the renew deadline.
FENCE_TICK_SECONDS = 0.1
# Clocks of two replicas may run at slightly different rates over a lease.
CLOCK_MARGIN_FRACTION = 0.05


@dataclass(frozen=True)
class FencingPlan:
    """When the old leader's runs are stopped and dead, relative to its last successful renewal."""

    term_grace: float  # SIGTERM, then SIGKILL this much later
    fence_at: float  # the watchdog fences (renew deadline + tick)
    dead_by: float  # every run is dead
    takeover_at: float  # the earliest moment another replica may hold the lease
    margin: float  # takeover_at - dead_by


def fencing_plan(config: LeaderElectionConfig, max_term_grace: float, kill_settle: float,
                 tick: float = FENCE_TICK_SECONDS) -> FencingPlan:
    """The SIGTERM grace that lets runs stop cleanly yet die before the lease can pass on.

    Raises ValueError when ``lease_duration - renew_deadline`` leaves no room to stop runs.
    """
    fence_at = config.renew_deadline + tick
    margin = CLOCK_MARGIN_FRACTION * config.lease_duration
    room = config.lease_duration - margin - kill_settle - fence_at
    if room < 0:
        raise ValueError(
            f"leader election leaves no time to stop Pulumi runs before the lease can pass to another "
            f"replica: lease duration ({config.lease_duration:g} s) must exceed renew deadline "
            f"({config.renew_deadline:g} s) by at least {tick + kill_settle + margin:.2f} s")
    grace = min(max_term_grace, room)
    dead_by = fence_at + grace + kill_settle
    return FencingPlan(round(grace, 3), round(fence_at, 3), round(dead_by, 3), config.lease_duration,
                       round(config.lease_duration - dead_by, 3))


LEADER_HOSTS_ANNOTATION = "iflearner.git.iflytek.com/leader-hosts"
MAX_LEADER_HOSTS = 32


def leader_hosts(annotations: Mapping[str, str] | None) -> list[str]:
    """The hostnames recorded on the Lease (oldest first); a malformed value reads as none."""
    try:
        hosts = json.loads((annotations or {}).get(LEADER_HOSTS_ANNOTATION) or "[]")
    except ValueError:
        return []
    return [h for h in hosts if isinstance(h, str)] if isinstance(hosts, list) else []


def with_leader_host(annotations: Mapping[str, str] | None, host: str) -> dict[str, str] | None:
    """The annotations with ``host`` recorded, or None when it already is (no write needed).

    Only the most recent hosts are kept: a lock of a host that fell off the
    list is waited on, which is safe.
    """
    hosts = leader_hosts(annotations)
    if host in hosts:
        return None
    return {**(annotations or {}), LEADER_HOSTS_ANNOTATION: json.dumps([*hosts, host][-MAX_LEADER_HOSTS:])}


def micro_time(moment: datetime.datetime) -> str:
    """A MicroTime ('2006-01-02T15:04:05.000000Z')."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Observed:
    """The last Lease spec seen and when (monotonic) it was first seen in that state."""

    spec: Mapping[str, Any] | None
    since: float


def observe(previous: Observed | None, spec: Mapping[str, Any] | None, now: float) -> Observed:
    """Update the observation: the clock restarts only when the spec changed."""
    if previous is not None and previous.spec == spec:
        return previous
    return Observed(dict(spec) if spec is not None else None, now)


def can_acquire(observed: Observed, identity: str, now: float, default_duration: float) -> bool:
    """May ``identity`` take (or keep) the lease now?"""
    spec = observed.spec
    if spec is None:
        return True
    holder = spec.get("holderIdentity") or ""
    if not holder or holder == identity:
        return True
    duration = spec.get("leaseDurationSeconds") or default_duration
    return now >= observed.since + float(duration)


def next_spec(
    current: Mapping[str, Any] | None, identity: str, wall: datetime.datetime, duration: float
) -> dict[str, Any]:
    """The Lease spec after ``identity`` acquires or renews it."""
    current = current or {}
    now = micro_time(wall)
    same_holder = current.get("holderIdentity") == identity
    transitions = int(current.get("leaseTransitions") or 0)
    if current and not same_holder:  # as client-go: a released lease counts too
        transitions += 1
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, int(round(duration))),
        "acquireTime": current.get("acquireTime") if same_holder and current.get("acquireTime") else now,
        "renewTime": now,
        "leaseTransitions": transitions,
    }


def released_spec(current: Mapping[str, Any], wall: datetime.datetime) -> dict[str, Any]:
    """The Lease spec a leader writes when it steps down cleanly."""
    now = micro_time(wall)
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": now,
        "renewTime": now,
        "leaseTransitions": int(current.get("leaseTransitions") or 0),
    }


class LeaderElector:
    """Runs the acquire/renew loop on a thread of its own."""

    def __init__(
        self,
        api: KubeApi,
        config: LeaderElectionConfig,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        on_fence: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_fence`` is called (and must return only once this process's
        work is stopped) as soon as leadership is lost, before
        ``on_stopped_leading``."""
        self.api = api
        self.config = config.validated()
        self.identity = config.identity or default_identity()
        self.hostname = socket.gethostname()
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_fence = on_fence
        self._renewed: float | None = None  # when the last successful acquire/renew was sent
        self._lost = threading.Event()
        self._lose_lock = threading.Lock()
        self._clock = clock
        self._observed: Observed | None = None
        self._lease: dict[str, Any] | None = None
        self.holder: str | None = None  # the holder seen at the last attempt
        self._leader = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        return self._leader.is_set()

    def former_leader_hosts(self) -> list[str]:
        """Hosts that led before this process, whose runs were fenced; none unless this process leads."""
        lease = self._lease
        if not self.is_leader or lease is None:
            return []
        return [h for h in leader_hosts((lease.get("metadata") or {}).get("annotations")) if h != self.hostname]

    def _path(self) -> str:
        return object_path(LEASES, "leases", self.config.namespace, self.config.name)

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this process holds the lease afterwards."""
        now = self._clock()
        wall = datetime.datetime.now(datetime.UTC)
        lease = self.api.get_or_none(self._path())
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.config.name, "namespace": self.config.namespace,
                             "annotations": with_leader_host(None, self.hostname) or {}},
                "spec": next_spec(None, self.identity, wall, self.config.lease_duration),
            }
            try:
                self._lease = self.api.request(
                    "POST", collection_path(LEASES, "leases", self.config.namespace), body=body)
            except ApiException as error:
                if error.status == 409:
                    return False
                raise
            self._observed = observe(None, self._lease.get("spec"), now)
            self.holder = self.identity
            return True
        spec = lease.get("spec") or {}
        self.holder = spec.get("holderIdentity") or None
        self._observed = observe(self._observed, spec, now)
        if not can_acquire(self._observed, self.identity, now, self.config.lease_duration):
            return False
        lease["spec"] = next_spec(spec, self.identity, wall, self.config.lease_duration)
        metadata = lease.setdefault("metadata", {})
        annotations = with_leader_host(metadata.get("annotations"), self.hostname)
        if annotations is not None:
            metadata["annotations"] = annotations
        try:
            self._lease = self.api.request("PUT", self._path(), body=lease)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        self._observed = observe(self._observed, self._lease.get("spec"), now)
        self.holder = self.identity
        return True

    def _attempt(self) -> bool:
        sent = self._clock()
        try:
            if not self.try_acquire_or_renew():
                return False
        except Exception as error:  # noqa: BLE001 - the API being away is a failed attempt
            log.warning("lease attempt failed", extra={"error": str(error)[:300], "lease": self.config.name})
            return False
        # Measured from before the request: the server stored it later, and others saw it later still.
        self._renewed = sent
        return True

    def _jitter(self) -> float:
        return self.config.retry_period * (1 + 0.2 * random.random())

    def run(self) -> None:
        """Acquire, then renew until lost or stopped. Blocks."""
        log.info("waiting for the leader lease", extra={"identity": self.identity,
                                                         "lease": f"{self.config.namespace}/{self.config.name}"})
        while not self._stop.is_set():
            if self._attempt():
                break
            self._stop.wait(self._jitter())
        if self._stop.is_set():
            return
        self._leader.set()
        log.info("became the leader", extra={"identity": self.identity})
        threading.Thread(target=self._watchdog, name="leader-fence", daemon=True).start()
        threading.Thread(target=self._on_started, name="leader-started", daemon=True).start()
        while not self._stop.wait(self.config.retry_period) and not self._lost.is_set():
            if self._attempt():
                continue
            if self.holder is not None and self.holder != self.identity:
                self._lose("another candidate holds the lease")
                return

    def _deadline_passed(self) -> bool:
        renewed = self._renewed
        return renewed is not None and self._clock() >= renewed + self.config.renew_deadline

    def _watchdog(self) -> None:
        """Fence at the renew deadline even while the renew loop waits on a hanging API call."""
        while not self._stop.wait(FENCE_TICK_SECONDS) and not self._lost.is_set():
            if self._deadline_passed():
                self._lose(f"no successful renewal for {self.config.renew_deadline:g} s")
                return

    def _lose(self, why: str) -> None:
        """Leadership is over: fence (stop this process's work), then tell the owner. Once only."""
        with self._lose_lock:
            if self._lost.is_set():
                return
            self._lost.set()
            self._leader.clear()
        log.error("lost the leader lease", extra={"identity": self.identity, "why": why})
        try:
            self._on_fence()
        finally:
            self._on_stopped()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="leader-election", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, release: bool = True) -> None:
        """Stop the loop; release the lease when holding it, so a standby takes over at once."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.config.retry_period + 5)
        if release and self._leader.is_set():
            self._leader.clear()
            try:
                lease = self.api.get_or_none(self._path())
                if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                    lease["spec"] = released_spec(lease["spec"], datetime.datetime.now(datetime.UTC))
                    self.api.request("PUT", self._path(), body=lease)
                    log.info("released the leader lease", extra={"identity": self.identity})
            except Exception as error:  # noqa: BLE001 - best effort; the lease expires anyway
                log.warning("could not release the lease", extra={"error": str(error)[:300]})
