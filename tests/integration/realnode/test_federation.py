"""Part 1 of the real federation as a test, on the real node, the way a platform engineer meets it:
the bootstrap's `pulumi up` (operator as a Pod, Traefik, CoreDNS, CA), then examples/federation/
applied as they are (only the image placeholder replaced).

Besides training (the demo test shows the metrics), this shows what the scheduler and a platform
engineer rely on:
- the server's status API at ``http://<job>.<namespace>:82/v1/status``, read from a Pod in the cluster
  (how iflearner-flow follows a federation), names both parties and their completion;
- a party given a wrong trust file fails TLS verification, and its job ends ``Failed`` with a message
  that says so (from the container's termination message);
- deleting the jobs and destroying the bootstrap leaves the cluster as it was: CoreDNS's Corefile
  byte-identical, no namespace, CRD or cluster role of ours left.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from federation_harness import (
    GROUP,
    PLURAL,
    VERSION,
    assert_failed_for_tls,
    cluster_snapshot,
    delete_jobs,
    ended_jobs,
    status_probe_pod,
    wait,
    wait_back_to,
    wrong_trust_party,
)
from kubernetes import client
from kubernetes.client.rest import ApiException
from realnode_harness import RealCluster

from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.local.topology import FEDERATION_DIR, WORKLOAD_PLACEHOLDER, load_federation_images
from iflearner.localcluster.nodeconfig import NodeLayout

NAMESPACE = "default"
EXAMPLES = ("server.yaml", "party-a.yaml", "party-b.yaml")
WRONG_PARTY = "iflearnerjob-client-wrongca"
PROBE = "scheduler-status-probe"
STATUS_URL = f"http://iflearnerjob-server.{NAMESPACE}:82/v1/status"
OPERATOR_UID = 65532

def _foreign_ca_pem() -> str:
    """A CA that signed nothing the cluster serves: the wrong trust file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other federation's CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def federation_images(real_cluster: RealCluster) -> dict[str, str]:
    started = time.monotonic()
    images = load_federation_images(NodeLayout(real_cluster.cluster.data_dir).containerd_socket,
                                    progress=lambda m: print(f"images: {m}"))
    print(f"federation images built or found and imported in {time.monotonic() - started:.1f}s")
    return images


@pytest.fixture(scope="module")
def before_bootstrap(real_api: client.ApiClient) -> dict[str, Any]:
    return cluster_snapshot(real_api)


@pytest.fixture(scope="module")
def bootstrap(real_cluster: RealCluster, real_api: client.ApiClient, federation_images: dict[str, str],
              before_bootstrap: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
              ) -> Iterator[BootstrapProject]:
    """The README's bootstrap of a real-node cluster (stacks/Pulumi.local-real.yaml), as the demo does it."""
    assert real_cluster.state is not None
    root = tmp_path_factory.mktemp("federation")
    volume = real_cluster.cluster.data_dir / "federation-operator-state"
    volume.mkdir(exist_ok=True)
    os.chown(volume, OPERATOR_UID, OPERATOR_UID)  # hostPath volumes ignore fsGroup
    project = BootstrapProject("local-real", real_cluster.state.kubeconfig, root / "bootstrap", "federation-test")
    project.ensure_stack()
    project.set_config("iflearner:operatorImage", federation_images["iflearner-operator"])
    project.set_config("iflearner:gatewayImage", federation_images["traefik"])
    project.set_config("iflearner:stateHostPath", str(volume))
    project.set_config("iflearner:statePassphrase", "federation-test", secret=True)
    started = time.monotonic()
    project.up()
    print(f"bootstrap up: {time.monotonic() - started:.1f}s")
    yield project
    # Teardown is a test of its own (test_teardown_leaves_the_cluster_as_before); whatever failed
    # before it, leave nothing that would block the next module.
    _delete_jobs(real_api)
    project.destroy()  # a no-op after the teardown test


def _delete_jobs(api: client.ApiClient) -> None:
    delete_jobs(api)
    core = client.CoreV1Api(api)
    for delete in (lambda: core.delete_namespaced_pod(PROBE, NAMESPACE, grace_period_seconds=0),
                   lambda: core.delete_namespaced_config_map("wrong-ca", NAMESPACE)):
        try:
            delete()
        except ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture(scope="module")
