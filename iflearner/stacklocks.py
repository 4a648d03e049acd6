"""Stack locks of Pulumi's DIY backends: who holds one, and may it be removed?

Every DIY backend (``file://``, ``s3://``, ``postgres://``, ...) keeps a
stack's locks as objects under ``.pulumi/locks/<org>/<project>/<stack>/``,
one ``<uuid>.json`` per running CLI, holding the writer's ``pid``,
``username``, ``hostname`` and ``timestamp`` (``pkg/backend/diy/lock.go``).
A CLI that finds another lock refuses to run and lists each lock as
``<url>: created by <user>@<host> (pid <pid>) at <RFC 3339 time>``; that
listing is all this module reads, so it works the same for every backend.
``pulumi cancel`` deletes *all* of a stack's locks.

The rule: a lock is removed only when its run is proven dead. Nothing on this
host can prove a run on another host dead (a person's ``pulumi`` against the
same bucket, a former leader still shutting down), so such a lock is waited
on -- with one exception: a host that was the operator's leader earlier and
is not now. A leader fences (kills) its runs before its Lease can pass on
(:mod:`iflearner.controller.leaderelection`), so once this process holds the
Lease, the runs of every former leader host are dead. Leaders record their
hostnames on the Lease for that reason. On this host a PID alone proves
nothing after a container restart (PIDs start again from 1), so the process
now holding that PID must run another program than ``pulumi``, or have
started *after* the lock was written, to count as a different process.

:func:`judge_lock` and :func:`decide` are pure; :func:`process_facts` gathers
what they need from /proc.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LOCKED_MESSAGE = "the stack is currently locked"

_LOCK_LINE = re.compile(
    r"(?P<url>\S+): created by (?P<user>[^@\s]*)@(?P<host>\S+) \(pid (?P<pid>\d+)\)"
    r"(?: at (?P<at>\S+))?"
)

# /proc start times are whole ticks since boot and boot time is whole
# seconds: a process that started within this margin of the lock's
# timestamp (itself rounded to seconds in the CLI's message) may be the
# writer, so it is not counted as a different process.
START_TIME_MARGIN_SECONDS = 2.0

# Locks are written by the Pulumi CLI; its process name (comm) is "pulumi".
# A PID held by any other program is not the writer's any more.
LOCK_WRITER_COMMAND = "pulumi"

# Reasons (CamelCase, as condition reasons are).
DEAD_OWN_RUN_STOPPED = "OwnRunStopped"
DEAD_PROCESS_GONE = "ProcessGone"
DEAD_PROCESS_EXITED = "ProcessExited"
DEAD_PID_REUSED = "PidReused"
DEAD_FENCED_FORMER_LEADER = "FencedFormerLeader"
ALIVE_FOREIGN_HOST = "HeldByAnotherHost"
ALIVE_PROCESS_RUNNING = "HolderRunning"
ALIVE_UNKNOWN = "HolderUnknown"


@dataclass(frozen=True)
class StackLock:
    """One lock as the backend lists it."""

    url: str
    user: str
    host: str
    pid: int
    created: datetime.datetime | None

    def describe(self) -> str:
        at = self.created.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if self.created else "?"
        return f"{self.user}@{self.host} (pid {self.pid}) since {at}"


@dataclass(frozen=True)
class ProcessFacts:
    """What /proc says about a PID on this host, now."""

    exists: bool
    exited: bool = False  # a zombie: the process is over, its parent has not reaped it yet
    started: float | None = None  # wall-clock (epoch seconds) start time
    command: str = ""


@dataclass(frozen=True)
class StoppedRun:
    """A run of this process that it stopped and reaped itself (a timeout, fencing)."""

    pid: int
    started: float  # epoch seconds


@dataclass(frozen=True)
class LockVerdict:
    lock: StackLock
    dead: bool
    reason: str
    detail: str


@dataclass(frozen=True)
class LockDecision:
    """Remove the stack's locks (all holders proven dead), or wait."""

    remove: bool
    verdicts: tuple[LockVerdict, ...]
    message: str


def parse_locks(error_text: str) -> list[StackLock]:
    """The locks listed in a locked stack's error (possibly none)."""
    locks = []
    for match in _LOCK_LINE.finditer(error_text):
        created = None
        if match["at"]:
            try:
                created = datetime.datetime.fromisoformat(match["at"].replace("Z", "+00:00"))
            except ValueError:
                created = None
            if created is not None and created.tzinfo is None:
                created = created.replace(tzinfo=datetime.UTC)
        locks.append(StackLock(match["url"], match["user"], match["host"], int(match["pid"]), created))
    return locks


