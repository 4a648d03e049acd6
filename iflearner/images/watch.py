"""Progress of a long image build step (debootstrap, pip) while it runs.

The step writes its output to a log; :func:`run_watched` reads what the log
gains each second and reports, one line per update, each stage the step
enters for the first time (``stage_of`` names the stage of a log line, or
None) with the time since the start, and every ``heartbeat`` seconds the
stage it is at with how many lines of it so far. Never a line per log line
(debootstrap alternates "Retrieving" and "Validating" per package): CI logs
stay short.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HEARTBEAT_SECONDS = 30.0


def debootstrap_stage(line: str) -> str | None:
    """``I: Retrieving libc6 2.36-9`` -> ``retrieving``; debootstrap's phases, in order:
    retrieving, validating, extracting, installing, unpacking, configuring, base."""
    if not line.startswith("I: "):
        return None
    return line[3:].split(" ", 1)[0].lower() or None


def pip_stage(line: str) -> str | None:
    """pip's phases: collecting (each wheel checked against the lock), installing."""
    word = line.strip().split(" ", 1)[0]
    return {"Collecting": "collecting", "Installing": "installing"}.get(word)


def run_watched(argv: Sequence[str], log: Path, label: str, stage_of: Callable[[str], str | None],
                progress: Callable[[str], None], heartbeat: float = HEARTBEAT_SECONDS,
                env: dict[str, str] | None = None) -> int:
    """Run ``argv`` with its output in ``log``, reporting its stages; its exit code."""
    started = time.monotonic()
    stage: str | None = None
    counts: dict[str, int] = {}
    last_report = started
    with log.open("wb") as out, log.open("rb") as reader:
        process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env)
        pending = b""
        while True:
            finished = process.poll() is not None
            pending += reader.read()
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                new = stage_of(raw.decode(errors="replace"))
                if new is None:
                    continue
                stage = new
                counts[new] = counts.get(new, 0) + 1
                if counts[new] == 1:  # a stage is reported when first entered, never again
                    last_report = time.monotonic()
                    progress(f"{label}: {stage} ({last_report - started:.0f}s)")
            now = time.monotonic()
            if stage is not None and now - last_report >= heartbeat:
                last_report = now
                progress(f"{label}: still {stage}, {counts[stage]} so far ({now - started:.0f}s)")
            if finished:
                return int(process.returncode)
            time.sleep(1.0)
