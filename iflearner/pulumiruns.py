"""Pulumi CLI processes of this operator: started with a deadline, tracked, and stopped for certain.

Each run is a ``pulumi`` process plus the plugins it starts (language host,
providers). They stay in the operator's process group (so a container or a
test harness that kills the operator's group kills them too), and are
stopped as a tree: SIGTERM to the CLI first (Pulumi cancels: it stops
starting steps, asks providers to cancel, and releases its stack lock), then,
after a grace period, SIGSTOP on every process of the tree (a stopped process
cannot fork, so the tree cannot grow while it is walked) and SIGKILL on all
of them.

Two reasons to stop a run:

- it exceeded the run timeout (:class:`RunTimeoutError`);
- this replica lost, or is about to lose, the leader lease
  (:meth:`RunRegistry.fence`): its runs must be dead before another replica
  may start its own on the same stacks. After fencing no run starts again
  in this process (:class:`FencedError`).

Runs stopped here are remembered (:class:`~iflearner.stacklocks.StoppedRun`),
so the lock such a run leaves behind is known to be ours and dead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pulumi.automation import CommandResult
from pulumi.automation.errors import create_command_error

from iflearner.stacklocks import StoppedRun, process_facts

DEFAULT_RUN_TIMEOUT_SECONDS = 600.0
DEFAULT_TERM_GRACE_SECONDS = 5.0
# SIGKILL of a stopped tree takes effect at once; this bounds the wait for
# the kernel to tear the processes down (and for us to see it in /proc).
KILL_SETTLE_SECONDS = 1.0


class RunTimeoutError(RuntimeError):
    """A run exceeded its deadline and was stopped."""

    reason = "RunTimedOut"

    def __init__(self, operation: str, stack: str, timeout: float) -> None:
        super().__init__(f"pulumi {operation} for stack {stack} did not finish within {timeout:g} s; "
                         "it was stopped (its lock is ours and is removed before the next run)")
        self.operation, self.stack, self.timeout = operation, stack, timeout


class FencedError(RuntimeError):
    """This replica is no longer the leader: it starts no Pulumi run."""

    reason = "NotLeader"


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    start_ticks: int
    state: str


def _proc_table() -> dict[int, ProcInfo]:
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = ProcInfo(int(entry.name), int(fields[1]), int(fields[19]), fields[0])
    return table


def tree(root: int, table: Mapping[int, ProcInfo] | None = None) -> list[ProcInfo]:
    """``root`` and its descendants, parents before children."""
    table = _proc_table() if table is None else table
    if root not in table:
        return []
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found, frontier = [table[root]], [root]
    while frontier:
        frontier = [child for pid in frontier for child in children.get(pid, [])]
        found.extend(table[pid] for pid in frontier)
    return found


def _live(infos: Sequence[ProcInfo]) -> list[ProcInfo]:
    """Those of ``infos`` still running as the same process (not exited, not a reused PID)."""
    table = _proc_table()
    return [i for i in infos if (now := table.get(i.pid)) is not None and now.start_ticks == i.start_ticks
            and now.state not in ("Z", "X")]


def live_of(pids: Sequence[int]) -> list[int]:
    """Those of ``pids`` that are running processes now (not zombies)."""
    table = _proc_table()
    return [pid for pid in pids if pid in table and table[pid].state not in ("Z", "X")]


def _signal_all(infos: Sequence[ProcInfo], sig: int) -> None:
    for info in _live(infos):
        try:
            os.kill(info.pid, sig)
        except OSError:
            pass


def kill_tree(root: int, reap: Callable[[], object] = lambda: None) -> None:
    """SIGKILL ``root`` and all its descendants; returns once none runs any more."""
    seen: dict[int, ProcInfo] = {}
    # Freeze first: a stopped process cannot fork, so repeated walks converge.
    for _ in range(50):
        found = tree(root)
        new = [i for i in found if seen.get(i.pid) != i]
        if not new:
            break
        for info in new:
            seen[info.pid] = info
        _signal_all(new, signal.SIGSTOP)
    everything = list(seen.values())
    _signal_all(everything, signal.SIGKILL)
    deadline = time.monotonic() + KILL_SETTLE_SECONDS * 10
    while _live(everything) and time.monotonic() < deadline:
        reap()
        time.sleep(0.02)
    reap()
    _reap_orphans(everything)


def _reap_orphans(infos: Sequence[ProcInfo]) -> None:
    """Collect killed plugins that were re-parented to this process.

    In the operator's container this process is PID 1: the plugins of a
    killed CLI become its children, and would stay zombies otherwise. Only
    the PIDs killed here are waited for (never ``waitpid(-1)``, which would
    steal the exit status of a ``subprocess.Popen``)."""
    for info in infos:
        try:
            os.waitpid(info.pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not ours: init (or a subreaper) collects it


@dataclass
class _Run:
    process: subprocess.Popen[str]
    label: str
    started: float  # epoch seconds


class RunRegistry:
    """The live Pulumi runs of this process, and the fence that stops them all."""

    def __init__(self, on_stop: Callable[[str], None] = lambda reason: None) -> None:
        """``on_stop(reason)`` is called for every run stopped here ("timeout", "fenced", "shutdown")."""
        self._on_stop = on_stop
        self._lock = threading.Lock()
        self._runs: dict[int, _Run] = {}
        self._stopped: dict[int, StoppedRun] = {}
        self._fenced = False

    @property
    def fenced(self) -> bool:
        return self._fenced

    def stopped_runs(self) -> list[StoppedRun]:
        with self._lock:
            return list(self._stopped.values())

    def live_pids(self) -> list[int]:
        with self._lock:
            return list(self._runs)

    def start(self, argv: Sequence[str], cwd: str, env: Mapping[str, str], label: str) -> subprocess.Popen[str]:
        with self._lock:
            if self._fenced:
                raise FencedError(f"not starting pulumi for {label}: this replica lost the leader lease")
            process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                                       env=dict(env), encoding="utf-8", stdin=subprocess.DEVNULL)
            facts = process_facts(process.pid)
            self._runs[process.pid] = _Run(process, label, facts.started or time.time())
            return process

    def finished(self, process: subprocess.Popen[str]) -> None:
        with self._lock:
            self._runs.pop(process.pid, None)

    def stop(self, process: subprocess.Popen[str], grace: float, reason: str = "timeout") -> None:
        """SIGTERM the CLI; after ``grace`` seconds SIGKILL its whole tree. Returns once all are dead."""
        with self._lock:
            run = self._runs.get(process.pid)
        roots = tree(process.pid)
        if process.poll() is None and grace > 0:  # no grace: straight to SIGKILL
            try:
                process.send_signal(signal.SIGTERM)
            except OSError:
                pass
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Plugins the CLI started may outlive it briefly, or forever if it was killed.
        if process.poll() is None:
            kill_tree(process.pid, reap=process.poll)
        _signal_all(roots, signal.SIGKILL)
        process.wait()
        with self._lock:
            if run is not None:
                self._stopped[process.pid] = StoppedRun(process.pid, run.started)
        self._on_stop(reason)

    def fence(self, grace: float, reason: str = "fenced") -> None:
        """Stop every run (SIGTERM, SIGKILL after ``grace``) and refuse new ones. Returns once all are dead."""
        with self._lock:
            self._fenced = True
            runs = list(self._runs.values())
        threads = [threading.Thread(target=self.stop, args=(run.process, grace, reason), daemon=True)
                   for run in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()



# One registry per process: the leader elector fences the runs of every runner.
RUNS = RunRegistry()


def run_pulumi(
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    *,
    operation: str,
    stack: str,
    timeout: float | None,
    term_grace: float = DEFAULT_TERM_GRACE_SECONDS,
    registry: RunRegistry = RUNS,
) -> CommandResult:
    """Run the Pulumi CLI to completion, or stop it at ``timeout``.

    Raises the Automation API's ``CommandError`` family on a non-zero exit
    (as ``PulumiCommand.run`` does), :class:`RunTimeoutError` on a timeout.
    """
    process = registry.start(argv, cwd, env, f"{operation} {stack}")
    stdout: list[str] = []
    stderr: list[str] = []

    def consume(stream: object, into: list[str]) -> None:
        for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
            into.append(line.rstrip())
        stream.close()  # type: ignore[attr-defined]

    readers = [threading.Thread(target=consume, args=(process.stdout, stdout), daemon=True),
               threading.Thread(target=consume, args=(process.stderr, stderr), daemon=True)]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            registry.stop(process, term_grace, "timeout")
    finally:
        if process.poll() is None:  # an exception (KeyboardInterrupt) while waiting
            registry.stop(process, term_grace)
        registry.finished(process)
    for reader in readers:
        reader.join(timeout=5)
    if timed_out:
        raise RunTimeoutError(operation, stack, float(timeout or 0))
    if process.returncode != 0 and registry.fenced:
        raise FencedError(f"pulumi {operation} for stack {stack} was stopped: this replica lost the leader lease")
    result = CommandResult(stdout="\n".join(stdout), stderr="\n".join(stderr), code=process.returncode)
    if result.code != 0:
        raise create_command_error(result)
    return result
