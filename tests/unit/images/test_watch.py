"""A long image build step reports its stages while it runs: one line per new stage and a
heartbeat while one lasts, never a line per log line."""

from __future__ import annotations

import sys

from iflearner.images.watch import debootstrap_stage, run_watched

SCRIPT = """
import sys, time
for name in ("libc6", "bash", "coreutils"):  # debootstrap's get(): each package retrieved, then validated
    print(f"I: Retrieving {name} 1.0", flush=True)
    print(f"I: Validating {name} 1.0", flush=True)
print("W: not a stage", flush=True)
time.sleep(2.5)
print("I: Extracting libc6...", flush=True)
sys.exit(3)
"""


def test_each_stage_once_then_heartbeats_and_the_exit_code(tmp_path) -> None:
    lines: list[str] = []
    code = run_watched([sys.executable, "-c", SCRIPT], tmp_path / "step.log", "debootstrap", debootstrap_stage,
                       lines.append, heartbeat=1.0)
    assert code == 3
    stages = [line.split(": ", 1)[1].split(" ")[0] for line in lines if "still" not in line]
    assert stages == ["retrieving", "validating", "extracting"], lines
    beats = [line for line in lines if line.startswith("debootstrap: still validating, 3 so far")]
    assert beats, lines
    assert len(lines) < 10, lines
    assert "W: not a stage" in (tmp_path / "step.log").read_text()


def test_debootstrap_stage_names_the_phase() -> None:
    assert debootstrap_stage("I: Configuring the base system...") == "configuring"
    assert debootstrap_stage("I: Base system installed successfully.") == "base"
    assert debootstrap_stage("dpkg: warning: something") is None


def test_pip_stage_names_the_phase() -> None:
    from iflearner.images.watch import pip_stage

    assert pip_stage("Collecting numpy==2.4.6 (from -r requirements.lock (line 3))") == "collecting"
    assert pip_stage("Installing collected packages: numpy, grpcio") == "installing"
    assert pip_stage("  Downloading numpy-2.4.6-cp311-manylinux_2_17_x86_64.whl (16.4 MB)") is None
