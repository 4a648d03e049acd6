"""Background processes that outlive the command that started them.

Each process is recorded with its pid and its start time from /proc, so that a
recorded pid is never mistaken for an unrelated process that reused it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "start_ticks": self.start_ticks}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ProcessRecord:
        return cls(str(data["name"]), int(data["pid"]), int(data["start_ticks"]))  # type: ignore[arg-type]


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) follows the parenthesised command, which may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def pid_alive(pid: int) -> bool:
    """A process with this pid exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def is_alive(record: ProcessRecord) -> bool:
    return _start_ticks(record.pid) == record.start_ticks


def start(
    name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> tuple[ProcessRecord, subprocess.Popen[bytes]]:
    """Start a program in its own session, logging to a file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )
    ticks = _start_ticks(proc.pid)
    if ticks is None:
        raise RuntimeError(f"{name} exited at once; see {log_path}")
    return ProcessRecord(name, proc.pid, ticks), proc


def stop(record: ProcessRecord, grace_seconds: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after the grace period; returns once it is gone."""
    if not is_alive(record):
        return
    try:
        os.killpg(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not is_alive(record):
            return
        time.sleep(0.1)
    try:
        os.killpg(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while is_alive(record):
        _reap(record.pid)
        time.sleep(0.05)


def kill(record: ProcessRecord) -> None:
    """SIGKILL the process's group at once (a crash, not a stop); returns once every thread of it
    is gone, so that its ports are free: the thread-group leader turns zombie (``is_alive`` false)
    while its other threads, which share its sockets, may still be exiting."""
    try:
        os.killpg(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    task = Path(f"/proc/{record.pid}/task")
    while is_alive(record) or (_start_ticks(record.pid) is None and _threads(task) > 1):
        _reap(record.pid)
        time.sleep(0.05)
    _reap(record.pid)


def _threads(task: Path) -> int:
    try:
        return len(os.listdir(task))
    except OSError:
        return 0


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free now.

    All sockets stay bound until every port is chosen: ports picked one at a
    time can repeat (the kernel may hand out a just-closed port again), and two
    servers given the same port fail with "address already in use".
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
