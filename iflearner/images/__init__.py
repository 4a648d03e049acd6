"""The project's own image builder: OCI image archives assembled from a
Debian root filesystem and the project's files, imported into containerd
with ``ctr`` (no Docker daemon, no registry)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from iflearner.images.build import BuiltImage, ImageBuilder, import_image
from iflearner.images.spec import ImageSpec, reference, tag

__all__ = ["BuiltImage", "ImageBuilder", "ImageSpec", "import_image", "project_images", "reference", "tag"]


PROJECT_IMAGES = ("pause", "coredns", "testapp", "iflearner-operator", "iflearner-workload")


def project_spec(name: str, builder: ImageBuilder) -> ImageSpec:
    """One of the images the local cluster's real node needs."""
    from iflearner import toolchain
    from iflearner.images import catalog

    if name == "pause":
        return catalog.pause(catalog.compile_pause(builder.cache_dir))
    if name == "coredns":
        return catalog.coredns(toolchain.tool("coredns"))
    if name == "testapp":
        return catalog.testapp()
    if name == "iflearner-operator":
        from iflearner.images.operator_image import operator_image, runtime_packages

        return operator_image(toolchain.tools_dir(), runtime_packages(builder.cache_dir, progress=builder.progress))
    if name == "iflearner-workload":
        from iflearner.images import workload

        return workload.workload_image(workload.site_packages(builder.cache_dir, progress=builder.progress))
    raise ValueError(f"no image named {name!r}; the project's images are {', '.join(PROJECT_IMAGES)}")


def project_images(cache_dir: Path | None = None, progress: Callable[[str], None] = print,
                   names: list[str] | None = None) -> dict[str, BuiltImage]:
    builder = ImageBuilder(cache_dir, progress)
    return {name: builder.build(project_spec(name, builder)) for name in names or PROJECT_IMAGES}
