"""The original's own federation: three clusters, and secure aggregation between the parties.

``iflearner.local.topology`` (what ``demo --topology original`` runs) starts party a's and party b's
real-node clusters beside the session's one (the server's, slot 0), bootstraps the three with their
stacks from ``stacks/`` in the README's order, and the original's jobs run as a scheduler runs them
(iflearner-flow's way): created with the kubernetes client as ``iflearnerjob-server-<uuid>`` and
``iflearnerjob-client-<uuid>``, their ``status.phase`` read through the status subresource, the
server's ``http://<job>.<namespace>:82/v1/status`` polled from a Pod in the server's cluster, logs
read from the Pod named as the job, then deleted.

Each party's job is ``examples/federation/party-*.yaml`` as it is: ``--peers=0.0.0.0:50001;
job1.<other>.party.iflearner.com:30031 --peer-cert=/etc/party-iflearner-secret.crt``. So party a
dials party b's host, which party a's CoreDNS answers with party b's node address, through party
b's gateway (Traefik, TLS with party b's certificate) to party b's Pod, trusting only the party
bundle its own cluster mounts; and the other way round.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from federation_harness import GROUP, PLURAL, VERSION, cluster_snapshot, status_probe_pod, wait, wait_back_to
from kubernetes import client
from kubernetes.client.rest import ApiException
from realnode_harness import RealCluster

from iflearner.desired import ClusterSettings
from iflearner.local.topology import NAMESPACE, PARTY_A, PARTY_B, SERVER, SIDES, OriginalTopology, example_job
from iflearner.toolchain import REPO_ROOT

PARTY_SIDES = {"client1": PARTY_A, "client2": PARTY_B}
WRONG_PEER = "iflearnerjob-client-wrongpeer"
PROBE = "scheduler-status-probe"
PARTY_TRUST = "/etc/party-iflearner-secret.crt"
# Masks below 1 added to float32 parameters: the aggregate differs from the unmasked one by ~1e-7.
TOLERANCE = 1e-5


def _used_memory_mib() -> float:
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(fields["MemTotal"].split()[0]) - int(fields["MemAvailable"].split()[0])) / 1024


@pytest.fixture(scope="module")
def topology(real_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OriginalTopology]:
    """The server's cluster is the session's; party a's and party b's are started here (slots 1, 2)."""
    topology = OriginalTopology(tmp_path_factory.mktemp("original"), "three-clusters", progress=print,
                                clusters={SERVER.stack: real_cluster.cluster})
    memory = _used_memory_mib()
    try:
        topology.up_clusters()
        print(f"memory in use: {memory:.0f} MiB with one cluster, {_used_memory_mib():.0f} MiB with three")
        yield topology
    finally:
        # Whatever failed before the teardown test: leave the session's cluster clean, stop the others.
        topology.down(stop_clusters=(PARTY_A.stack, PARTY_B.stack))


@pytest.fixture(scope="module")
def apis(topology: OriginalTopology) -> Iterator[dict[str, client.ApiClient]]:
    apis = {side.stack: topology.api(side) for side in SIDES}
    yield apis
    for api in apis.values():
        api.close()


@pytest.fixture(scope="module")
def before(apis: dict[str, client.ApiClient]) -> dict[str, dict[str, Any]]:
    return {stack: cluster_snapshot(api) for stack, api in apis.items()}


@pytest.fixture(scope="module")
def bootstrapped(topology: OriginalTopology, before: dict[str, dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    images = topology.load_images()
    imported = time.monotonic() - started
    cas = topology.bootstrap(images)
    print(f"three clusters: images imported in {imported:.0f}s, bootstrapped in "
          f"{time.monotonic() - started - imported:.0f}s ("
          + ", ".join(f"{k} {v:.0f}s" for k, v in topology.timings.items())
          + f"); memory in use {_used_memory_mib():.0f} MiB")
    return {"images": images, "cas": cas}


def _named(job: dict[str, Any], name: str) -> dict[str, Any]:
    job["metadata"]["name"] = name
    return job


def _wrong_peer_party(image: str) -> dict[str, Any]:
    """Party a's job as another party that names the *server* bundle as its --peer-cert (the two
    mounted files mixed up): it trusts the server's CA, which did not sign party b's certificate."""
    job = _named(example_job(PARTY_A, image), WRONG_PEER)
    job["spec"]["host"] = "job2.a.party.iflearner.com"
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [a.replace("client1", "wrongpeer").replace(f"--peer-cert={PARTY_TRUST}",
                                                                   "--peer-cert=/etc/server-iflearner-secret.crt")
                         for a in container["args"]] + ["--tls-grace=10"]
    return job


@pytest.fixture(scope="module")
def federation(topology: OriginalTopology, apis: dict[str, client.ApiClient],
               bootstrapped: dict[str, Any]) -> dict[str, Any]:
    """iflearner-flow's way: uuid names, created with the client, phases from the status subresource."""
    images = bootstrapped["images"]
    server = f"iflearnerjob-server-{uuid.uuid4()}"
    parties = {party: f"iflearnerjob-client-{uuid.uuid4()}" for party in PARTY_SIDES}
    placement = [(SERVER, _named(example_job(SERVER, images[SERVER.stack]["iflearner-workload"]), server))]
    placement += [(side, _named(example_job(side, images[side.stack]["iflearner-workload"]), parties[party]))
                  for party, side in PARTY_SIDES.items()]
    placement.append((PARTY_A, _wrong_peer_party(images[PARTY_A.stack]["iflearner-workload"])))
    status_url = f"http://{server}.{NAMESPACE}:82/v1/status"
    client.CoreV1Api(apis[SERVER.stack]).create_namespaced_pod(
        NAMESPACE, status_probe_pod(PROBE, images[SERVER.stack]["iflearner-workload"], status_url, parties=2))
    started = time.monotonic()
    topology.apply(placement)
    phases: dict[str, str] = {}

    def all_ended() -> dict[str, str] | None:
        for side, job in placement:
            name = job["metadata"]["name"]
            found = client.CustomObjectsApi(apis[side.stack]).get_namespaced_custom_object_status(
                GROUP, VERSION, NAMESPACE, PLURAL, name)
            phases[name] = (found.get("status") or {}).get("phase", "")
        return dict(phases) if all(p in ("Succeeded", "Failed") for p in phases.values()) else None

    ended = wait("every job of the three clusters to end", all_ended, 900, lambda: json.dumps(phases))
    print(f"three-cluster federation: every job ended {time.monotonic() - started:.1f}s after apply")
    statuses = {job["metadata"]["name"]: client.CustomObjectsApi(apis[side.stack]).get_namespaced_custom_object_status(
        GROUP, VERSION, NAMESPACE, PLURAL, job["metadata"]["name"])["status"] for side, job in placement}
    logs = {job["metadata"]["name"]: client.CoreV1Api(apis[side.stack]).read_namespaced_pod_log(
        job["metadata"]["name"], NAMESPACE, timestamps=True) or "" for side, job in placement}
    return {"server": server, "parties": parties, "phases": ended, "statuses": statuses, "logs": logs,
            "status_url": status_url}


