"""Debian root filesystems for images, made by debootstrap from Debian's
packages with the machine's own apt mirror, turned into one layer tarball and
cached by their inputs (suite, variant, packages, mirror)."""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from iflearner.images.blobs import BlobStore
from iflearner.images.oci import Blob, directory_tar
from iflearner.images.spec import DebianBase, canonical_json
from iflearner.images.watch import debootstrap_stage, run_watched

DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Kept as empty directories: the runtime mounts or fills them, and a copy of
# the build machine's apt lists or logs has no place in an image.
EMPTY_DIRS = ("dev", "proc", "sys", "run", "tmp", "var/cache/apt/archives", "var/lib/apt/lists",
              "var/log", "var/cache/debconf")
# debootstrap copies these from the build machine; the runtime provides its own.
HOST_FILES = ("etc/resolv.conf", "etc/hostname", "etc/machine-id")


class DebootstrapError(RuntimeError):
    pass


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the machine's apt uses (not the security archive)."""
    candidates: list[str] = []
    files = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822: "URIs: <uri> ..."
            candidates += [u for m in re.finditer(r"^URIs:\s*(.+)$", text, re.M) for u in m.group(1).split()]
        else:  # one-line: "deb [options] <uri> <suite> <components>"
            for m in re.finditer(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M):
                candidates.append(m.group(1))
    for uri in candidates:
        if "security" not in uri and uri.startswith(("http://", "https://", "file:/")):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def base_key(base: DebianBase) -> str:
    return hashlib.sha256(canonical_json(base.inputs())).hexdigest()


def ensure_base(base: DebianBase, store: BlobStore, cache_dir: Path,
                progress: Callable[[str], None] = print) -> Blob:
    """The base's layer blob, running debootstrap only the first time."""
    key = base_key(base)
    record = cache_dir / f"{key}.json"
    if record.exists():
        blob = Blob(*_read_record(record))
        if store.has(blob):
            return blob
    if shutil.which("debootstrap") is None:
        raise DebootstrapError("debootstrap is not installed; run `make setup`")
    rootfs = cache_dir / f"{key}.rootfs"
    log = cache_dir / f"{key}.log"
    shutil.rmtree(rootfs, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    argv = ["debootstrap", f"--variant={base.variant}"]
    if base.include:
        argv.append("--include=" + ",".join(sorted(base.include)))
    argv += [base.suite, str(rootfs), base.mirror]
    progress(f"debootstrap {base.suite} ({base.variant}, +{','.join(base.include) or 'nothing'}) "
             f"from {base.mirror}; log {log}")
    started = time.monotonic()
    returncode = run_watched(argv, log, "debootstrap", debootstrap_stage, progress)
    if returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        shutil.rmtree(rootfs, ignore_errors=True)
        raise DebootstrapError(f"debootstrap failed (exit {returncode}); log {log}:\n" + "\n".join(tail))
    try:
        for name in HOST_FILES:
            (rootfs / name).unlink(missing_ok=True)
        blob = store.put_stream(lambda out: directory_tar(rootfs, out, exclude_contents=EMPTY_DIRS))
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    record.write_text(f"{blob.digest} {blob.size}\n")
    progress(f"Debian base {key[:12]}: {blob.size / 1e6:.0f} MB in {time.monotonic() - started:.0f}s")
    return blob


def _read_record(path: Path) -> tuple[str, int]:
    digest, size = path.read_text().split()
    return digest, int(size)
