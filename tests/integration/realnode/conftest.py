"""Fixtures for the real node: one local cluster per session started with
``node="real"`` (containerd, kubelet, kube-proxy, CoreDNS as a Pod). It runs
beside the kwok cluster of the other tests (its own data dir, ports, bridge);
only one real-node cluster can run on a host at a time.

Never skipped: without the runtime or the toolchain, ``up`` fails saying to
run ``make setup``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client, config
from realnode_harness import RealCluster, wait_until_host_free


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    wait_until_host_free()
    real = RealCluster(tmp_path_factory.mktemp("realnode"))
    real.state = real.cluster.up(node="real", progress=lambda msg: print(f"real cluster: {msg}"))
    try:
        yield real
    finally:
        real.cluster.down()  # a no-op when the teardown test already stopped it


@pytest.fixture(scope="session")
def real_api(real_cluster: RealCluster) -> Iterator[client.ApiClient]:
    assert real_cluster.state is not None
    api = config.new_client_from_config(config_file=str(real_cluster.state.kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="session")
def real_core(real_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(real_api)


@pytest.fixture
def real_namespace(real_core: client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"rn-{abs(hash(request.node.nodeid)) % 10**8}"
    real_core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    real_core.delete_namespace(name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The teardown test stops the real cluster: it runs right after the
    last test that uses it, wherever pytest collected the others."""
    teardown = [i for i in items if i.path.name == "test_realnode_teardown.py"]
    if not teardown:
        return
    rest = [i for i in items if i not in teardown]
    users = [n for n, i in enumerate(rest) if "real_cluster" in getattr(i, "fixturenames", ())]
    position = users[-1] + 1 if users else len(rest)
    items[:] = rest[:position] + teardown + rest[position:]
