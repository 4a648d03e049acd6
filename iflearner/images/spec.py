"""What an image is made of, as plain data: a base (nothing, or a Debian root
filesystem from debootstrap), layers of files the project adds, and the
runtime config. No I/O here beyond hashing files named as layer sources.

The image's tag is derived from these inputs (:func:`input_digest`), not from
the built bytes: a builder can tell whether an image is already built, and
whether containerd already holds it, without building anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPOSITORY_PREFIX = "iflearner.local"
# Bump when the builder's output format changes, so every tag changes with it.
BUILDER_FORMAT = 1


@dataclass(frozen=True)
class DebianBase:
    """A Debian root filesystem made by debootstrap from Debian's packages."""

    suite: str = "bookworm"
    variant: str = "minbase"
    include: tuple[str, ...] = ()
    # Filled in from the machine's apt sources by the builder; part of the
    # inputs because another mirror may serve other package versions.
    mirror: str = "http://deb.debian.org/debian"

    def inputs(self) -> dict[str, Any]:
        return {"kind": "debian", "suite": self.suite, "variant": self.variant,
                "include": sorted(self.include), "mirror": self.mirror}


@dataclass(frozen=True)
class File:
    """One file in a layer: its bytes come from ``source`` (a path on this
    machine) or ``content``; ``path`` is absolute inside the image."""

    path: str
    source: Path | None = None
    content: bytes | None = None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path.endswith("/"):
            raise ValueError(f"image file path must be absolute and name a file: {self.path!r}")
        if (self.source is None) == (self.content is None):
            raise ValueError(f"{self.path}: give exactly one of source and content")

    def data(self) -> bytes:
        return self.content if self.content is not None else Path(self.source).read_bytes()  # type: ignore[arg-type]

    def inputs(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": hashlib.sha256(self.data()).hexdigest(),
                "mode": self.mode, "uid": self.uid, "gid": self.gid}


@dataclass(frozen=True)
class Directory:
    """An (empty) directory, e.g. a writable mount point for a non-root user."""

    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0

    def inputs(self) -> dict[str, Any]:
        return {"dir": self.path, "mode": self.mode, "uid": self.uid, "gid": self.gid}


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str

    def inputs(self) -> dict[str, Any]:
        return {"symlink": self.path, "target": self.target}


Entry = File | Directory | Symlink


@dataclass(frozen=True)
class Layer:
    """Files the project adds on top of the base, in one layer. Parent
    directories are created (root, 0755) when no entry names them."""

    entries: tuple[Entry, ...]
    comment: str = ""

    def inputs(self) -> dict[str, Any]:
        return {"entries": [e.inputs() for e in self.entries]}


@dataclass(frozen=True)
class RuntimeConfig:
    """The OCI image config's ``config`` object (what a container runs)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    user: str = ""
    workdir: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    def to_oci(self) -> dict[str, Any]:
        config: dict[str, Any] = {"Env": list(self.env)}
        if self.entrypoint:
            config["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            config["Cmd"] = list(self.cmd)
        if self.user:
            config["User"] = self.user
        if self.workdir:
            config["WorkingDir"] = self.workdir
        if self.exposed_ports:
            config["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.labels:
            config["Labels"] = dict(self.labels)
        return config


@dataclass(frozen=True)
class ImageSpec:
    name: str
    layers: tuple[Layer, ...]
    config: RuntimeConfig = field(default_factory=RuntimeConfig)
    base: DebianBase | None = None
    architecture: str = "amd64"

    @property
    def repository(self) -> str:
        return f"{REPOSITORY_PREFIX}/{self.name}"

    def inputs(self) -> dict[str, Any]:
        return {
            "format": BUILDER_FORMAT,
            "name": self.name,
            "architecture": self.architecture,
            "base": self.base.inputs() if self.base else None,
            "layers": [layer.inputs() for layer in self.layers],
            "config": self.config.to_oci(),
        }


def canonical_json(value: Any) -> bytes:  # noqa: ANN401
    """The one JSON encoding used for hashing and for OCI blobs: key order
    and whitespace fixed, so equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def input_digest(spec: ImageSpec) -> str:
    return hashlib.sha256(canonical_json(spec.inputs())).hexdigest()


def tag(spec: ImageSpec) -> str:
    """Content-addressed tag: the first 16 hex digits of the inputs' hash."""
    return input_digest(spec)[:16]


def reference(spec: ImageSpec) -> str:
    return f"{spec.repository}:{tag(spec)}"