def judge_lock(
    lock: StackLock,
    hostname: str,
    facts: ProcessFacts | None,
    stopped_runs: Collection[StoppedRun] = (),
    fenced_hosts: Collection[str] = (),
) -> LockVerdict:
    """Is the run that wrote ``lock`` proven dead? ``facts`` describes
    ``lock.pid`` on this host (None when the lock is from another host);
    ``fenced_hosts`` are former leader hosts, given only while this process
    holds the leader Lease."""
    if lock.host != hostname and lock.host in fenced_hosts:
        return LockVerdict(lock, True, DEAD_FENCED_FORMER_LEADER,
                           f"{lock.host} was this operator's leader before this replica, and a leader's runs "
                           "are stopped before its lease can pass on")
    if lock.host != hostname:
        return LockVerdict(lock, False, ALIVE_FOREIGN_HOST,
                           f"held by {lock.describe()} on another host; a run there cannot be proven dead "
                           "from here")
    created = lock.created.timestamp() if lock.created else None
    for run in stopped_runs:
        # Ours, stopped and reaped by us; the lock was written after that run started.
        if run.pid == lock.pid and (created is None or created + START_TIME_MARGIN_SECONDS >= run.started):
            return LockVerdict(lock, True, DEAD_OWN_RUN_STOPPED, f"left by our own run (pid {lock.pid}), "
                               "which this operator stopped")
    if facts is None or not facts.exists:
        return LockVerdict(lock, True, DEAD_PROCESS_GONE, f"no process {lock.pid} on this host")
    if facts.exited:
        return LockVerdict(lock, True, DEAD_PROCESS_EXITED, f"process {lock.pid} has exited")
    if facts.command and not facts.command.startswith(LOCK_WRITER_COMMAND):
        return LockVerdict(lock, True, DEAD_PID_REUSED,
                           f"pid {lock.pid} now belongs to {facts.command!r}, not to a pulumi CLI")
    if created is None or facts.started is None:
        return LockVerdict(lock, False, ALIVE_UNKNOWN,
                           f"process {lock.pid} exists and its start cannot be compared with the lock's time")
    if facts.started > created + START_TIME_MARGIN_SECONDS:
        return LockVerdict(lock, True, DEAD_PID_REUSED,
                           f"pid {lock.pid} now belongs to a process ({facts.command or '?'}) that started "
                           f"{facts.started - created:.0f} s after the lock was written")
    return LockVerdict(lock, False, ALIVE_PROCESS_RUNNING, f"process {lock.pid} ({facts.command or '?'}) "
                       "that wrote the lock is still running")


def decide(
    stack_name: str,
    locks: Sequence[StackLock],
    hostname: str,
    facts: Mapping[int, ProcessFacts],
    stopped_runs: Collection[StoppedRun] = (),
    fenced_hosts: Collection[str] = (),
) -> LockDecision:
    """Remove only when every lock is proven dead (``pulumi cancel`` removes them all)."""
    if not locks:
        return LockDecision(False, (), f"stack {stack_name} is locked, and the backend did not say by whom; "
                                       "waiting for the lock to go (remove it with `pulumi cancel` only if "
                                       "no run is alive)")
    verdicts = tuple(
        judge_lock(lock, hostname, facts.get(lock.pid) if lock.host == hostname else None, stopped_runs,
                   fenced_hosts)
        for lock in locks
    )
    if all(v.dead for v in verdicts):
        return LockDecision(True, verdicts, f"stack {stack_name}: removing locks of dead runs: "
                            + "; ".join(f"{v.lock.describe()}: {v.reason}: {v.detail}" for v in verdicts))
    alive = [v for v in verdicts if not v.dead]
    return LockDecision(False, verdicts, f"stack {stack_name} is locked by a run that may still be alive: "
                        + "; ".join(f"{v.lock.describe()} ({v.reason}: {v.detail})" for v in alive)
                        + ". Waiting for it, not removing the lock; if that run is gone for certain, "
                          "remove the lock with `pulumi cancel`.")


class StackLockedError(RuntimeError):
    """The stack is locked by a run that may be alive; its message names the holders."""

    reason = "StackLocked"

    def __init__(self, decision: LockDecision) -> None:
        super().__init__(decision.message)
        self.decision = decision


# -- gathering (I/O) ------------------------------------------------------------------------------

def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def process_facts(pid: int) -> ProcessFacts:
    """/proc's view of ``pid`` (start time as wall-clock seconds)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ProcessFacts(exists=False)
    command = stat[stat.find("(") + 1: stat.rindex(")")]
    # Fields after the parenthesised command (which may hold spaces): state is
    # the 3rd field of the line, starttime the 22nd.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return ProcessFacts(exists=True, exited=True, command=command)
    boot = _boot_time()
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") if boot is not None else None
    return ProcessFacts(exists=True, started=started, command=command)
