"""Fixtures for tests against the real local control plane and Pulumi engine.

The control plane is started once per test session with the same code as
`iflearner-operator cluster up`. A missing toolchain is an error, never a
skip: `make test` builds it first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from iflearner.localcluster import ClusterState, LocalCluster
from iflearner.stackrunner import RunnerSettings, StackRunner


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    cluster = LocalCluster(tmp_path_factory.mktemp("local-cluster"))
    state = cluster.up(progress=lambda msg: print(f"cluster: {msg}"))
    try:
        yield state
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def kubeconfig(local_cluster: ClusterState) -> Path:
    return local_cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def runner(tmp_path_factory: pytest.TempPathFactory) -> StackRunner:
    settings = RunnerSettings.local(tmp_path_factory.mktemp("pulumi"), passphrase="test-passphrase")
    return StackRunner(settings)


@pytest.fixture
def namespace(core: client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    name = f"t-{abs(hash(request.node.nodeid)) % 10**8}-{os.getpid() % 1000}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def cluster_prereqs(core: client.CoreV1Api) -> dict[str, str]:
    """What the bootstrap stack provides to job stacks, made directly: the
    operator namespace, the CA Secret, the trust bundle and the shared DNS
    records ConfigMap. (The bootstrap project itself is tested separately.)"""
    from iflearner.desired import ClusterSettings
    from iflearner.tlsresources import issue_ca

    settings = ClusterSettings()
    ca = issue_ca("iflearner test cluster CA", 24)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=settings.operator_namespace)))
    core.create_namespaced_secret(settings.operator_namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=settings.ca_secret_name), type="kubernetes.io/tls",
        string_data={"tls.crt": ca["cert_pem"], "tls.key": ca["private_key_pem"]}))
    core.create_namespaced_config_map(settings.operator_namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=settings.trust_configmap_name),
        data={"server.crt": ca["cert_pem"], "party.crt": ca["cert_pem"]}))
    core.create_namespaced_config_map(settings.dns_namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=settings.dns_configmap_name)))
    return {"ca_cert_pem": ca["cert_pem"]}


@pytest.fixture(scope="session")
def crd_installed(kubeconfig: Path) -> None:
    import subprocess

    from iflearner.toolchain import REPO_ROOT

    subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "apply", "-f",
                    str(REPO_ROOT / "crd" / "iflearnerjob.yaml")], check=True, capture_output=True)
    subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "wait", "--for=condition=Established",
                    "crd/iflearnerjobs.git.iflytek.com", "--timeout=60s"], check=True, capture_output=True)
