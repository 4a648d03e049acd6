"""The original topology's pure parts: each cluster's local stack settings and the README's trust
order (which peer CA goes where), without clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from iflearner.local import topology
from iflearner.local.demo import Demo, DemoError
from iflearner.local.topology import PARTY_A, PARTY_B, SERVER, SIDES, OriginalTopology, local_overrides
from iflearner.toolchain import REPO_ROOT

IMAGES = {"iflearner-operator": "op@sha256:1", "traefik": "traefik@sha256:2", "iflearner-workload": "w@sha256:3"}


def test_each_cluster_answers_the_other_two_zones_with_their_nodes() -> None:
    for side in SIDES:
        overrides = local_overrides(side, Path("/state"), IMAGES)
        assert overrides["iflearner:ingressAddress"] == side.network.node_address
        zones = {z["zone"]: z["address"] for z in overrides["iflearner:zones"]}
        assert zones == {o.zone: o.network.node_address for o in SIDES if o is not side}
    assert len({s.network.node_address for s in SIDES}) == 3


def test_the_stack_files_exist_and_own_their_zone() -> None:
    for side in SIDES:
        settings = yaml.safe_load((REPO_ROOT / "stacks" / f"Pulumi.{side.stack}.yaml").read_text())["config"]
        assert settings["iflearner:jobDomains"] == [side.zone]
        assert settings["iflearner:clusterRole"] == ("party" if side.is_party else "server")
        # The example's job lives in its own cluster's domain.
        job = yaml.safe_load((topology.FEDERATION_DIR / side.example).read_text())
        assert job["spec"]["host"].endswith("." + side.zone)


class _Project:
    """Records what the bootstrap is told, in order."""

    def __init__(self, stack: str, log: list[tuple[str, str, str]]) -> None:
        self.stack, self.log = stack, log

    def ensure_stack(self) -> None:
        pass

    def set_config(self, key: str, value: str, secret: bool = False, path: bool = False) -> None:
        assert path
        self.log.append((self.stack, "config", f"{key}={value}"))

    def up(self, progress: Any = None) -> None:  # noqa: ANN401
        self.log.append((self.stack, "up", ""))

    def outputs(self) -> dict[str, str]:
        return {"caCertificate": f"{self.stack}-ca"}


def test_bootstrap_follows_the_readme_order_and_trusts_every_peer(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[str, str, str]] = []
    monkeypatch.setattr(OriginalTopology, "project", lambda self, side: _Project(side.stack, log))
    monkeypatch.setattr(OriginalTopology, "_prepare", lambda self, side, images: _Project(side.stack, log))
    cas = OriginalTopology(tmp_path, "p").bootstrap({s.stack: IMAGES for s in SIDES})
    assert cas == {"server": "server-ca", "party-a": "party-a-ca", "party-b": "party-b-ca"}
    assert log == [
        ("server", "up", ""),
        ("party-a", "config", "iflearner:peerCaCertificates.server[0]=server-ca"),
        ("party-a", "up", ""),
        ("party-b", "config", "iflearner:peerCaCertificates.server[0]=server-ca"),
        ("party-b", "config", "iflearner:peerCaCertificates.party[0]=party-a-ca"),
        ("party-b", "up", ""),
        ("server", "config", "iflearner:peerCaCertificates.party[0]=party-a-ca"),
        ("server", "config", "iflearner:peerCaCertificates.party[1]=party-b-ca"),
        ("server", "up", ""),
        ("party-a", "config", "iflearner:peerCaCertificates.party[0]=party-b-ca"),
        ("party-a", "up", ""),
    ]
    assert (SERVER, PARTY_A, PARTY_B) == SIDES


def test_the_original_topology_needs_a_real_node(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="needs --node real"):
        Demo(tmp_path, timeout=1, node="kwok", topology="original")
    with pytest.raises(DemoError, match="unknown topology"):
        Demo(tmp_path, timeout=1, node="real", topology="two")
