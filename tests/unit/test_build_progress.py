"""The toolchain build's progress (scripts/build-progress.sh): a long step says that it still runs,
how long it has run and what it is at, instead of minutes of silence; a failed step names itself."""

from __future__ import annotations

import subprocess

from iflearner.toolchain import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "build-progress.sh"


def _run(tmp_path, command: str) -> subprocess.CompletedProcess[str]:
    shell = (f"set -euo pipefail; LOGS={tmp_path}; START_ALL=$SECONDS; IFLEARNER_BUILD_HEARTBEAT=1; "
             f"source {SCRIPT}; {command}")
    return subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)


def test_a_long_step_says_it_still_runs_and_what_it_is_at(tmp_path):
    result = _run(tmp_path, "COLD_PACKAGES[kube/build]=1650; "
                            "go() { bash -c 'echo go: downloading k8s.io/api v0.36.3; "
                            "echo k8s.io/apiserver/pkg/a; sleep 2.5; "
                            "echo k8s.io/kubernetes/cmd/kubelet; sleep 2'; }; "
                            "run kube build go build -v k8s.io/kubernetes/cmd/kubelet; echo after")
    assert result.returncode == 0, result.stderr
    beats = [line for line in result.stdout.splitlines() if "still at step 'build'" in line]
    assert len(beats) >= 2, result.stdout
    assert "of about 210s cold" in beats[0] and "last: k8s.io/apiserver/pkg/a" in beats[0]
    assert "last: k8s.io/kubernetes/cmd/kubelet" in beats[-1]
    # packages compiled out of a cold build's count (the download line is not a package)
    assert "'build', 1 of about 1650 packages, " in beats[0], beats[0]
    assert "'build', 2 of about 1650 packages, " in beats[-1], beats[-1]
    assert result.stdout.rstrip().endswith("after")
    assert "k8s.io/kubernetes/cmd/kubelet" in (tmp_path / "kube.log").read_text()


def test_a_failed_step_names_program_step_and_log(tmp_path):
    result = _run(tmp_path, "run traefik build bash -c 'echo broken import >&2; exit 3'; echo never")
    assert result.returncode == 1
    assert "FAILED: traefik, step 'build'" in result.stdout and "never" not in result.stdout
    assert "broken import" in result.stderr


def test_a_setup_step_outside_the_toolchain_says_what_it_is_at(tmp_path):
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "step.sh"), "venv", "python", "pip", "bash", "-c",
         "echo Collecting grpcio==1.71.0; sleep 2.5; echo Installing collected packages: grpcio"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "IFLEARNER_BUILD_HEARTBEAT": "1",
             "IFLEARNER_SETUP_LOGS": str(tmp_path / "logs")})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("[venv ") and "python: still at step 'pip'" in line
               and "last: Collecting grpcio==1.71.0" in line for line in lines), lines
    assert "python: done in" in lines[-1] and len(lines) < 8, lines
    assert "Installing collected packages" in (tmp_path / "logs" / "python.log").read_text()
