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
