"""pip, installing the images' Python packages for the image's interpreter (Debian bookworm's
CPython 3.11 and glibc), whatever machine builds them, from a lock file with every wheel's hash
(``scripts/lock-requirements.py``)."""

from __future__ import annotations

import sys
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
    Python, so the layer depends only on the wheels.
    """
    return [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--require-hashes", "--no-deps", "--no-compile", *interpreter_args(architecture),
            "--target", str(target), "-r", str(lock)]
