"""Copy built images to a registry with skopeo, and name them by digest.

A cluster pulls the project's images from a registry like any other: ``push``
copies one image archive (OCI, as the builder writes it) to
``<registry>[/<prefix>]/<name>:<tag>`` with ``skopeo copy --preserve-digests``,
so the registry serves the very manifest the builder wrote, and returns the
reference by digest (``.../<name>@sha256:...``) that a stack config should
name: a tag can be moved, a digest cannot. Blobs the registry already has are
not sent again, so pushing an unchanged image costs one manifest check.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iflearner.images.build import BuiltImage

# registry host[:port], then optional path components (lower case, as the distribution spec says).
_DESTINATION = re.compile(r"^(?P<host>[a-zA-Z0-9.-]+(?::[0-9]+)?)(?P<path>(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)$")


class PushError(RuntimeError):
    """A push failed; the message says what skopeo answered."""


@dataclass(frozen=True)
class Registry:
    """Where images go: ``host[:port][/prefix]``, and how its TLS certificate is checked.

    ``cert_dir`` holds the CA certificates (``*.crt``) to trust besides the system's;
    ``tls_verify=False`` is for plain-HTTP or self-signed registries on a trusted network.
    """

    destination: str
    cert_dir: Path | None = None
    tls_verify: bool = True

    def __post_init__(self) -> None:
        if not _DESTINATION.match(self.destination.rstrip("/")):
            raise PushError(f"{self.destination!r} is not a registry: give host[:port][/prefix], "
                            "for example registry.example.com:5000/ml-platform")

    def repository(self, name: str) -> str:
        return f"{self.destination.rstrip('/')}/{name}"


def repository_name(image: BuiltImage) -> tuple[str, str]:
    """(name, tag) of a built image's reference (``iflearner.local/<name>:<tag>`` -> name, tag)."""
    path, _, tag = image.reference.rpartition(":")
    return path.split("/", 1)[1] if "/" in path else path, tag


def push(image: BuiltImage, registry: Registry, name: str | None = None, tag: str | None = None) -> str:
    """Copy ``image`` to the registry as ``<name>:<tag>`` (default: the builder's); its reference by digest."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise PushError("skopeo is not installed: run `make setup` (or apt-get install skopeo)")
    own_name, own_tag = repository_name(image)
    repository = registry.repository(name or own_name)
    destination = f"{repository}:{tag or own_tag}"
    with tempfile.TemporaryDirectory() as scratch:
        digest_file = Path(scratch) / "digest"
        argv = [skopeo, "copy", "--quiet", "--preserve-digests", "--digestfile", str(digest_file),
                f"--dest-tls-verify={'true' if registry.tls_verify else 'false'}"]
        if registry.cert_dir is not None:
            argv += ["--dest-cert-dir", str(registry.cert_dir)]
        result = subprocess.run([*argv, f"oci-archive:{image.archive}", f"docker://{destination}"],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PushError(f"pushing {image.reference} to {destination} failed: "
                            f"{(result.stderr or result.stdout).strip()}")
        digest = digest_file.read_text().strip()
    if digest != image.manifest_digest:
        raise PushError(f"the registry holds {destination} at {digest}, not the built manifest "
                        f"{image.manifest_digest}")
    return f"{repository}@{digest}"
