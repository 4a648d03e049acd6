"""`iflearner-operator demo`, the README's first command, as a newcomer runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def test_demo_runs_the_federation_and_cleans_up(tmp_path):
    data_dir = tmp_path / "demo"
    command = [sys.executable, "-m", "iflearner", "demo", "--data-dir", str(data_dir), "--timeout", "300"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("iflearnerjob-")]
    assert len(table) == 3, result.stdout
    for row in table:
        assert " Running " in row and " True " in row, row
    assert "the federation is Running" in result.stdout
    assert "stopping the local control plane" in result.stdout
    assert not _processes_mentioning(str(data_dir)), "the demo must leave no process behind"