def _untimed(log: str) -> str:
    """A log read with timestamps=True, without them."""
    return "\n".join(line.split(" ", 1)[-1] for line in log.splitlines())


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("federation_local", REPO_ROOT / "bench" / "federation_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("federation_local", module)
    spec.loader.exec_module(module)
    return module


def test_the_original_federation_trains_across_three_clusters(federation: dict[str, Any]) -> None:
    for name in [federation["server"], *federation["parties"].values()]:
        assert federation["phases"][name] == "Succeeded", (name, federation["statuses"][name])
    server_log = _untimed(federation["logs"][federation["server"]])
    assert "FL-SERVER complete parties=client1,client2" in server_log, server_log[-3000:]
    epochs = int(re.search(r"--epochs=(\d+)", (REPO_ROOT / "examples/federation/party-a.yaml").read_text())[1])
    assert not _bench().server_log_problems(server_log, list(PARTY_SIDES), epochs), server_log[-3000:]


def test_the_parties_exchange_masks_through_each_others_gateway(federation: dict[str, Any]) -> None:
    """Each party verified the other's gateway with the party bundle only, exchanged a key and a mask
    with it in both directions, and the two masks (in two clusters) sum to zero."""
    parse = _bench().parse_lines
    masks = {}
    for party in PARTY_SIDES:
        other_party = next(p for p in PARTY_SIDES if p != party)
        other_host = f"job1.{PARTY_SIDES[other_party].zone}"
        log = _untimed(federation["logs"][federation["parties"][party]])
        assert f"TLS to {other_host} at {other_host}:30031 verified with {PARTY_TRUST}" in log, log[:3000]
        records = [r for r in parse(log) if r["kind"] in ("PEER", "MASK")]
        peer = {(r["step"], r.get("peer"), r.get("tls"), r.get("served")) for r in records if r["kind"] == "PEER"}
        for step in ("key", "mask"):
            assert (step, f"{other_host}:30031", PARTY_TRUST, None) in peer, (party, records)
            assert (f"{step}-served", None, None, other_party) in peer, (party, records)
        (mask,) = [float(r["mask"]) for r in records if r["kind"] == "MASK"]
        masks[party] = mask
    assert all(m != 0 for m in masks.values()) and abs(sum(masks.values())) < 1e-9, masks


def test_the_masked_aggregate_equals_the_unmasked_one(federation: dict[str, Any], tmp_path: Path) -> None:
    """The same parties (same seeds) without --peers, as local processes: the global model of every
    round, measured on each party's data, and the final metric match within TOLERANCE."""
    bench = _bench()
    epochs = int(re.search(r"--epochs=(\d+)", (REPO_ROOT / "examples/federation/party-a.yaml").read_text())[1])
    plain = bench.run_federation(bench.workload_python(), tmp_path / "plain", bench.write_certificates(tmp_path),
                                 epochs=epochs, parties=list(PARTY_SIDES), timeout=180)
    assert plain.party_rcs == {p: 0 for p in PARTY_SIDES}, plain.log("server")[-2000:]
    rounds = {}
    for party in PARTY_SIDES:
        masked = bench.parse_lines(_untimed(federation["logs"][federation["parties"][party]]))
        for kind, keys in (("ROUND", ("global_loss", "global_accuracy")), ("DONE", ("loss", "accuracy"))):
            ours = {r.get("epoch", r.get("epochs")): r for r in masked if r["kind"] == kind}
            theirs = {r.get("epoch", r.get("epochs")): r for r in plain.records(party) if r["kind"] == kind}
            assert ours.keys() == theirs.keys() and ours, (party, kind, ours, theirs)
            for epoch, record in ours.items():
                for key in keys:
                    assert abs(float(record[key]) - float(theirs[epoch][key])) <= TOLERANCE, (party, epoch, key)
        rounds[party] = [float(r["cycle_s"]) for r in masked if r["kind"] == "EPOCH" and "cycle_s" in r]
    masked_round = sum(sum(v) for v in rounds.values()) / sum(len(v) for v in rounds.values())
    print(f"round time: {masked_round:.2f}s across three clusters with secure aggregation; "
          f"{sum(plain.round_times().values()) / len(plain.round_times()):.2f}s as local processes without")


def test_a_party_whose_peer_cert_is_a_foreign_ca_fails_and_says_why(federation: dict[str, Any]) -> None:
    status = federation["statuses"][WRONG_PEER]
    assert status["phase"] == "Failed", status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "PodFailed", ready
    assert "TLS verification failed: the peer party job1.b.party.iflearner.com" in ready["message"], ready
    assert "/etc/server-iflearner-secret.crt does not accept" in ready["message"], ready
    assert "--peer-cert must hold the CA" in ready["message"], ready
    assert "exited with code 3" in ready["message"], ready


def test_the_scheduler_follows_the_server_through_its_status_api(federation: dict[str, Any],
                                                                 apis: dict[str, client.ApiClient]) -> None:
    core = client.CoreV1Api(apis[SERVER.stack])
    wait("the probe Pod to end", lambda: core.read_namespaced_pod(PROBE, NAMESPACE).status.phase
         in ("Succeeded", "Failed"), 120)
    log = core.read_namespaced_pod_log(PROBE, NAMESPACE) or ""
    answers = [json.loads(line.split(" ", 1)[1]) for line in log.splitlines() if line.startswith("STATUS ")]
    assert answers, f"the status API never answered at {federation['status_url']}:\n{log[-2000:]}"
    assert set(answers[-1]) == set(PARTY_SIDES) and all(p["complete"] for p in answers[-1].values()), answers[-1]


def test_each_cluster_trusts_the_others_through_its_bundles(apis: dict[str, client.ApiClient],
                                                            bootstrapped: dict[str, Any]) -> None:
    """server.crt: the server side's CA; party.crt: every party cluster's CA (the original's trust files)."""
    cas = bootstrapped["cas"]
    assert len(set(cas.values())) == 3
    settings = ClusterSettings()
    for side in SIDES:
        bundles = client.CoreV1Api(apis[side.stack]).read_namespaced_config_map(
            settings.trust_configmap_name, settings.operator_namespace).data
        for party in (PARTY_A, PARTY_B):
            assert cas[party.stack].strip() in bundles["party.crt"], (side.stack, party.stack)
        if side.is_party:
            assert cas[SERVER.stack].strip() in bundles["server.crt"], side.stack
            assert cas[SERVER.stack].strip() not in bundles["party.crt"], side.stack


def test_teardown_leaves_all_three_clusters_as_before(topology: OriginalTopology, federation: dict[str, Any],
                                                      apis: dict[str, client.ApiClient],
                                                      before: dict[str, dict[str, Any]]) -> None:
    try:
        client.CoreV1Api(apis[SERVER.stack]).delete_namespaced_pod(PROBE, NAMESPACE, grace_period_seconds=0)
    except ApiException as error:
        if error.status != 404:
            raise
    # The scheduler's delete, then each bootstrap's destroy; the clusters stay up to be compared.
    assert topology.down(stop_clusters=())
    for side in SIDES:
        after = wait_back_to(apis[side.stack], before[side.stack])
        assert after["corefile"] == before[side.stack]["corefile"], f"{side.stack}: Corefile not byte-identical"
        assert after == before[side.stack], side.stack
