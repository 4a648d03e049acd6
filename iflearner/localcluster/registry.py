"""The real node's image registry: Debian's ``docker-registry`` (the CNCF
distribution registry), so that the node pulls images as a real cluster's
nodes do instead of having them imported.

- It listens only on the host's address on the node's network
  (``NodeNetwork.host_address``, port :data:`PORT`), which the host's INPUT
  guard opens to this machine and its local clusters alone.
- TLS with a certificate of the cluster CA, and client certificates required
  (``http.tls.clientcas``): the host pushes and containerd pulls with the
  cluster CA's ``registry-client`` certificate; a Pod, which holds none, can
  neither read nor overwrite an image.
- Its storage (``<data dir>/registry/storage``) outlives ``cluster down``, so
  an image is pushed once per cluster data dir; a push of an unchanged image
  sends no blob again.
- containerd finds it through a hosts directory (``config_path``): under its
  own address, and as the mirror of the public registries in :data:`MIRRORED`,
  so a Pod naming ``ghcr.io/iflytek/iflearner:v0.1.0`` (the original README's
  jobs, unchanged) pulls the image pushed here as ``iflytek/iflearner:v0.1.0``,
  and falls back to the real registry when the mirror lacks it.
"""

from __future__ import annotations

import secrets
import shutil
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from iflearner.localcluster.nodeconfig import NodeNetwork
from iflearner.localcluster.pki import Pki, client_cert, serving_cert

if TYPE_CHECKING:
    from iflearner.images.push import Registry

PORT = 5000
PROGRAM = "docker-registry"  # Debian's package and binary name
# Registries this one mirrors for the node, one hosts directory each.
MIRRORED = ("ghcr.io", "docker.io", "registry.k8s.io", "quay.io")


@dataclass(frozen=True)
class RegistryLayout:
    data_dir: Path
    network: NodeNetwork = NodeNetwork()
    # Where it listens: the host's address on the node's network, unless given (tests: loopback).
    host: str | None = None
    port: int = PORT

    @property
    def address(self) -> str:
        return f"{self.host or self.network.host_address}:{self.port}"

    @property
    def root(self) -> Path:
        return self.data_dir / "registry"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def config(self) -> Path:
        return self.root / "config.yml"

    @property
    def hosts_dir(self) -> Path:
        """containerd's ``config_path``: one ``<registry>/hosts.toml`` per registry."""
        return self.root / "containerd-hosts"

    @property
    def client_dir(self) -> Path:
        """What a client needs (skopeo's ``--dest-cert-dir``): ``ca.crt``, ``client.cert``, ``client.key``."""
        return self.root / "client"


def program() -> str:
    found = shutil.which(PROGRAM)
    if found is None:
        raise RuntimeError(f"{PROGRAM} is not installed (Debian's docker-registry package): run `make setup`")
    return found


def registry_config(layout: RegistryLayout, cert: Path, key: Path, ca: Path, secret: str) -> dict[str, Any]:
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(layout.storage)}, "delete": {"enabled": True}},
        "http": {"addr": layout.address, "secret": secret,
                 "tls": {"certificate": str(cert), "key": str(key), "clientcas": [str(ca)]}},
    }


def hosts_toml(layout: RegistryLayout, server: str) -> str:
    """containerd's hosts.toml for ``server``'s images: pull from this registry first.

    The certificates go in the ``[host]`` table: containerd 1.6 ignores a top-level ``ca`` for
    ``server`` (its own address then fails with "certificate signed by unknown authority"). For
    the registry's own address ``server`` is the same host, tried again last without them, so a
    missing image there ends in a TLS error after the "not found"."""
    client = layout.client_dir
    return "\n".join([f'server = "{server}"', "", f'[host."https://{layout.address}"]',
                      '  capabilities = ["pull", "resolve"]', f'  ca = "{client / "ca.crt"}"',
                      f'  client = [["{client / "client.cert"}", "{client / "client.key"}"]]', ""])


def prepare(layout: RegistryLayout, pki: Pki) -> list[str]:
    """Write the registry's config, certificates and containerd's hosts directory; its argv."""
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o700)
    layout.storage.mkdir(exist_ok=True)
    cert, key = serving_cert(pki, "registry", (layout.host or layout.network.host_address,))
    client_crt, client_key = client_cert(pki, "registry-client", "iflearner-registry-client")
    layout.client_dir.mkdir(exist_ok=True)
    shutil.copyfile(pki.ca_cert, layout.client_dir / "ca.crt")
    shutil.copyfile(client_crt, layout.client_dir / "client.cert")
    shutil.copyfile(client_key, layout.client_dir / "client.key")
    (layout.client_dir / "client.key").chmod(0o600)
    layout.config.write_text(yaml.safe_dump(
        registry_config(layout, cert, key, pki.ca_cert, secrets.token_hex(16)), sort_keys=False))
    layout.config.chmod(0o600)
    shutil.rmtree(layout.hosts_dir, ignore_errors=True)
    own = layout.hosts_dir / layout.address
    own.mkdir(parents=True)
    (own / "hosts.toml").write_text(hosts_toml(layout, f"https://{layout.address}"))
    for upstream in MIRRORED:
        mirror = layout.hosts_dir / upstream
        mirror.mkdir()
        server = "https://registry-1.docker.io" if upstream == "docker.io" else f"https://{upstream}"
        (mirror / "hosts.toml").write_text(hosts_toml(layout, server))
    return [program(), "serve", str(layout.config)]


def client_context(layout: RegistryLayout) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(layout.client_dir / "ca.crt"))
    context.load_cert_chain(str(layout.client_dir / "client.cert"), str(layout.client_dir / "client.key"))
    return context


def wait_ready(layout: RegistryLayout, timeout: float) -> None:
    """Until ``GET /v2/`` answers 200 to the registry client's certificate."""
    context = client_context(layout)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"https://{layout.address}/v2/", context=context, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as error:
            last = str(error)
        time.sleep(0.2)
    raise RuntimeError(f"the node's registry did not answer on https://{layout.address}/v2/ ({last}); "
                       f"see its log")


def push_target(layout: RegistryLayout) -> Registry:
    """Where ``images.push.push`` copies images to reach this node."""
    from iflearner.images.push import Registry

    return Registry(layout.address, cert_dir=layout.client_dir)
