"""`images push` against a real registry (Debian's docker-registry, as each real node runs it:
TLS from the cluster CA, client certificates required): the registry serves the very manifest the
builder wrote, named by digest; a second push sends nothing new; a client without a certificate is
refused; a registry that is not there gets an error naming it."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from iflearner.images import ImageBuilder, project_spec
from iflearner.images.push import PushError, Registry, push
from iflearner.localcluster import processes, registry
from iflearner.localcluster.pki import ensure_pki


@pytest.fixture(scope="module")
def running_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[registry.RegistryLayout]:
    data_dir = tmp_path_factory.mktemp("registry")
    layout = registry.RegistryLayout(data_dir, host="127.0.0.1", port=processes.free_ports(1)[0])
    pki = ensure_pki(data_dir / "pki")
    record, _ = processes.start("registry", registry.prepare(layout, pki), data_dir / "registry.log")
    try:
        registry.wait_ready(layout, 30)
        yield layout
    finally:
        processes.stop(record)


def _manifest(layout: registry.RegistryLayout, reference: str) -> tuple[str, dict]:
    repository, _, digest = reference.partition("@")
    name = repository.split("/", 1)[1]
    request = urllib.request.Request(f"https://{layout.address}/v2/{name}/manifests/{digest}", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request, context=registry.client_context(layout), timeout=10) as response:
        return response.headers["Docker-Content-Digest"], json.loads(response.read())


def test_push_serves_the_built_manifest_by_digest_once(running_registry: registry.RegistryLayout) -> None:
    builder = ImageBuilder(progress=print)
    image = builder.build(project_spec("pause", builder))
    target = registry.push_target(running_registry)
    reference = push(image, target)
    assert reference == f"{running_registry.address}/pause@{image.manifest_digest}"
    served, manifest = _manifest(running_registry, reference)
    assert served == image.manifest_digest and manifest["layers"]
    # the same image under the original examples' name (the node's mirror of ghcr.io serves it)
    assert push(image, target, name="iflytek/iflearner", tag="v0.1.0").endswith(f"iflytek/iflearner@{served}")
    # a second push finds every blob there: the storage gains nothing
    blobs = running_registry.storage / "docker" / "registry" / "v2" / "blobs"
    before = sorted(p.name for p in blobs.rglob("data"))
    assert push(image, target) == reference
    assert sorted(p.name for p in blobs.rglob("data")) == before


def test_a_client_without_the_cluster_certificate_is_refused(running_registry: registry.RegistryLayout) -> None:
    context = ssl.create_default_context(cafile=str(running_registry.client_dir / "ca.crt"))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(f"https://{running_registry.address}/v2/", context=context, timeout=5)


def test_push_errors_name_the_registry_and_what_to_give(tmp_path: Path) -> None:
    builder = ImageBuilder(progress=print)
    image = builder.build(project_spec("pause", builder))
    with pytest.raises(PushError, match="pushing .* to 127.0.0.1:1/pause"):
        push(image, Registry("127.0.0.1:1", tls_verify=False))
    with pytest.raises(PushError, match="host\\[:port\\]\\[/prefix\\]"):
        Registry("https://registry.example.com")


def test_the_cli_prints_references_and_the_stack_config(running_registry: registry.RegistryLayout) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "iflearner", "images", "push", f"{running_registry.address}/ml-platform", "traefik",
         "--cert-dir", str(running_registry.client_dir)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("traefik\t"))
    reference = line.split("\t")[1]
    assert reference.startswith(f"{running_registry.address}/ml-platform/traefik@sha256:")
    assert f"scripts/pulumi config set iflearner:gatewayImage {reference}" in result.stdout
    assert _manifest(running_registry, reference)[0] == reference.partition("@")[2]
