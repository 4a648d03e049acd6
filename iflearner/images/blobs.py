"""A content-addressed store of blobs (layers, configs, manifests) on disk,
shared by every image the builder makes: a layer two images share is stored
and hashed once.

A blob is trusted only by its digest. Hashing the whole cache (over a GB) on every build would
cost seconds, so a blob whose digest was checked gets a stamp of its inode, size, mtime and ctime;
while the file's stat matches its stamp it is not hashed again. Any write to the file changes its
ctime (which no user can set back), so a blob changed in place, even to the same size, is hashed
again, found wrong, removed and rebuilt."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from iflearner.images.oci import Blob, blob_of


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "sha256"
        self.stamps = root / "verified"

    def path(self, blob: Blob) -> Path:
        return self.root / blob.digest.removeprefix("sha256:")

    def has(self, blob: Blob) -> bool:
        """True if the blob is stored with its digest; a stored file that is not is removed."""
        path = self.path(blob)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        if stat.st_size != blob.size:
            path.unlink(missing_ok=True)
            return False
        stamp = self.stamps / path.name
        if stamp.is_file() and stamp.read_text() == _stat_key(stat):
            return True
        if _hash_file(path) != (blob.digest, blob.size):
            path.unlink(missing_ok=True)
            stamp.unlink(missing_ok=True)
            return False
        self._stamp(path)
        return True

    def _stamp(self, path: Path) -> None:
        """Record that the file at ``path`` holds its digest, as it is now."""
        self.stamps.mkdir(parents=True, exist_ok=True)
        (self.stamps / path.name).write_text(_stat_key(path.stat()))

    def put_bytes(self, data: bytes) -> Blob:
        blob = blob_of(data)
        if not self.has(blob):
            self._commit(lambda out: out.write(data), blob)
        return blob

    def put_stream(self, write: Callable[[BinaryIO], object]) -> Blob:
        """Store what ``write`` writes; its digest is known only afterwards."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            digest, size = _hash_file(Path(tmp))
            blob = Blob(digest, size)
            os.replace(tmp, self.path(blob))
            self._stamp(self.path(blob))
            return blob
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _commit(self, write: Callable[[BinaryIO], object], blob: Blob) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            os.replace(tmp, self.path(blob))
            self._stamp(self.path(blob))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _stat_key(stat: os.stat_result) -> str:
    return f"{stat.st_ino} {stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns}"


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size
