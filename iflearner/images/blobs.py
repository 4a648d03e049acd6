"""A content-addressed store of blobs (layers, configs, manifests) on disk,
shared by every image the builder makes: a layer two images share is stored
and hashed once."""

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

    def path(self, blob: Blob) -> Path:
        return self.root / blob.digest.removeprefix("sha256:")

    def has(self, blob: Blob) -> bool:
        path = self.path(blob)
        return path.is_file() and path.stat().st_size == blob.size

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
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size
