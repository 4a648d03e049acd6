"""Fixtures for the controller on the real local control plane and the real Pulumi engine.

The controller runs as a separate process (``python -m iflearner.controller``,
the same code as ``iflearner-operator run``); see controller_harness.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from controller_harness import GROUP, PLURAL, VERSION, ControllerProcess, list_jobs
from kubernetes import client
from kubernetes.client.rest import ApiException


@pytest.fixture(scope="session")
def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def networking(api_client: client.ApiClient) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(api_client)


@pytest.fixture(scope="session")
def controller_prereqs(crd_installed: None, cluster_prereqs: dict[str, str]) -> dict[str, str]:
    """The CRD and what the bootstrap stack provides (CA, trust bundle, DNS records ConfigMap)."""
    return cluster_prereqs


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("controller-state")


@pytest.fixture
def start_controller(kubeconfig: Path, controller_prereqs: dict[str, str], state_dir: Path,
                     tmp_path: Path) -> Iterator[Callable[..., ControllerProcess]]:
    """Start controller processes sharing the module's state; all are stopped when the test ends
    (after ``jobs_ns``, when the test asks for this fixture first), so none outlives its test."""
    started: list[ControllerProcess] = []

    def start(*extra: str, ready: bool = True) -> ControllerProcess:
        process = ControllerProcess(kubeconfig, state_dir, tmp_path / f"controller-{len(started)}.log", *extra)
        started.append(process.start())
        if ready:
            process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def controller(kubeconfig: Path, controller_prereqs: dict[str, str], state_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """One controller for a module, with a short resync so that tests see resyncs happen."""
    log = tmp_path_factory.mktemp("controller-logs") / "controller.log"
    process = ControllerProcess(kubeconfig, state_dir, log, "--resync-period", "5", "--workers", "4").start()
    process.wait_ready()
    yield process
    process.stop()


@pytest.fixture
def jobs_ns(core: client.CoreV1Api, custom: client.CustomObjectsApi,
            request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace; at the end its jobs are deleted (and their stacks destroyed) first."""
    name = f"c-{abs(hash(request.node.nodeid)) % 10**8}-{os.getpid() % 1000}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    for job in list_jobs(custom, name):
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, name, PLURAL, job["metadata"]["name"])
        except ApiException:
            pass
    deadline = time.monotonic() + 90
    while list_jobs(custom, name) and time.monotonic() < deadline:
        time.sleep(0.5)
    for job in list_jobs(custom, name):  # no controller left to finish them: let them go
        custom.patch_namespaced_custom_object(GROUP, VERSION, name, PLURAL, job["metadata"]["name"],
                                              {"metadata": {"finalizers": None}},
                                              _content_type="application/merge-patch+json")
    core.delete_namespace(name)
