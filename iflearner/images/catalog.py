"""The images the project builds: pause (the Pod sandbox), coredns (the
toolchain's binary) and testapp (Debian + python3, for the real-node tests).

Each is a pure :class:`ImageSpec`; the programs they need (the static pause,
the CoreDNS binary) are built elsewhere and passed in by path. Later images
(the operator, the federated-learning workload) follow the same shape: a
Debian base with packages, then layers of the project's own files.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from iflearner.images.spec import DebianBase, File, ImageSpec, Layer, RuntimeConfig

PACKAGE_DIR = Path(__file__).resolve().parent
PAUSE_SOURCE = PACKAGE_DIR / "pause.c"
TESTAPP_SOURCE = PACKAGE_DIR / "testapp.py"
# One Debian base for every Python image (testapp, the operator): one debootstrap, one cached layer.
PYTHON_BASE = DebianBase(include=("ca-certificates", "python3"))
TESTAPP_BASE = PYTHON_BASE


def pause(binary: Path) -> ImageSpec:
    return ImageSpec(
        name="pause",
        layers=(Layer((File("/pause", source=binary, mode=0o755),), comment="static pause"),),
        config=RuntimeConfig(entrypoint=("/pause",), env=(), user="65535:65535"),
    )


def coredns(binary: Path) -> ImageSpec:
    return ImageSpec(
        name="coredns",
        layers=(Layer((File("/coredns", source=binary, mode=0o755),), comment="coredns"),),
        config=RuntimeConfig(entrypoint=("/coredns",), env=(), exposed_ports=("53/tcp", "53/udp")),
    )


def testapp() -> ImageSpec:
    return ImageSpec(
        name="testapp",
        base=TESTAPP_BASE,
        layers=(Layer((File("/usr/local/bin/testapp", source=TESTAPP_SOURCE, mode=0o755),)),),
        config=RuntimeConfig(entrypoint=("/usr/local/bin/testapp",), cmd=("serve", "8080"),
                             exposed_ports=("8080/tcp",)),
    )


def compile_pause(cache_dir: Path) -> Path:
    """``pause.c`` compiled with ``gcc -static``, cached by the source's hash."""
    source = PAUSE_SOURCE.read_bytes()
    out = cache_dir / "programs" / f"pause-{hashlib.sha256(source).hexdigest()[:16]}"
    if out.is_file():
        return out
    if shutil.which("gcc") is None:
        raise RuntimeError("gcc is not installed (the pause image needs it); run `make setup`")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    result = subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(tmp), str(PAUSE_SOURCE)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"compiling the pause program failed (is libc6-dev installed?):\n{result.stderr}")
    tmp.replace(out)
    return out
