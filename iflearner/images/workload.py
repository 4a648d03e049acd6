"""The federated-learning workload image: what the examples/federation jobs run.

Layout (all root-owned; the container runs as root because iflearner writes
``log/`` and ``metric/`` into its working directory):

* base: Debian bookworm + ``python3`` (3.11) + ca-certificates, the shared
  :data:`~iflearner.images.catalog.PYTHON_BASE`;
* ``/opt/iflearner/site-packages``: ``workloads/iflearner/requirements.txt``
  (PyPI's iflearner 0.1.0 and the pins its server and client import),
  installed with ``pip --target --no-deps`` for cp311 manylinux wheels up to
  bookworm's glibc 2.36, on ``PYTHONPATH``; a layer of its own, first, since
  it changes least;
* ``/workload``: ``trainer.py`` (the party), ``server.py`` (the
  aggregator) and ``plot.py`` (metric per epoch as a PNG), the working directory, so the jobs' args read
  ``python -u trainer.py ...`` / ``python -u server.py ...`` like the
  original README's ``python -u quickstart_pytorch.py ...``;
* ``/usr/local/bin/python`` -> ``python3``: the original jobs' args start
  with ``python``, which Debian does not provide by itself.

No entrypoint: a job's ``args`` is the whole command, as with the original
``ghcr.io/iflytek/iflearner`` image. Ports 50001 (gRPC) and 50002 (status API).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from iflearner.images.catalog import PYTHON_BASE
from iflearner.images.operator_image import tree
from iflearner.images.pip import GLIBC, PYTHON_VERSION, install_lock
from iflearner.images.spec import File, ImageSpec, Layer, RuntimeConfig, Symlink

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKLOAD_SOURCE = REPO_ROOT / "workloads" / "iflearner"
REQUIREMENTS = WORKLOAD_SOURCE / "requirements.lock"
NAME = "iflearner-workload"
SITE_PACKAGES = "/opt/iflearner/site-packages"
WORKDIR = "/workload"
PROGRAMS = ("trainer.py", "server.py", "plot.py")
BASE = PYTHON_BASE
def site_packages(cache_dir: Path, requirements: Path = REQUIREMENTS, architecture: str = "amd64",
                  progress: Callable[[str], None] = print) -> Path:
    """The pinned requirements installed into a directory, cached by the
    hash of the requirements and the pip command's target platform."""
    key = hashlib.sha256(requirements.read_bytes() + f"{architecture} {GLIBC} {PYTHON_VERSION}".encode())
    target = cache_dir / "python" / f"workload-{key.hexdigest()[:16]}"
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    try:
        install_lock(target, requirements, "the workload image", progress, architecture)
    except RuntimeError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    # Console scripts point at this machine's interpreter; the jobs run `python <file>`.
    shutil.rmtree(target / "bin", ignore_errors=True)
    (target / ".complete").write_text(requirements.read_text())
    return target


def workload_image(packages: Path, source: Path = WORKLOAD_SOURCE, architecture: str = "amd64",
                   extra_env: Sequence[str] = ()) -> ImageSpec:
    """The image spec, given the installed packages (:func:`site_packages`)."""
    deps = tuple(e for e in tree(packages, SITE_PACKAGES) if not e.path.endswith("/.complete"))
    programs = tuple(File(f"{WORKDIR}/{name}", source=source / name) for name in PROGRAMS)
    return ImageSpec(
        name=NAME,
        base=BASE,
        architecture=architecture,
        layers=(
            Layer(deps, comment="pip install --require-hashes --no-deps -r workloads/iflearner/requirements.lock"),
            Layer((*programs,
                   File(f"{WORKDIR}/requirements.txt", source=source / "requirements.txt"),
                   Symlink("/usr/local/bin/python", "/usr/bin/python3")),
                  comment="the project's trainer and server wrapper"),
        ),
        config=RuntimeConfig(
            cmd=("python", "-u", "trainer.py", "--help"),
            env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 f"PYTHONPATH={SITE_PACKAGES}",
                 # iflearner imports matplotlib.pyplot; a container has no display.
                 "MPLBACKEND=Agg",
                 "PYTHONUNBUFFERED=1",
                 *extra_env),
            workdir=WORKDIR,
            exposed_ports=("50001/tcp", "50002/tcp"),
            labels=(("org.opencontainers.image.title", "iflearner federated-learning workload"),
                    ("org.opencontainers.image.source", "workloads/iflearner")),
        ),
    )


def build_spec(cache_dir: Path) -> ImageSpec:
    """What ``iflearner.images.project_spec("iflearner-workload", builder)``
    returns: ``workload_image(site_packages(builder.cache_dir))``."""
    return workload_image(site_packages(cache_dir))
