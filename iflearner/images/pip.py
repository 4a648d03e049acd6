"""pip, installing the images' Python packages for the image's interpreter (Debian bookworm's
CPython 3.11 and glibc), whatever machine builds them, from a lock file with every wheel's hash
(``scripts/lock-requirements.py``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

# Bookworm's Python and C library: the wheels pip may pick for the image.
PYTHON_VERSION = "3.11"
GLIBC = "2_36"
_MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}


def platform_args(architecture: str = "amd64") -> list[str]:
    """``--platform`` for every manylinux tag bookworm's glibc runs: pip
    23's --platform matches the named tag only, not the older glibc ones a
    wheel is usually tagged with (e.g. grpcio's manylinux_2_17)."""
    machine = _MACHINE[architecture]
    newest = int(GLIBC.split("_")[1])
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(newest, 16, -1)] + [f"manylinux2014_{machine}"]
    return [arg for tag in tags for arg in ("--platform", tag)]


def interpreter_args(architecture: str = "amd64") -> list[str]:
    """Wheels for the image's interpreter, never a build."""
    return ["--only-binary=:all:", *platform_args(architecture), "--python-version", PYTHON_VERSION,
            "--implementation", "cp", "--abi", f"cp{PYTHON_VERSION.replace('.', '')}"]


def pip_install_argv(target: Path, lock: Path, architecture: str = "amd64") -> list[str]:
    """pip installing a lock file into ``target`` for the image's interpreter.

    ``--require-hashes``: every wheel must be one the lock names (a changed wheel fails the build).
    ``--no-deps``: the lock is the complete closure. ``--no-compile``: no .pyc of this machine's
    Python, so the layer depends only on the wheels. Not ``--quiet``: its "Collecting ..." lines
    are the step's progress (:func:`iflearner.images.watch.pip_stage`).
    """
    return [sys.executable, "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check",
            "--require-hashes", "--no-deps", "--no-compile", *interpreter_args(architecture),
            "--target", str(target), "-r", str(lock)]


def install_lock(target: Path, lock: Path, what: str, progress: Callable[[str], None],
                 architecture: str = "amd64") -> None:
    """pip install ``lock`` into ``target``, reporting its stages; an error with the log's tail."""
    from iflearner.images.watch import pip_stage, run_watched

    target.parent.mkdir(parents=True, exist_ok=True)
    log = target.parent / f"{target.name}.log"
    progress(f"pip install of {lock.name} for {what} (log {log})")
    if run_watched(pip_install_argv(target, lock, architecture), log, f"pip ({what})", pip_stage, progress) != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"pip install of {lock} for {what} failed (is PyPI reachable? a hash mismatch: a "
                           f"wheel is not the one locked; run `make lock` after changing requirements):\n{tail}")
