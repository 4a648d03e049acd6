"""The operator image, from the same inputs as ``Dockerfile``: a Debian base
with python3, the runtime Python packages (``requirements-runtime.lock``, the
closure of ``requirements-runtime.txt`` with every wheel's hash), the
``iflearner`` package, and from the toolchain the Pulumi CLI, its Python
plugin scripts and the registered Kubernetes provider. It runs as uid 65532
with a read-only root filesystem: everything it writes goes to volumes
(``/tmp``: Pulumi's home and the stacks' work directories; the state volume).

The Python packages are installed with this machine's pip into a directory
cached by the lock's hash, with ``--require-hashes`` for the image's
interpreter (Debian bookworm's CPython 3.11): a wheel whose hash is not in
the lock fails the build (``make lock`` writes the lock again).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from iflearner.images.catalog import PYTHON_BASE
from iflearner.images.pip import install_lock
from iflearner.images.spec import Entry, File, ImageSpec, Layer, RuntimeConfig, Symlink

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_REQUIREMENTS = REPO_ROOT / "requirements-runtime.lock"
APP_DIR = "/app"
SITE_PACKAGES = "/opt/iflearner/site-packages"
TOOLS_DIR = "/opt/iflearner/tools"
USER = "65532:65532"
BASE = PYTHON_BASE
# The toolchain's programs the operator runs; the control-plane binaries stay out.
TOOL_BINARIES = ("pulumi", "pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-pulumi-python")
_SKIPPED = ("__pycache__",)


def tree(source: Path, destination: str, skip: tuple[str, ...] = _SKIPPED) -> tuple[Entry, ...]:
    """Every file and symlink under ``source``, placed under ``destination``
    (executables keep their execute bit; everything root-owned, read-only)."""
    entries: list[Entry] = []
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        base = Path(root)
        for name in sorted(files) + sorted(d for d in dirs if (base / d).is_symlink()):
            path = base / name
            target = f"{destination}/{path.relative_to(source).as_posix()}"
            if path.is_symlink():
                entries.append(Symlink(target, os.readlink(path)))
            elif path.is_file() and not name.endswith(".pyc"):
                mode = 0o755 if os.access(path, os.X_OK) else 0o644
                entries.append(File(target, source=path, mode=mode))
    return tuple(entries)


def runtime_packages(cache_dir: Path, requirements: Path = RUNTIME_REQUIREMENTS,
                     progress: Callable[[str], None] = print) -> Path:
    """The runtime lock installed into a directory, cached by its hash."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    target = cache_dir / "python" / f"runtime-{digest}"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    try:
        install_lock(target, requirements, "the operator image", progress)
    except RuntimeError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    # Console scripts point at the build machine's interpreter; the image runs python3 -m.
    shutil.rmtree(target / "bin", ignore_errors=True)
    (target / ".complete").write_text(digest + "\n")
    return target


def operator_image(tools_dir: Path, site_packages: Path, repo_root: Path = REPO_ROOT) -> ImageSpec:
    tools: list[Entry] = [File(f"{TOOLS_DIR}/bin/{name}", source=tools_dir / "bin" / name, mode=0o755)
                          for name in TOOL_BINARIES]
    tools += tree(tools_dir / "pulumi-home" / "plugins", f"{TOOLS_DIR}/pulumi-home/plugins")
    return ImageSpec(
        name="iflearner-operator",
        base=BASE,
        layers=(
            Layer(tree(site_packages, SITE_PACKAGES),
                  comment="pip install --require-hashes -r requirements-runtime.lock"),
            Layer(tuple(tools), comment="Pulumi CLI, plugin scripts, registered Kubernetes provider"),
            Layer(tree(repo_root / "iflearner", f"{APP_DIR}/iflearner") + tree(repo_root / "crd", f"{APP_DIR}/crd"),
                  comment="the iflearner package"),
        ),
        config=RuntimeConfig(
            entrypoint=("python3", "-m", "iflearner"),
            cmd=("run",),
            env=("PATH=/usr/local/bin:/usr/bin:/bin",
                 f"IFLEARNER_TOOLS_DIR={TOOLS_DIR}",
                 f"PYTHONPATH={APP_DIR}:{SITE_PACKAGES}",
                 "HOME=/tmp",
                 # uid 65532 has no /etc/passwd entry, and the CLI (built without cgo)
                 # refuses to create a stack without a user name.
                 "USER=iflearner",
                 "PYTHONUNBUFFERED=1",
                 "PYTHONDONTWRITEBYTECODE=1"),
            user=USER,
            workdir=APP_DIR,
            exposed_ports=("8080/tcp", "8081/tcp"),
        ),
    )
