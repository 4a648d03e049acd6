"""Build image archives from :class:`ImageSpec` and import them into a
containerd, without a Docker daemon or a registry.

Everything is cached under ``~/.cache/iflearner-operator/images``: Debian
bases by their inputs, layers and configs by digest, archives by the image's
content-addressed tag. A second build of an unchanged image only hashes its
inputs; a second import of an image containerd already holds is skipped.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iflearner.images import oci
from iflearner.images.blobs import BlobStore
from iflearner.images.debian import apt_mirror, ensure_base
from iflearner.images.spec import ImageSpec, reference

CONTAINERD_NAMESPACE = "k8s.io"  # the namespace the CRI plugin (kubelet) uses


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "iflearner-operator" / "images"


@dataclass(frozen=True)
class BuiltImage:
    reference: str
    archive: Path
    manifest_digest: str


class ImageBuilder:
    def __init__(self, cache_dir: Path | None = None, progress: Callable[[str], None] = print) -> None:
        self.cache_dir = cache_dir or default_cache_dir()
        self.store = BlobStore(self.cache_dir / "blobs")
        self.progress = progress

    def resolve(self, spec: ImageSpec) -> ImageSpec:
        """The spec with the machine's apt mirror filled in (part of the tag)."""
        if spec.base is None:
            return spec
        from dataclasses import replace

        return replace(spec, base=replace(spec.base, mirror=apt_mirror()))

    def build(self, spec: ImageSpec) -> BuiltImage:
        spec = self.resolve(spec)
        ref = reference(spec)
        archive = self.cache_dir / "archives" / f"{spec.name}-{ref.rsplit(':', 1)[1]}.tar"
        digest_file = archive.with_suffix(".manifest")
        if archive.is_file() and digest_file.is_file():
            return BuiltImage(ref, archive, digest_file.read_text().strip())
        started = time.monotonic()
        layers: list[oci.Blob] = []
        if spec.base is not None:
            layers.append(ensure_base(spec.base, self.store, self.cache_dir / "debian", self.progress))
        for layer in spec.layers:
            layers.append(self.store.put_bytes(oci.layer_tar(layer)))
        config = oci.image_config(layers, spec.config.to_oci(), spec.architecture)
        config_blob = self.store.put_bytes(config)
        manifest = oci.manifest(config_blob, layers)
        manifest_blob = self.store.put_bytes(manifest)
        blobs: dict[str, Path | bytes] = {b.digest: self.store.path(b) for b in layers}
        blobs[config_blob.digest] = config
        blobs[manifest_blob.digest] = manifest
        archive.parent.mkdir(parents=True, exist_ok=True)
        oci.write_archive(archive, blobs, oci.index(manifest_blob, ref, spec.architecture))
        digest_file.write_text(manifest_blob.digest + "\n")
        self.progress(f"image {ref} built in {time.monotonic() - started:.1f}s")
        return BuiltImage(ref, archive, manifest_blob.digest)


def ctr(address: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ctr", "--address", str(address), "--namespace", CONTAINERD_NAMESPACE, *args],
                          capture_output=True, text=True, check=False)


def import_image(image: BuiltImage, address: Path) -> bool:
    """Import into the containerd listening on ``address`` unless it already
    holds the image at the same manifest; True if imported."""
    listed = ctr(address, "images", "ls", f"name=={image.reference}")
    if listed.returncode == 0 and image.manifest_digest in listed.stdout:
        return False
    result = ctr(address, "images", "import", "--snapshotter", "overlayfs", str(image.archive))
    if result.returncode != 0:
        raise RuntimeError(f"ctr image import of {image.reference} failed: {result.stderr.strip()}")
    return True
