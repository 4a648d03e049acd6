"""The image builder's pure parts: specs, tags, layer tarballs and the OCI
layout, without debootstrap or containerd."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from iflearner.images import oci
from iflearner.images.blobs import BlobStore
from iflearner.images.build import ImageBuilder
from iflearner.images.debian import apt_mirror
from iflearner.images.spec import DebianBase, Directory, File, ImageSpec, Layer, RuntimeConfig, Symlink, reference, tag


def _spec(content: bytes = b"hello\n", **config: object) -> ImageSpec:
    layer = Layer((File("/app/bin/run", content=content, mode=0o755), Symlink("/app/current", "bin"),
                   Directory("/data", mode=0o700, uid=1000, gid=1000)))
    return ImageSpec(name="demo", layers=(layer,), config=RuntimeConfig(entrypoint=("/app/bin/run",), **config))


def test_tag_is_a_function_of_the_inputs() -> None:
    assert tag(_spec()) == tag(_spec())
    assert tag(_spec(b"other")) != tag(_spec())
    assert tag(_spec(user="1000")) != tag(_spec())
    assert reference(_spec()) == f"iflearner.local/demo:{tag(_spec())}"
    with_base = ImageSpec(name="demo", layers=(), base=DebianBase(include=("python3",)))
    other_mirror = ImageSpec(name="demo", layers=(), base=DebianBase(include=("python3",), mirror="http://m/debian"))
    assert tag(with_base) != tag(other_mirror)


def test_file_source_is_hashed_by_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    spec_a = ImageSpec("x", (Layer((File("/f", source=a),)),))
    spec_b = ImageSpec("x", (Layer((File("/f", source=b),)),))
    assert tag(spec_a) == tag(spec_b)
    b.write_bytes(b"changed")
    assert tag(spec_a) != tag(spec_b)


def test_invalid_entries_are_refused() -> None:
    with pytest.raises(ValueError):
        File("relative/path", content=b"")
    with pytest.raises(ValueError):
        File("/f")
    with pytest.raises(ValueError):
        oci.layer_tar(Layer((File("/f", content=b"1"), File("/f", content=b"2"))))


def test_layer_tar_is_deterministic_sorted_and_normalized() -> None:
    data = oci.layer_tar(_spec().layers[0])
    assert data == oci.layer_tar(_spec().layers[0])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names) == ["app", "app/bin", "app/bin/run", "app/current", "data"]
        assert {m.mtime for m in members} == {0}
        assert {m.uname for m in members} == {""}
        by_name = {m.name: m for m in members}
        assert by_name["app/bin"].isdir() and by_name["app/bin"].mode == 0o755
        assert by_name["app/bin/run"].mode == 0o755
        assert tar.extractfile("app/bin/run").read() == b"hello\n"
        assert by_name["app/current"].issym() and by_name["app/current"].linkname == "bin"
        assert (by_name["data"].uid, by_name["data"].mode) == (1000, 0o700)


def test_directory_tar_ignores_mtimes_and_keeps_hard_links(tmp_path: Path) -> None:
    def make(root: Path, mtime: int) -> bytes:
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "b").write_text("b")
        (root / "etc" / "a").write_text("a")
        (root / "etc" / "a-link").hardlink_to(root / "etc" / "a")
        (root / "tmp").mkdir()
        (root / "tmp" / "junk").write_text("x")
        import os

        for p in root.rglob("*"):
            os.utime(p, (mtime, mtime))
        out = io.BytesIO()
        oci.directory_tar(root, out, exclude_contents=["tmp"])
        return out.getvalue()

    first, second = make(tmp_path / "one", 1000), make(tmp_path / "two", 2_000_000)
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = [m.name for m in tar.getmembers()]
        assert names == ["etc", "etc/a", "etc/a-link", "etc/b", "tmp"]
        assert tar.getmember("etc/a-link").islnk()


def test_manifest_and_index_layout() -> None:
    layer = oci.blob_of(oci.layer_tar(_spec().layers[0]))
    config = oci.image_config([layer], _spec().config.to_oci(), "amd64")
    config_blob = oci.blob_of(config)
    manifest = oci.manifest(config_blob, [layer])
    parsed = json.loads(manifest)
    assert parsed["schemaVersion"] == 2
    assert parsed["config"] == {"mediaType": oci.CONFIG_MEDIA_TYPE, "digest": config_blob.digest,
                                "size": config_blob.size}
    assert parsed["layers"][0]["digest"] == layer.digest
    # Uncompressed layers: the diff ID is the layer's digest.
    assert json.loads(config)["rootfs"]["diff_ids"] == [layer.digest]
    assert json.loads(config)["config"]["Entrypoint"] == ["/app/bin/run"]
    ref = reference(_spec())
    index = json.loads(oci.index(oci.blob_of(manifest), ref, "amd64"))
    entry = index["manifests"][0]
    assert entry["digest"] == oci.blob_of(manifest).digest
    assert entry["annotations"][oci.CONTAINERD_NAME_ANNOTATION] == ref
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}


def test_builder_archive_is_a_valid_layout_and_cached(tmp_path: Path) -> None:
    messages: list[str] = []
    builder = ImageBuilder(tmp_path, progress=messages.append)
    built = builder.build(_spec())
    assert built.reference == reference(_spec())
    with tarfile.open(built.archive) as tar:
        names = set(tar.getnames())
        assert {"oci-layout", "index.json"} <= names
        index = json.loads(tar.extractfile("index.json").read())
        manifest_digest = index["manifests"][0]["digest"]
        assert manifest_digest == built.manifest_digest
        manifest = json.loads(tar.extractfile("blobs/sha256/" + manifest_digest[7:]).read())
        for descriptor in [manifest["config"], *manifest["layers"]]:
            blob = tar.extractfile("blobs/sha256/" + descriptor["digest"][7:]).read()
            assert oci.blob_of(blob) == oci.Blob(descriptor["digest"], descriptor["size"])
    first_bytes = built.archive.read_bytes()
    assert len(messages) == 1
    again = builder.build(_spec())
    assert again == built and len(messages) == 1, "an unchanged image is not rebuilt"
    # Same inputs in another cache: byte-identical archive.
    assert ImageBuilder(tmp_path / "other", progress=messages.append).build(_spec()).archive.read_bytes() == first_bytes


def test_blob_store_is_content_addressed(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    blob = store.put_bytes(b"abc")
    assert store.has(blob) and store.path(blob).read_bytes() == b"abc"
    streamed = store.put_stream(lambda out: out.write(b"abc"))
    assert streamed == blob


def test_apt_mirror_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://one.example/debian bookworm main\n")
    assert apt_mirror(tmp_path) == "http://one.example/debian"
    assert apt_mirror(tmp_path / "nothing-here") == "http://deb.debian.org/debian"
