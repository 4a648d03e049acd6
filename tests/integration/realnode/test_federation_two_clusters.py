"""Part 2 of the real federation: the server in one cluster, the parties in another, each cluster
bootstrapped with its own stack the way the README's "Bootstrap a real cluster" says, in its order:

1. the server cluster: `stack select --create server`, `config set`, `up`, `stack output caCertificate`;
2. the party cluster: `stack select --create party-a`, the server's CA in
   `iflearner:peerCaCertificates.server`, `up`, its own `caCertificate` out;
3. back on the server cluster: the party's CA in `iflearner:peerCaCertificates.party`, `up` again.

Two real-node clusters run side by side on this machine: the server's node in the host's network
(slot 0, node address 10.213.0.1), the parties' node in a network namespace of its own (slot 1,
node address 10.214.1.2). Each cluster's CoreDNS answers the other's zone with that address
(`iflearner:zones`), where the other cluster's Traefik serves NodePort 30031. Parties dial
`job1.server.iflearner.com:30031` with TLS and trust only the mounted bundle, as the original jobs do.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from federation_harness import (
    GROUP,
    PLURAL,
    VERSION,
    assert_failed_for_tls,
    cluster_snapshot,
    delete_jobs,
    ended_jobs,
    wait,
    wait_back_to,
    wrong_trust_party,
)
from kubernetes import client, config
from realnode_harness import RealCluster

from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.desired import ClusterSettings
from iflearner.local.demo import FEDERATION_DIR, WORKLOAD_PLACEHOLDER, load_federation_images
from iflearner.localcluster import LocalCluster
from iflearner.localcluster.nodeconfig import NodeLayout, NodeNetwork
from iflearner.toolchain import REPO_ROOT

NAMESPACE = "default"
OPERATOR_UID = 65532
SERVER_NODE, PARTY_NODE = NodeNetwork(0), NodeNetwork(1)
PARTIES = ("client1", "client2")
WRONG_PARTY = "iflearnerjob-client-wrongca"


@pytest.fixture(scope="module")
def party_cluster(real_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The second cluster, its node in slot 1; stopped before the session's (slot 0) one."""
    cluster = LocalCluster(tmp_path_factory.mktemp("party"))
    cluster.up(node="real", slot=PARTY_NODE.slot, progress=lambda m: print(f"party cluster: {m}"))
    try:
        yield cluster
    finally:
        cluster.down()


def _api(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="module")
def clusters(real_cluster: RealCluster, party_cluster: LocalCluster) -> Iterator[dict[str, Any]]:
    assert real_cluster.state is not None
    server_api, party_api = _api(real_cluster.state.kubeconfig), _api(party_cluster.kubeconfig)
    images = {}
    for name, data_dir, network in (("server", real_cluster.cluster.data_dir, SERVER_NODE),
                                    ("party", party_cluster.data_dir, PARTY_NODE)):
        images[name] = load_federation_images(NodeLayout(data_dir, network).containerd_socket,
                                              progress=lambda m: print(f"images: {m}"))
    yield {
        "server": {"api": server_api, "kubeconfig": real_cluster.state.kubeconfig,
                   "data_dir": real_cluster.cluster.data_dir, "images": images["server"],
                   "before": cluster_snapshot(server_api)},
        "party": {"api": party_api, "kubeconfig": party_cluster.kubeconfig, "data_dir": party_cluster.data_dir,
                  "images": images["party"], "before": cluster_snapshot(party_api)},
    }
    server_api.close()
    party_api.close()


