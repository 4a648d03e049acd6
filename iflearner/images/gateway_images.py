"""The gateway's images: Traefik (the toolchain's static binary, nothing
else) and grpcapp (Debian's python3-grpcio plus a small gRPC server and
prober, for the gateway's real-node tests and benchmark).

Built like every image of the project (see :mod:`iflearner.images.build`);
``gateway_images`` builds them and, given a containerd socket, imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from iflearner.images.build import BuiltImage, ImageBuilder, import_image
from iflearner.images.spec import DebianBase, File, ImageSpec, Layer, RuntimeConfig

PACKAGE_DIR = Path(__file__).resolve().parent
GRPCAPP_SOURCE = PACKAGE_DIR / "grpcapp.py"
GRPCAPP_BASE = DebianBase(include=("python3", "python3-grpcio"))
# The unprivileged user the bootstrap's Deployment runs Traefik as.
TRAEFIK_USER = "65532:65532"


def traefik(binary: Path) -> ImageSpec:
    """Traefik alone: a static Go binary needs no base (its TLS roots are the
    jobs' own certificates, loaded from Secrets)."""
    return ImageSpec(
        name="traefik",
        layers=(Layer((File("/usr/local/bin/traefik", source=binary, mode=0o755),), comment="traefik"),),
        config=RuntimeConfig(entrypoint=("/usr/local/bin/traefik",), user=TRAEFIK_USER,
                             exposed_ports=("8000/tcp", "8443/tcp", "9000/tcp")),
    )


def grpcapp() -> ImageSpec:
    return ImageSpec(
        name="grpcapp",
        base=GRPCAPP_BASE,
        layers=(Layer((File("/usr/local/bin/grpcapp", source=GRPCAPP_SOURCE, mode=0o755),)),),
        config=RuntimeConfig(entrypoint=("/usr/local/bin/grpcapp",), cmd=("serve", "50001"),
                             exposed_ports=("50001/tcp",)),
    )


def gateway_specs() -> dict[str, ImageSpec]:
    from iflearner import toolchain

    return {"traefik": traefik(toolchain.tool("traefik")), "grpcapp": grpcapp()}


def gateway_images(containerd_socket: Path | None = None, cache_dir: Path | None = None,
                   progress: Callable[[str], None] = print) -> dict[str, BuiltImage]:
    """Build the gateway's images (cached by their inputs) and import them into a containerd."""
    builder = ImageBuilder(cache_dir, progress)
    built = {name: builder.build(spec) for name, spec in gateway_specs().items()}
    if containerd_socket is not None:
        for image in built.values():
            import_image(image, containerd_socket)
    return built
