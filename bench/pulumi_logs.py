"""What Pulumi's automatic debug logs cost a CLI process (issue 22), and what the pile costs.

    .venv/bin/python bench/pulumi_logs.py [--runs 10]

Since v3.249 every Pulumi CLI process writes a debug-level log under ``$PULUMI_HOME/logs`` and,
before that, reads the whole directory to rotate it. This runs ``pulumi whoami`` (a CLI start
that opens the backend and nothing else) ``--runs`` times in a fresh PULUMI_HOME per case:

* the logs directory holding 0, 1,000 and 8,000 files of 15 KB (the size of a job's log), with
  Pulumi's default rotation (7 days, 500 MB: nothing is removed, so the pile stays);
* the operator's rotation (toolchain.LOG_ROTATION) over the 8,000 files: the first run trims
  them, the others read what is left;
* no logs at all (``logs`` a regular file: the CLI cannot create the directory, and goes on
  without its log) -- the cost of the log itself, by difference. Not something the operator
  does: it is unsupported, and the measured difference is within noise.

Prints CPU seconds per process (user + system, all processes of each run).
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iflearner import toolchain  # noqa: E402

PULUMI_DEFAULTS = {"PULUMI_LOG_ROTATION_MAX_AGE_DAYS": "7", "PULUMI_LOG_ROTATION_MAX_TOTAL_MB": "500"}


def fill(logs: Path, count: int) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now()
    body = os.urandom(15 * 1024)
    for index in range(count):
        stamp = now - datetime.timedelta(seconds=10 * index)
        (logs / f"pulumi-{stamp:%Y%m%dT%H%M%S}-{index}-up.log").write_bytes(body)


def cpu_per_run(home: Path, rotation: dict[str, str], runs: int, work: Path) -> float:
    env = {**toolchain.pulumi_env(), **rotation, "PULUMI_HOME": str(home),
           "PULUMI_BACKEND_URL": f"file://{work}", "PULUMI_CONFIG_PASSPHRASE": "x"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        subprocess.run([str(toolchain.tool("pulumi")), "whoami", "--non-interactive"], env=env, check=True,
                       capture_output=True, cwd=work)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows: list[tuple[str, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="iflearner-pulumi-logs-") as temp:
        root = Path(temp)
        cases: list[tuple[str, int, dict[str, str]]] = [
            ("0 files, Pulumi's rotation (7 days, 500 MB)", 0, PULUMI_DEFAULTS),
            ("1,000 files, Pulumi's rotation", 1000, PULUMI_DEFAULTS),
            ("8,000 files, Pulumi's rotation", 8000, PULUMI_DEFAULTS),
            ("8,000 files, the operator's rotation (1 day, 16 MB)", 8000, toolchain.LOG_ROTATION),
        ]
        for index, (name, count, rotation) in enumerate(cases):
            home = root / f"home-{index}"
            fill(home / "logs", count)
            seconds = cpu_per_run(home, rotation, args.runs, root)
            rows.append((name, seconds, len(list((home / "logs").iterdir()))))
        off = root / "home-off"
        off.mkdir()
        (off / "logs").write_text("")
        rows.append(("no log written (logs is a file; unsupported)", cpu_per_run(off, PULUMI_DEFAULTS, args.runs, root),
                     0))
    print(f"\nPulumi CLI start with its debug logs ({args.runs} runs of `pulumi whoami` per case, "
          f"{os.cpu_count()} CPUs)")
    for name, seconds, left in rows:
        print(f"  {name:54s} {seconds:6.3f} CPU-s per process   ({left} files after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
