"""The local control plane is a real one: scheduler, kwok, controller-manager,
garbage collector; and `cluster up`/`down` manage it cleanly."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client

from iflearner.localcluster import ClusterAlreadyRunningError, LocalCluster


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def test_pod_reaches_running_through_kwok(core: client.CoreV1Api, namespace: str) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="hello"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
    )
    core.create_namespaced_pod(namespace, pod)
    running = wait_for(lambda: core.read_namespaced_pod("hello", namespace).status.phase == "Running")
    assert running
    assert core.read_namespaced_pod("hello", namespace).spec.node_name == "kwok-node-0"


def test_deployment_gets_replicaset_and_gc_removes_dependents(api_client, namespace: str) -> None:
    apps = client.AppsV1Api(api_client)
    labels = {"app": "web"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]),
            ),
        ),
    )
    apps.create_namespaced_deployment(namespace, deployment)
    replica_sets = wait_for(lambda: apps.list_namespaced_replica_set(namespace).items)
    assert replica_sets[0].metadata.owner_references[0].name == "web"
    core = client.CoreV1Api(api_client)
    wait_for(lambda: len(core.list_namespaced_pod(namespace, label_selector="app=web").items) == 2)

    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    wait_for(lambda: not apps.list_namespaced_replica_set(namespace).items)
    wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector="app=web").items)


def _listening_ports() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_cli_up_refuses_second_start_and_down_leaves_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli-cluster"
    cli = [sys.executable, "-m", "iflearner", "cluster"]
    before = _listening_ports()
    up = subprocess.run([*cli, "up", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    kubeconfig = Path(up.stdout.strip())
    assert kubeconfig.is_file() and kubeconfig.parent == data_dir.resolve()
    state = LocalCluster(data_dir).running_state()
    assert state is not None and len(state.processes) == 5
    assert _listening_ports() - before, "the cluster should listen on new ports"

    again = subprocess.run([*cli, "up", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert again.returncode != 0
    assert "already running" in again.stderr
    with pytest.raises(ClusterAlreadyRunningError):
        LocalCluster(data_dir).up()

    down = subprocess.run([*cli, "down", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    for record in state.processes:
        assert not Path(f"/proc/{record.pid}").exists() or \
            Path(f"/proc/{record.pid}/stat").read_text().split()[2] == "Z"
    assert not (_listening_ports() - before), "no port of the cluster may stay open"
    assert LocalCluster(data_dir).running_state() is None


def _flag(state, process: str, name: str) -> str:
    """A flag's value on the command line of one of the cluster's processes."""
    record = next(p for p in state.processes if p.name == process)
    argv = Path(f"/proc/{record.pid}/cmdline").read_bytes().decode().split("\0")
    return next(arg.split("=", 1)[1] for arg in argv if arg.startswith(f"{name}="))


def _status(url: str, context) -> int:  # noqa: ANN001
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_etcd_and_the_api_server_refuse_strangers(local_cluster) -> None:  # noqa: ANN001
    """etcd takes only the API server's client certificate (etcd's own CA, not the cluster's), and
    the API server answers requests without credentials on its health endpoints only."""
    import ssl

    from iflearner.localcluster.pki import EtcdPki, Pki

    pki = Pki(local_cluster.data_dir / "pki")
    etcd = EtcdPki(pki.directory / "etcd")
    etcd_url = _flag(local_cluster, "etcd", "--listen-client-urls")
    assert etcd_url.startswith("https://127.0.0.1:")
    with pytest.raises(OSError):
        _status(etcd_url.replace("https://", "http://") + "/version", None)
    stranger = ssl.create_default_context(cafile=str(etcd.ca_cert))
    with pytest.raises(OSError):
        _status(f"{etcd_url}/version", stranger)
    admin = ssl.create_default_context(cafile=str(etcd.ca_cert))
    admin.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))  # the cluster's system:masters
    with pytest.raises(OSError):
        _status(f"{etcd_url}/version", admin)
    apiserver = ssl.create_default_context(cafile=str(etcd.ca_cert))
    apiserver.load_cert_chain(str(etcd.apiserver_client_cert), str(etcd.apiserver_client_key))
    assert _status(f"{etcd_url}/version", apiserver) == 200

    anonymous = ssl.create_default_context(cafile=str(pki.ca_cert))
    for path in ("/api/v1/namespaces/kube-system/secrets", "/version", "/metrics", "/api"):
        assert _status(f"{local_cluster.apiserver_url}{path}", anonymous) == 401, path
    for path in ("/livez", "/readyz", "/healthz"):
        assert _status(f"{local_cluster.apiserver_url}{path}", anonymous) == 200, path
