"""The node registry's files: its config takes only the cluster CA's client certificates, and
containerd pulls from it directly and in place of the public registries it mirrors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from cryptography import x509

from iflearner.localcluster import nodeconfig, registry
from iflearner.localcluster.pki import ensure_pki


def test_prepare_writes_a_mutual_tls_config_and_containerd_hosts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(registry.shutil, "which", lambda name: f"/usr/bin/{name}")
    pki = ensure_pki(tmp_path / "pki")
    layout = registry.RegistryLayout(tmp_path, nodeconfig.NodeNetwork(2))
    argv = registry.prepare(layout, pki)
    assert argv == ["/usr/bin/docker-registry", "serve", str(layout.config)]
    assert layout.address == "10.214.2.1:5000"
    config = yaml.safe_load(layout.config.read_text())
    assert config["http"]["addr"] == "10.214.2.1:5000"
    assert config["http"]["tls"]["clientcas"] == [str(pki.ca_cert)]
    served = x509.load_pem_x509_certificate(Path(config["http"]["tls"]["certificate"]).read_bytes())
    sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.214.2.1"]
    assert layout.config.stat().st_mode & 0o077 == 0 and (layout.client_dir / "client.key").stat().st_mode & 0o077 == 0

    hosts = {d.name: tomllib.loads((d / "hosts.toml").read_text()) for d in layout.hosts_dir.iterdir()}
    assert set(hosts) == {"10.214.2.1:5000", *registry.MIRRORED}
    assert hosts["ghcr.io"]["server"] == "https://ghcr.io"
    assert hosts["docker.io"]["server"] == "https://registry-1.docker.io"
    client = [[str(layout.client_dir / "client.cert"), str(layout.client_dir / "client.key")]]
    for upstream in (*registry.MIRRORED, "10.214.2.1:5000"):
        mirror = hosts[upstream]["host"]["https://10.214.2.1:5000"]
        assert mirror["capabilities"] == ["pull", "resolve"] and mirror["client"] == client
        assert mirror["ca"] == str(layout.client_dir / "ca.crt")
    assert hosts["10.214.2.1:5000"]["server"] == "https://10.214.2.1:5000"

    # a second prepare (the next `cluster up`) keeps the certificates and storage, rewrites the rest
    cert = Path(config["http"]["tls"]["certificate"]).read_bytes()
    (layout.storage / "kept").write_text("blob")
    registry.prepare(layout, pki)
    assert Path(config["http"]["tls"]["certificate"]).read_bytes() == cert
    assert (layout.storage / "kept").exists()


def test_containerd_reads_the_registry_hosts_directory(tmp_path: Path) -> None:
    layout = nodeconfig.NodeLayout(tmp_path)
    config = tomllib.loads(nodeconfig.containerd_toml(layout, "pause:1", tmp_path / "hosts"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"]["config_path"] == str(tmp_path / "hosts")
    assert "registry" not in tomllib.loads(nodeconfig.containerd_toml(layout, "pause:1"))["plugins"][
        "io.containerd.grpc.v1.cri"]
