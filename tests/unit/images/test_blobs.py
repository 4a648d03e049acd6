"""The image builder's blob cache trusts a blob by its digest, never by its size."""

from __future__ import annotations

from pathlib import Path

import pytest

from iflearner.images import blobs, debian
from iflearner.images.blobs import BlobStore
from iflearner.images.spec import DebianBase


def test_a_blob_changed_in_place_to_the_same_size_is_not_trusted(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    blob = store.put_bytes(b"layer contents")
    assert store.has(blob)
    store.path(blob).write_bytes(b"LAYER CONTENTS")  # same size, other bytes
    assert not store.has(blob)
    assert not store.path(blob).exists(), "removed, so that the next build writes it again"
    assert store.put_bytes(b"layer contents") == blob and store.has(blob)


def test_a_blob_without_a_stamp_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache copied from elsewhere (no stamps) is hashed; a stamped blob is not hashed again."""
    store = BlobStore(tmp_path)
    blob = store.put_bytes(b"config")
    for stamp in store.stamps.iterdir():
        stamp.unlink()
    hashed: list[Path] = []
    real_hash = blobs._hash_file
    monkeypatch.setattr(blobs, "_hash_file", lambda path: hashed.append(path) or real_hash(path))
    assert store.has(blob) and store.has(blob)
    assert hashed == [store.path(blob)]


def test_a_corrupted_debian_base_is_built_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(tmp_path / "blobs")
    base = DebianBase()
    blob = store.put_bytes(b"a debootstrapped root filesystem")
    cache = tmp_path / "debian"
    cache.mkdir()
    (cache / f"{debian.base_key(base)}.json").write_text(f"{blob.digest} {blob.size}\n")
    assert debian.ensure_base(base, store, cache) == blob  # trusted: no debootstrap
    store.path(blob).write_bytes(b"A debootstrapped root filesystem")
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(debian.DebootstrapError, match="debootstrap is not installed"):
        debian.ensure_base(base, store, cache)  # it went on to rebuild the base
