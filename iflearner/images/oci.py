"""OCI image layout, written by hand: layer tarballs, the image config, the
manifest, the index and the archive that ``ctr image import`` reads.

Every byte is deterministic: entries sorted by path, mtimes set to
``EPOCH``, owner names dropped, JSON in one canonical encoding. Layers are
stored uncompressed (their digest is also their diff ID): the archives never
leave this machine, so compression would only cost time.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from iflearner.images.spec import Directory, File, Layer, Symlink, canonical_json

EPOCH = 0
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
# containerd's importer names an image after this annotation.
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Blob:
    digest: str  # "sha256:<hex>"
    size: int

    def descriptor(self, media_type: str, **extra: Any) -> dict[str, Any]:  # noqa: ANN401
        return {"mediaType": media_type, "digest": self.digest, "size": self.size, **extra}


def blob_of(data: bytes) -> Blob:
    return Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = EPOCH
    info.uname = info.gname = ""
    info.pax_headers = {}
    return info


def _parents(paths: Iterable[str]) -> list[str]:
    parents: set[str] = set()
    for path in paths:
        for parent in PurePosixPath(path).parents:
            if str(parent) != "/":
                parents.add(str(parent))
    return sorted(parents)


def layer_tar(layer: Layer) -> bytes:
    """The layer's tarball: declared entries plus any missing parent
    directories (root-owned, 0755), all sorted by path."""
    declared = {e.path: e for e in layer.entries}
    if len(declared) != len(layer.entries):
        raise ValueError("a layer names the same path twice")
    entries: dict[str, File | Directory | Symlink] = {
        p: Directory(p) for p in _parents(declared) if p not in declared}
    entries.update(declared)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(entries):
            entry = entries[path]
            info = tarfile.TarInfo(path.lstrip("/"))
            if isinstance(entry, File):
                data = entry.data()
                info.size, info.mode, info.uid, info.gid = len(data), entry.mode, entry.uid, entry.gid
                tar.addfile(_normalized(info), io.BytesIO(data))
            elif isinstance(entry, Directory):
                info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, entry.mode, entry.uid, entry.gid
                tar.addfile(_normalized(info))
            else:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
                tar.addfile(_normalized(info))
    return buffer.getvalue()


def _walk_sorted(directory: Path) -> Iterator[Path]:
    """Every path under directory, depth first, siblings in byte order of
    their names: the tarball must not depend on the file system's order."""
    for child in sorted(directory.iterdir(), key=lambda p: p.name.encode()):
        yield child
        if child.is_dir() and not child.is_symlink():
            yield from _walk_sorted(child)


def directory_tar(root: Path, out: BinaryIO, exclude_contents: Iterable[str] = ()) -> None:
    """Write a root filesystem as a layer tarball. Directories named in
    ``exclude_contents`` (relative paths) are kept, empty. Hard links stay
    hard links; devices, sockets and fifos are left out (the runtime makes
    /dev)."""
    excluded = frozenset(exclude_contents)
    seen_inodes: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _walk_sorted(root):
            rel = path.relative_to(root)
            if any(str(parent) in excluded for parent in rel.parents if str(parent) != "."):
                continue
            st = path.lstat()
            info = tarfile.TarInfo(str(rel))
            info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(_normalized(info))
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                tar.addfile(_normalized(info))
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen_inodes:
                    info.type, info.linkname = tarfile.LNKTYPE, seen_inodes[key]
                    tar.addfile(_normalized(info))
                    continue
                seen_inodes[key] = str(rel)
                info.size = st.st_size
                with path.open("rb") as data:
                    tar.addfile(_normalized(info), data)


def image_config(layers: list[Blob], runtime: dict[str, Any], architecture: str) -> bytes:
    return canonical_json({
        "architecture": architecture,
        "os": "linux",
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]},
        # created/history are optional; leaving them out keeps the config
        # (and so the image ID) a function of the inputs alone.
    })


def manifest(config: Blob, layers: list[Blob]) -> bytes:
    return canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(CONFIG_MEDIA_TYPE),
        "layers": [b.descriptor(LAYER_MEDIA_TYPE) for b in layers],
    })


def index(manifest_blob: Blob, reference: str, architecture: str) -> bytes:
    tag = reference.rsplit(":", 1)[1]
    return canonical_json({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [manifest_blob.descriptor(
            MANIFEST_MEDIA_TYPE,
            platform={"architecture": architecture, "os": "linux"},
            annotations={CONTAINERD_NAME_ANNOTATION: reference, REF_NAME_ANNOTATION: tag},
        )],
    })


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(_normalized(info), io.BytesIO(data))


def write_archive(out: Path, blobs: dict[str, Path | bytes], index_json: bytes) -> None:
    """An OCI image layout as one tar: oci-layout, index.json and
    blobs/sha256/<hex> for every blob (given as bytes or as a file)."""
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(tar, "index.json", index_json)
        dir_info = tarfile.TarInfo("blobs/sha256")
        dir_info.type, dir_info.mode = tarfile.DIRTYPE, 0o755
        for name in ("blobs", "blobs/sha256"):
            dir_info.name = name
            tar.addfile(_normalized(dir_info))
        for digest in sorted(blobs):
            name = "blobs/sha256/" + digest.removeprefix("sha256:")
            content = blobs[digest]
            if isinstance(content, bytes):
                _add_bytes(tar, name, content)
            else:
                info = tarfile.TarInfo(name)
                info.size, info.mode = content.stat().st_size, 0o644
                with content.open("rb") as data:
                    tar.addfile(_normalized(info), data)
    tmp.replace(out)
