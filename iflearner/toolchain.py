"""Where the built toolchain lives and the environment that runs it offline.

The Pulumi CLI, its providers and the control-plane binaries are built from Go
modules by ``scripts/build-toolchain.sh`` into a versioned cache outside the
repository. Everything that starts one of them asks this module for its path,
so there is one place that knows the layout.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-toolchain.sh"
# Set in the operator image, where the toolchain is installed at a fixed path.
TOOLS_DIR_ENV = "IFLEARNER_TOOLS_DIR"
# A writable PULUMI_HOME for where the toolchain's is read-only (the image).
PULUMI_HOME_ENV = "IFLEARNER_PULUMI_HOME"


class ToolchainMissingError(RuntimeError):
    """A program the operator needs has not been built yet."""


@functools.cache
def tools_dir() -> Path:
    """The versioned tool directory (the build script owns the naming)."""
    override = os.environ.get(TOOLS_DIR_ENV)
    if override:
        return Path(override)
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def bin_dir() -> Path:
    return tools_dir() / "bin"


def tool(name: str) -> Path:
    """Path of a built program, or an error that says how to build it."""
    path = bin_dir() / name
    if not path.is_file():
        raise ToolchainMissingError(
            f"{name} is not built (looked for {path}); run `make setup` to build the toolchain"
        )
    return path


def pulumi_home() -> Path:
    """The project's own PULUMI_HOME, with the providers pre-registered.

    The CLI writes under PULUMI_HOME on every ``stack select`` (workspace
    files, plugin locks). Where the toolchain is read-only (the operator
    image's root filesystem), ``$IFLEARNER_PULUMI_HOME`` names a writable home
    whose plugin directories link to the registered ones.
    """
    registered = tools_dir() / "pulumi-home"
    writable = os.environ.get(PULUMI_HOME_ENV)
    if not writable:
        return registered
    home = Path(writable)
    plugins = home / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    for entry in (registered / "plugins").iterdir():
        target = plugins / entry.name
        if entry.is_dir():
            # A real directory: the CLI skips plugin directories that are symlinks.
            target.mkdir(exist_ok=True)
            for item in entry.iterdir():
                link = target / item.name
                if not link.exists() and not link.is_symlink():
                    link.symlink_to(item)
        else:
            target.touch(exist_ok=True)  # lock and last-used marks: the CLI writes them
    return home


# Pulumi's log rotation (pkg/logging/rotation.go): files older than the age, then the oldest
# beyond the total, are removed when a CLI process starts.
LOG_ROTATION = {"PULUMI_LOG_ROTATION_MAX_AGE_DAYS": "1", "PULUMI_LOG_ROTATION_MAX_TOTAL_MB": "16"}


def pulumi_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the Pulumi CLI and its plugins that never reaches the network."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    env["PULUMI_HOME"] = str(pulumi_home())
    env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
    env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
    # Every CLI process writes a debug log under $PULUMI_HOME/logs and, before it starts, reads
    # that whole directory to rotate it (bench/README.md, "Pulumi's own debug logs"): the
    # directory's size is a cost per process. Pulumi's defaults (7 days, 500 MB) let tens of
    # thousands of small files pile up; these keep about a day of them. A value already set wins.
    for name, value in LOG_ROTATION.items():
        env.setdefault(name, value)
    # Dynamic providers run in a child process that must import this package
    # with the same interpreter and packages as the operator itself.
    env["PULUMI_PYTHON_CMD"] = sys.executable
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env