def _local_stack_file(stack: str, root: Path, overrides: dict[str, Any]) -> Path:
    """stacks/Pulumi.<stack>.yaml with what differs on this machine: the addresses of the two local
    nodes (instead of 172.31.164.x) and the images built here (no registry: never pulled)."""
    settings = yaml.safe_load((REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    settings["config"].update(overrides)
    path = root / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _stack(name: str, side: dict[str, Any], root: Path, overrides: dict[str, Any]) -> BootstrapProject:
    state = side["data_dir"] / f"{name}-operator-state"
    state.mkdir(exist_ok=True)
    os.chown(state, OPERATOR_UID, OPERATOR_UID)  # hostPath volumes ignore fsGroup
    return BootstrapProject(name, side["kubeconfig"], root / name, f"{name}-passphrase", _local_stack_file(
        name, root, {"iflearner:operatorImagePullPolicy": "Never", "iflearner:operatorReplicas": 1,
                     "iflearner:stateHostPath": str(state), **overrides}))


@pytest.fixture(scope="module")
def stacks(clusters: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("stacks")
    server, party = clusters["server"], clusters["party"]
    party_zones = [{"zone": "a.party.iflearner.com", "address": PARTY_NODE.node_address},
                   {"zone": "b.party.iflearner.com", "address": PARTY_NODE.node_address}]
    server_stack = _stack("server", server, root, {
        "iflearner:ingressAddress": SERVER_NODE.node_address, "iflearner:zones": party_zones})
    party_stack = _stack("party-a", party, root, {
        "iflearner:ingressAddress": PARTY_NODE.node_address,
        "iflearner:zones": [{"zone": "server.iflearner.com", "address": SERVER_NODE.node_address}],
        # This one cluster hosts both parties (and a third with a wrong trust file): all of their domains.
        "iflearner:jobDomains": ["party.iflearner.com"]})
    timings: dict[str, float] = {}

    def up(stack: BootstrapProject, label: str) -> None:
        started = time.monotonic()
        stack.up()
        timings[label] = time.monotonic() - started

    # 1. the server cluster
    server_stack.ensure_stack()
    server_stack.set_config("iflearner:operatorImage", server["images"]["iflearner-operator"])
    server_stack.set_config("iflearner:gatewayImage", server["images"]["traefik"])
    up(server_stack, "server up")
    server_ca = server_stack.outputs()["caCertificate"]
    # 2. the party cluster, trusting the server's CA
    party_stack.ensure_stack()
    party_stack.set_config("iflearner:operatorImage", party["images"]["iflearner-operator"])
    party_stack.set_config("iflearner:gatewayImage", party["images"]["traefik"])
    party_stack.set_config("iflearner:peerCaCertificates.server[0]", server_ca, path=True)
    up(party_stack, "party-a up")
    party_ca = party_stack.outputs()["caCertificate"]
    # 3. the server, trusting the party's CA
    server_stack.set_config("iflearner:peerCaCertificates.party[0]", party_ca, path=True)
    up(server_stack, "server up again")
    print("bootstrap: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    yield {"server": server_stack, "party": party_stack, "server_ca": server_ca, "party_ca": party_ca}
    # Whatever failed before the teardown test, leave both clusters clean for the next module.
    for side, stack in (("party", party_stack), ("server", server_stack)):
        delete_jobs(clusters[side]["api"])
        stack.destroy()


def _job(file: str, image: str) -> dict[str, Any]:
    return yaml.safe_load((FEDERATION_DIR / file).read_text().replace(WORKLOAD_PLACEHOLDER, image))


@pytest.fixture(scope="module")
def federation(clusters: dict[str, Any], stacks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    server, party = clusters["server"], clusters["party"]
    party_image = party["images"]["iflearner-workload"]
    # A party that trusts only its own cluster's CA: a mistake the README's step 2 prevents.
    client.CoreV1Api(party["api"]).create_namespaced_config_map(NAMESPACE, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="own-ca-only"), data={"ca.crt": stacks["party_ca"]}))
    placement = [(server, _job("server.yaml", server["images"]["iflearner-workload"])),
                 (party, _job("party-a.yaml", party_image)),
                 (party, _job("party-b.yaml", party_image)),
                 (party, wrong_trust_party(party_image, WRONG_PARTY, "own-ca-only"))]
    started = time.monotonic()
    for side, job in placement:
        client.CustomObjectsApi(side["api"]).create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, job)

    def all_ended() -> dict[str, dict[str, Any]] | None:
        found_server = ended_jobs(server["api"], NAMESPACE, ["iflearnerjob-server"])
        found_party = ended_jobs(party["api"], NAMESPACE, [f"iflearnerjob-{p}" for p in PARTIES] + [WRONG_PARTY])
        return {**found_server, **found_party} if found_server and found_party else None

    def describe() -> str:
        return str({side: [(j["metadata"]["name"], j.get("status")) for j in
                           client.CustomObjectsApi(clusters[side]["api"]).list_namespaced_custom_object(
                               GROUP, VERSION, NAMESPACE, PLURAL)["items"]] for side in ("server", "party")})[-4000:]

    done = wait("every job in both clusters to end", all_ended, 900, describe)
    print(f"two-cluster federation: every job ended {time.monotonic() - started:.1f}s after apply")
    return done


def test_parties_in_one_cluster_train_with_the_server_in_another(clusters: dict[str, Any],
                                                                federation: dict[str, dict[str, Any]]) -> None:
    for name, job in federation.items():
        if name != WRONG_PARTY:
            assert job["status"]["phase"] == "Succeeded", (name, job["status"])
    server_log = client.CoreV1Api(clusters["server"]["api"]).read_namespaced_pod_log("iflearnerjob-server",
                                                                                     NAMESPACE) or ""
    assert "FL-SERVER complete parties=client1,client2" in server_log, server_log[-3000:]
    epochs = int(re.search(r"--epochs=(\d+)", (FEDERATION_DIR / "party-a.yaml").read_text())[1])
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("federation_local", REPO_ROOT / "bench" / "federation_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("federation_local", module)
    spec.loader.exec_module(module)
    # Both parties' updates aggregated for every epoch.
    assert not module.server_log_problems(server_log, list(PARTIES), epochs), server_log[-3000:]
    core = client.CoreV1Api(clusters["party"]["api"])
    for party in PARTIES:
        log = core.read_namespaced_pod_log(f"iflearnerjob-{party}", NAMESPACE) or ""
        assert re.search(rf"FL-DONE\s+party={party} ", log), log[-2000:]
        # The server was reached through its cluster's gateway, by name, verified with the mounted bundle.
        assert ("TLS to job1.server.iflearner.com at job1.server.iflearner.com:30031 verified with "
                "/etc/server-iflearner-secret.crt") in log, log[:2000]


def test_a_party_trusting_only_its_own_cluster_fails_and_says_why(federation: dict[str, dict[str, Any]]) -> None:
    assert_failed_for_tls(federation[WRONG_PARTY]["status"])


def test_each_cluster_trusts_the_other_through_its_bundle(clusters: dict[str, Any], stacks: dict[str, Any],
                                                          federation: dict[str, dict[str, Any]]) -> None:
    """The bootstrap's trust bundles: server.crt in the party cluster and party.crt in the server
    cluster hold the peer's CA (from peerCaCertificates); each party job's mounted file is server.crt."""
    settings = ClusterSettings()
    assert stacks["server_ca"] != stacks["party_ca"]
    for side, key, peer_ca in (("party", "server.crt", stacks["server_ca"]),
                               ("server", "party.crt", stacks["party_ca"])):
        bundle = client.CoreV1Api(clusters[side]["api"]).read_namespaced_config_map(
            settings.trust_configmap_name, settings.operator_namespace).data[key]
        assert peer_ca.strip() in bundle, f"the {side} cluster's {key} lacks the peer's CA"


def test_teardown_leaves_both_clusters_as_before(clusters: dict[str, Any], stacks: dict[str, Any],
                                                 federation: dict[str, dict[str, Any]]) -> None:
    for side in ("party", "server"):
        delete_jobs(clusters[side]["api"])
        stacks[side].destroy()
    client.CoreV1Api(clusters["party"]["api"]).delete_namespaced_config_map("own-ca-only", NAMESPACE)
    for side in ("party", "server"):
        before = clusters[side]["before"]
        after = wait_back_to(clusters[side]["api"], before)
        assert after["corefile"] == before["corefile"], f"the {side} cluster's Corefile must be byte-identical"
        assert after == before, side
