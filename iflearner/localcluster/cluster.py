"""A real, local Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok, which plays the kubelet of a
fake node so that Pods reach Running without containers.

The cluster has its own data directory and its own kubeconfig; it never reads
or writes the user's ``~/.kube/config``.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from iflearner import toolchain
from iflearner.localcluster import processes
from iflearner.localcluster.kubeadm_addons import install_addons
from iflearner.localcluster.pki import Pki, ensure_pki

NODE_NAME = "kwok-node-0"
SERVICE_CIDR = "10.96.0.0/16"
STATE_FILE = "cluster.json"


class ClusterError(RuntimeError):
    """The local cluster could not be started or stopped; the message says why."""


class ClusterAlreadyRunningError(ClusterError):
    pass


@dataclass
class ClusterState:
    data_dir: Path
    kubeconfig: Path
    apiserver_url: str
    processes: list[processes.ProcessRecord] = field(default_factory=list)

    def save(self) -> None:
        payload = {
            "kubeconfig": str(self.kubeconfig),
            "apiserver_url": self.apiserver_url,
            "processes": [p.to_dict() for p in self.processes],
        }
        (self.data_dir / STATE_FILE).write_text(json.dumps(payload, indent=2))

    @classmethod
    def load(cls, data_dir: Path) -> ClusterState | None:
        path = data_dir / STATE_FILE
        if not path.exists():
            return None
        payload = json.loads(path.read_text())
        return cls(
            data_dir=data_dir,
            kubeconfig=Path(payload["kubeconfig"]),
            apiserver_url=payload["apiserver_url"],
            processes=[processes.ProcessRecord.from_dict(p) for p in payload["processes"]],
        )

    def alive(self) -> list[processes.ProcessRecord]:
        return [p for p in self.processes if processes.is_alive(p)]


def default_data_dir() -> Path:
    return Path.home() / ".cache" / "iflearner-operator" / "local-cluster"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kubeconfig(pki: Pki, server: str) -> str:
    def inline(path: Path) -> str:
        import base64

        return base64.b64encode(path.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "iflearner-local", "cluster": {
            "server": server, "certificate-authority-data": inline(pki.ca_cert)}}],
        "users": [{"name": "iflearner-local-admin", "user": {
            "client-certificate-data": inline(pki.admin_cert),
            "client-key-data": inline(pki.admin_key)}}],
        "contexts": [{"name": "iflearner-local", "context": {
            "cluster": "iflearner-local", "user": "iflearner-local-admin"}}],
        "current-context": "iflearner-local",
    }
    return json.dumps(config, indent=2)


class LocalCluster:
    """Start, inspect and stop one local control plane rooted at ``data_dir``."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = (data_dir or default_data_dir()).resolve()

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"

    def running_state(self) -> ClusterState | None:
        state = ClusterState.load(self.data_dir)
        if state and state.alive():
            return state
        return None

    def up(self, timeout: float = 180.0, progress=print) -> ClusterState:  # noqa: ANN001
        running = self.running_state()
        if running:
            raise ClusterAlreadyRunningError(
                f"a local cluster is already running from {self.data_dir} "
                f"(kubeconfig {running.kubeconfig}); stop it with `iflearner-operator cluster down`"
            )
        binaries = {name: toolchain.tool(name) for name in (
            "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Every `up` is a fresh cluster: objects of a previous run (and their
        # allocated Service IPs) would clash with the add-ons created below.
        shutil.rmtree(self.data_dir / "etcd", ignore_errors=True)
        pki = ensure_pki(self.data_dir / "pki")
        logs = self.data_dir / "logs"
        etcd_port, etcd_peer, api_port, cm_port, sched_port, kwok_port = (
            _free_port() for _ in range(6))
        server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig.write_text(_kubeconfig(pki, server))
        self.kubeconfig.chmod(0o600)
        kubeconfig = str(self.kubeconfig)
        state = ClusterState(self.data_dir, self.kubeconfig, server)
        started = time.monotonic()

        def launch(name: str, argv: list[str]) -> None:
            record, _ = processes.start(name, argv, logs / f"{name}.log")
            state.processes.append(record)
            state.save()

        try:
            progress(f"starting etcd on 127.0.0.1:{etcd_port}")
            launch("etcd", [
                str(binaries["etcd"]), "--name=local", f"--data-dir={self.data_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=local=http://127.0.0.1:{etcd_peer}",
                "--listen-metrics-urls=", "--unsafe-no-fsync=true", "--log-level=warn",
            ])
            progress(f"starting kube-apiserver on {server}")
            launch("kube-apiserver", [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1", f"--secure-port={api_port}",
                "--advertise-address=127.0.0.1",
                # The built-in `kubernetes` Service cannot point at loopback.
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC", "--allow-privileged=true",
                f"--cert-dir={self.data_dir / 'apiserver-certs'}",
            ])
            self._wait_for_apiserver(pki, server, timeout - (time.monotonic() - started))
            progress("starting kube-controller-manager, kube-scheduler and kwok")
            launch("kube-controller-manager", [
                str(binaries["kube-controller-manager"]), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={cm_port}", "--leader-elect=false",
                f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}", "--use-service-account-credentials=false",
                # kwok renews the node's lease; on a busy 2-core machine a late
                # renewal must not mark the node NotReady and evict its Pods.
                "--node-monitor-grace-period=5m",
                f"--cert-dir={self.data_dir / 'controller-manager-certs'}",
            ])
            launch("kube-scheduler", [
                str(binaries["kube-scheduler"]), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1", f"--secure-port={sched_port}", "--leader-elect=false",
                f"--cert-dir={self.data_dir / 'scheduler-certs'}",
            ])
            launch("kwok", [
                str(binaries["kwok"]), f"--kubeconfig={kubeconfig}",
                f"--config={toolchain.tools_dir() / 'kwok-stages.yaml'}",
                "--manage-all-nodes=true", f"--server-address=127.0.0.1:{kwok_port}",
                "--cidr=10.244.0.1/24", "--node-ip=10.244.0.1",
            ])
            progress(f"registering fake node {NODE_NAME} and cluster add-ons")
            install_addons(self.kubeconfig, NODE_NAME, timeout - (time.monotonic() - started))
        except BaseException:
            self._stop(state)
            raise
        progress(f"local cluster ready in {time.monotonic() - started:.1f}s; kubeconfig: {self.kubeconfig}")
        return state

    def _wait_for_apiserver(self, pki: Pki, server: str, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{server}/readyz", context=context, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                last_error = str(error)
            time.sleep(0.3)
        raise ClusterError(
            f"kube-apiserver did not become ready in time ({last_error}); "
            f"see {self.data_dir / 'logs'}")

    def down(self) -> bool:
        """Stop every process of the cluster; True if anything was running."""
        state = ClusterState.load(self.data_dir)
        if state is None:
            return False
        was_running = bool(state.alive())
        self._stop(state)
        return was_running

    def _stop(self, state: ClusterState) -> None:
        for record in reversed(state.processes):
            processes.stop(record)
        still = state.alive()
        if still:
            raise ClusterError(f"could not stop: {', '.join(p.name for p in still)}")
        (state.data_dir / STATE_FILE).unlink(missing_ok=True)