def federation(bootstrap: BootstrapProject, real_api: client.ApiClient,
               federation_images: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The three example jobs, the wrong-trust party and the scheduler's probe Pod, run to the end."""
    custom, core = client.CustomObjectsApi(real_api), client.CoreV1Api(real_api)
    image = federation_images["iflearner-workload"]
    core.create_namespaced_config_map(NAMESPACE, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="wrong-ca"), data={"ca.crt": _foreign_ca_pem()}))
    core.create_namespaced_pod(NAMESPACE, status_probe_pod(PROBE, image, STATUS_URL, parties=2))
    jobs = [yaml.safe_load((FEDERATION_DIR / name).read_text().replace(WORKLOAD_PLACEHOLDER, image))
            for name in EXAMPLES] + [wrong_trust_party(image, WRONG_PARTY, "wrong-ca")]
    started = time.monotonic()
    for job in jobs:
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, job)
    names = [job["metadata"]["name"] for job in jobs]

    def describe() -> str:
        return json.dumps({j["metadata"]["name"]: j.get("status") for j in
                           custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]},
                          indent=1)[-4000:]

    done = wait("every job to end", lambda: ended_jobs(real_api, NAMESPACE, names), 900, describe)
    print(f"federation: every job ended {time.monotonic() - started:.1f}s after apply")
    return done


def test_the_federation_trains_and_every_example_job_succeeds(federation: dict[str, dict[str, Any]],
                                                              real_core: client.CoreV1Api) -> None:
    for name in ("iflearnerjob-server", "iflearnerjob-client1", "iflearnerjob-client2"):
        status = federation[name]["status"]
        assert status["phase"] == "Succeeded", (name, status)
    log = real_core.read_namespaced_pod_log("iflearnerjob-server", NAMESPACE) or ""
    assert "FL-SERVER complete parties=client1,client2" in log, log[-2000:]
    for party in ("client1", "client2"):
        party_log = real_core.read_namespaced_pod_log(f"iflearnerjob-{party}", NAMESPACE) or ""
        assert f"FL-DONE  party={party}" in party_log or f"FL-DONE party={party}" in party_log, party_log[-2000:]


def test_a_party_with_a_wrong_trust_file_fails_and_says_why(federation: dict[str, dict[str, Any]]) -> None:
    assert_failed_for_tls(federation[WRONG_PARTY]["status"])


def test_the_scheduler_reads_the_server_status_api_from_a_pod(federation: dict[str, dict[str, Any]],
                                                             real_core: client.CoreV1Api) -> None:
    wait("the probe Pod to end", lambda: real_core.read_namespaced_pod(PROBE, NAMESPACE).status.phase
          in ("Succeeded", "Failed"), 120)
    log = real_core.read_namespaced_pod_log(PROBE, NAMESPACE) or ""
    answers = [json.loads(line.split(" ", 1)[1]) for line in log.splitlines() if line.startswith("STATUS ")]
    assert answers, f"the status API never answered at {STATUS_URL}:\n{log[-2000:]}"
    last = answers[-1]
    assert set(last) == {"client1", "client2"}, last
    assert all(party["complete"] for party in last.values()), last
    assert real_core.read_namespaced_pod(PROBE, NAMESPACE).status.phase == "Succeeded", log[-2000:]


def test_teardown_leaves_the_cluster_as_before(federation: dict[str, dict[str, Any]], bootstrap: BootstrapProject,
                                               real_api: client.ApiClient,
                                               before_bootstrap: dict[str, Any]) -> None:
    _delete_jobs(real_api)
    bootstrap.destroy()
    core = client.CoreV1Api(real_api)
    after = wait_back_to(real_api, before_bootstrap)
    assert after["corefile"] == before_bootstrap["corefile"], "CoreDNS's Corefile must be byte-identical"
    assert after == before_bootstrap
    assert not core.list_namespaced_pod(NAMESPACE).items
