"""A real, local Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok, which plays the kubelet of a
fake node so that Pods reach Running without containers.

With ``node="real"`` there is no kwok: containerd, kubelet and kube-proxy run
a real node (see :mod:`iflearner.localcluster.realnode`), and the API server
listens on the node's bridge address so that Pods reach it.

The cluster has its own data directory and its own kubeconfig; it never reads
or writes the user's ``~/.kube/config``.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iflearner import toolchain
from iflearner.localcluster import nodeconfig, processes, realnode, registry
from iflearner.localcluster.host import HostChanges
from iflearner.localcluster.kubeadm_addons import install_addons
from iflearner.localcluster.pki import Pki, client_cert, ensure_etcd_pki, ensure_pki

NODE_NAME = "kwok-node-0"
SERVICE_CIDR = "10.96.0.0/16"
STATE_FILE = "cluster.json"
# The API server answers these without credentials (probes, load balancers); nothing else.
HEALTH_PATHS = ("/livez", "/readyz", "/healthz")
NODE_KINDS = ("kwok", "real")


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
    node: str = "kwok"
    # What the real node changed on the host (None with kwok).
    host: HostChanges | None = None

    def save(self) -> None:
        payload = {
            "kubeconfig": str(self.kubeconfig),
            "apiserver_url": self.apiserver_url,
            "processes": [p.to_dict() for p in self.processes],
            "node": self.node,
            "host": self.host.to_dict() if self.host else None,
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
            node=payload.get("node", "kwok"),
            host=HostChanges.from_dict(payload["host"]) if payload.get("host") else None,
        )

    def alive(self) -> list[processes.ProcessRecord]:
        return [p for p in self.processes if processes.is_alive(p)]

    @property
    def slot(self) -> int:
        """The real node's network slot (see nodeconfig.NodeNetwork); 0 for kwok."""
        return self.host.node_slot if self.host is not None else 0


def _query_in_netns(network: nodeconfig.NodeNetwork, server: str, name: str) -> bool:
    import sys

    code = ("import sys; from iflearner.localcluster.dnsprobe import query_a; "
            "sys.exit(0 if query_a(sys.argv[1], sys.argv[2], timeout=1.0) else 1)")
    result = subprocess.run(network.command([sys.executable, "-c", code, server, name]),
                            capture_output=True, text=True, check=False, timeout=30)
    return result.returncode == 0


def default_data_dir() -> Path:
    return Path.home() / ".cache" / "iflearner-operator" / "local-cluster"


def _kubeconfig(pki: Pki, server: str, cert: Path | None = None, key: Path | None = None) -> str:
    def inline(path: Path) -> str:
        import base64

        return base64.b64encode(path.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "iflearner-local", "cluster": {
            "server": server, "certificate-authority-data": inline(pki.ca_cert)}}],
        "users": [{"name": "iflearner-local-admin", "user": {
            "client-certificate-data": inline(cert or pki.admin_cert),
            "client-key-data": inline(key or pki.admin_key)}}],
        "contexts": [{"name": "iflearner-local", "context": {
            "cluster": "iflearner-local", "user": "iflearner-local-admin"}}],
        "current-context": "iflearner-local",
    }
    return json.dumps(config, indent=2)


class LocalCluster:
    """Start, inspect and stop one local control plane rooted at ``data_dir``."""

    def __init__(self, data_dir: Path | None = None, audit_users: tuple[str, ...] = ()) -> None:
        self.data_dir = (data_dir or default_data_dir()).resolve()
        # Users whose every request the API server records (Metadata level) in
        # `audit_log`: tests read which calls an identity made and their verdicts.
        self.audit_users = audit_users

    @property
    def audit_log(self) -> Path:
        return self.data_dir / "logs" / "audit.log"

    def _audit_args(self) -> list[str]:
        if not self.audit_users:
            return []
        policy = self.data_dir / "audit-policy.yaml"
        policy.write_text(json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                                      "omitStages": ["RequestReceived"],
                                      "rules": [{"level": "Metadata", "users": list(self.audit_users)},
                                                {"level": "None"}]}))
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-maxbackup=1"]

    def _authentication_args(self) -> list[str]:
        """Anonymous requests only for the health endpoints (as kubeadm's clusters answer them to
        load balancers and probes); anything else without a client certificate or token is 401,
        where the default would hand it to RBAC as system:anonymous."""
        config = self.data_dir / "authentication-config.yaml"
        config.write_text(json.dumps({
            "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AuthenticationConfiguration",
            "anonymous": {"enabled": True, "conditions": [{"path": path} for path in HEALTH_PATHS]}}))
        return [f"--authentication-config={config}"]

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"

    def running_state(self) -> ClusterState | None:
        state = ClusterState.load(self.data_dir)
        if state and state.alive():
            return state
        return None

    def up(self, timeout: float | None = None, progress=print, node: str = "kwok",  # noqa: ANN001
           slot: int = 0) -> ClusterState:
        """Start the cluster. ``slot`` (real node only) picks the node's
        network: 0 in the host's namespace, 1.. each in a namespace of its own,
        so that several real-node clusters run side by side (a federation)."""
        if node not in NODE_KINDS:
            raise ClusterError(f"unknown node kind {node!r}; choose one of {', '.join(NODE_KINDS)}")
        try:
            network = nodeconfig.NodeNetwork(slot)
        except ValueError as error:
            raise ClusterError(str(error)) from error
        if node == "kwok" and slot != 0:
            raise ClusterError("--slot is for the real node; kwok clusters need none")
        timeout = timeout if timeout is not None else (180.0 if node == "kwok" else 300.0)
        running = self.running_state()
        if running:
            raise ClusterAlreadyRunningError(
                f"a local cluster is already running from {self.data_dir} "
                f"(kubeconfig {running.kubeconfig}); stop it with `iflearner-operator cluster down`"
            )
        # A crashed earlier run: stop what is left of it and undo its host changes.
        leftover = ClusterState.load(self.data_dir)
        if leftover is not None:
            self._stop(leftover)
        names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
        names += ["kwok"] if node == "kwok" else ["kubelet", "kube-proxy"]
        binaries = {name: toolchain.tool(name) for name in names}
        images: dict[str, Any] = {}
        if node == "real":
            self._check_real_node_possible(network)
            from iflearner.images import project_images

            # Before anything starts (and outside the timeout): a cold build
            # runs debootstrap; a warm one only hashes its inputs.
            images = project_images(progress=progress, names=list(realnode.IMAGES))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Every `up` is a fresh cluster: objects of a previous run (and their
        # allocated Service IPs) would clash with the add-ons created below.
        shutil.rmtree(self.data_dir / "etcd", ignore_errors=True)
        address = "127.0.0.1" if node == "kwok" else network.host_address
        pki = ensure_pki(self.data_dir / "pki", extra_ips=(network.host_address,) if node == "real" else ())
        etcd_pki = ensure_etcd_pki(pki)
        logs = self.data_dir / "logs"
        etcd_port, etcd_peer, api_port, cm_port, sched_port, kwok_port = processes.free_ports(6)
        server = f"https://{address}:{api_port}"
        self.kubeconfig.write_text(_kubeconfig(pki, server))
        self.kubeconfig.chmod(0o600)
        kubeconfig = str(self.kubeconfig)
        state = ClusterState(self.data_dir, self.kubeconfig, server, node=node)
        started = time.monotonic()

        def launch(name: str, argv: list[str]) -> None:
            record, _ = processes.start(name, argv, logs / f"{name}.log")
            state.processes.append(record)
            state.save()

        def remaining() -> float:
            return timeout - (time.monotonic() - started)  # type: ignore[operator]

        try:
            if node == "real":
                where = f"network namespace {network.netns}, " if network.netns else ""
                progress(f"preparing the host for a real node ({where}bridge {network.bridge}, "
                         f"Pod subnet {network.pod_subnet}, node address {network.node_address})")
                layout = nodeconfig.NodeLayout(self.data_dir, network)
                state.host = HostChanges()
                state.save()
                self._fresh_node_dir(layout)
                realnode.prepare_host(layout, state.host, SERVICE_CIDR, state.save)
            progress(f"starting etcd on https://127.0.0.1:{etcd_port}")
            # TLS with client certificates of etcd's own CA, on both listeners: any local user or
            # host-network Pod could otherwise read every Secret, or write a privileged Pod.
            launch("etcd", [
                str(binaries["etcd"]), "--name=local", f"--data-dir={self.data_dir / 'etcd'}",
                f"--listen-client-urls=https://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=https://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=https://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=https://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=local=https://127.0.0.1:{etcd_peer}",
                f"--cert-file={etcd_pki.server_cert}", f"--key-file={etcd_pki.server_key}",
                "--client-cert-auth=true", f"--trusted-ca-file={etcd_pki.ca_cert}",
                f"--peer-cert-file={etcd_pki.server_cert}", f"--peer-key-file={etcd_pki.server_key}",
                "--peer-client-cert-auth=true", f"--peer-trusted-ca-file={etcd_pki.ca_cert}",
                "--listen-metrics-urls=", "--unsafe-no-fsync=true", "--log-level=warn",
            ])
            progress(f"starting kube-apiserver on {server}")
            if node == "kwok":
                # The built-in `kubernetes` Service cannot point at loopback.
                node_args = ["--endpoint-reconciler-type=none"]
            else:
                # On the bridge address the `kubernetes` Service has an
                # endpoint Pods can reach; the API server calls kubelets
                # (logs, exec) with the admin certificate.
                # By address: the node's name resolves nowhere (and must not
                # be looked up off the machine).
                node_args = [f"--kubelet-client-certificate={pki.admin_cert}",
                             f"--kubelet-client-key={pki.admin_key}",
                             "--kubelet-preferred-address-types=InternalIP"]
            launch("kube-apiserver", [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers=https://127.0.0.1:{etcd_port}", f"--etcd-cafile={etcd_pki.ca_cert}",
                f"--etcd-certfile={etcd_pki.apiserver_client_cert}",
                f"--etcd-keyfile={etcd_pki.apiserver_client_key}",
                f"--bind-address={address}", f"--secure-port={api_port}",
                f"--advertise-address={address}",
                *node_args,
                f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC", "--allow-privileged=true",
                f"--cert-dir={self.data_dir / 'apiserver-certs'}",
                *self._authentication_args(),
                *self._audit_args(),
            ])
            self._wait_for_apiserver(pki, server, remaining())
            progress("starting kube-controller-manager, kube-scheduler"
                     + (" and kwok" if node == "kwok" else ""))
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
            if node == "kwok":
                launch("kwok", [
                    str(binaries["kwok"]), f"--kubeconfig={kubeconfig}",
                    f"--config={toolchain.tools_dir() / 'kwok-stages.yaml'}",
                    "--manage-all-nodes=true", f"--server-address=127.0.0.1:{kwok_port}",
                    "--cidr=10.244.0.1/24", "--node-ip=10.244.0.1",
                ])
                progress(f"registering fake node {NODE_NAME} and cluster add-ons")
                install_addons(self.kubeconfig, NODE_NAME, remaining())
            else:
                self._start_real_node(network, pki, server, images, launch, progress, remaining)
        except BaseException:
            self._stop(state)
            raise
        progress(f"local cluster ready in {time.monotonic() - started:.1f}s; kubeconfig: {self.kubeconfig}")
        return state

    def _check_real_node_possible(self, network: nodeconfig.NodeNetwork) -> None:
        import os

        missing = realnode.missing_runtime()
        if missing:
            raise ClusterError(f"the real node needs {', '.join(missing)}; run `make setup`")
        if os.geteuid() != 0:
            raise ClusterError("the real node needs root (containerd, bridge, iptables, mounts)")
        holder = realnode.lock_holder(network)
        if holder is not None and holder != self.data_dir:
            other = ClusterState.load(holder)
            if other is not None and other.alive():
                raise ClusterAlreadyRunningError(
                    f"a real-node cluster is already running from {holder} in slot {network.slot}: one per "
                    f"slot can run on a host; stop it with `iflearner-operator cluster down --data-dir {holder}`"
                    f", or start this one in another slot (`--slot`)")
            if other is not None:  # crashed: clean it up before taking the slot
                LocalCluster(holder)._stop(other)
            network.host_lock.unlink(missing_ok=True)

    def _fresh_node_dir(self, layout: nodeconfig.NodeLayout) -> None:
        shutil.rmtree(layout.root, ignore_errors=True)
        # unix socket paths are limited to 107 bytes: containerd's, and the
        # kubelet's pod-resources socket (a 10-digit random name) under its root.
        for owner, socket_path in (("containerd", str(layout.containerd_socket) + ".ttrpc"),
                                   ("kubelet", str(layout.kubelet_root / "pod-resources" / "1234567890"))):
            if len(socket_path.encode()) > 107:
                raise ClusterError(f"the data dir {self.data_dir} is too deep for {owner}'s socket "
                                   f"({socket_path}); use a shorter --data-dir")

    def _start_real_node(self, network: nodeconfig.NodeNetwork, pki: Pki, server: str,  # noqa: ANN001
                         images: dict[str, Any], launch, progress, remaining) -> None:  # noqa: ANN001
        from iflearner.localcluster.dnsprobe import query_a
        from iflearner.localcluster.kubeadm_addons import wait_coredns

        layout = nodeconfig.NodeLayout(self.data_dir, network)
        kubelet_cert = client_cert(pki, "kubelet", f"system:node:{nodeconfig.NODE_NAME}", "system:nodes")
        proxy_cert = client_cert(pki, "kube-proxy", "system:kube-proxy")
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.kubelet_kubeconfig.write_text(_kubeconfig(pki, server, *kubelet_cert))
        layout.kube_proxy_kubeconfig.write_text(_kubeconfig(pki, server, *proxy_cert))
        kubelet_port, kubelet_healthz, proxy_metrics, proxy_healthz = processes.free_ports(4)
        registry_layout = registry.RegistryLayout(self.data_dir, network)
        progress(f"starting the node's registry on https://{registry_layout.address}")
        launch("registry", registry.prepare(registry_layout, pki))
        nodeconfig.write_configs(
            layout, sandbox_image=images["pause"].reference, service_cidr=SERVICE_CIDR, ca_cert=pki.ca_cert,
            kubelet_port=kubelet_port, kubelet_healthz_port=kubelet_healthz,
            proxy_metrics_port=proxy_metrics, proxy_healthz_port=proxy_healthz,
            registry_hosts=registry_layout.hosts_dir)
        registry.wait_ready(registry_layout, min(remaining(), 30.0))
        progress("starting containerd")
        realnode.start_containerd(layout, launch, min(remaining(), 60.0))
        realnode.import_images(layout, images, progress)
        progress(f"starting kubelet and kube-proxy for node {nodeconfig.NODE_NAME}")
        realnode.start_node(layout, launch, nodeconfig.NODE_NAME)
        progress("waiting for the node to be Ready and CoreDNS to run")
        install_addons(self.kubeconfig, nodeconfig.NODE_NAME, remaining(), fake=False,
                       coredns_image=images["coredns"].reference)
        wait_coredns(self.kubeconfig, remaining())
        deadline = time.monotonic() + remaining()
        name = "kubernetes.default.svc.cluster.local"
        while True:
            try:
                if network.netns is None:
                    answered = bool(query_a(nodeconfig.CLUSTER_DNS, name, timeout=1.0))
                else:  # the Service address exists only in the node's namespace
                    answered = _query_in_netns(network, nodeconfig.CLUSTER_DNS, name)
                if answered:
                    break
                raise OSError("no A record")
            except (OSError, ValueError) as error:
                if time.monotonic() > deadline:
                    raise ClusterError(f"CoreDNS does not answer for {name} at {nodeconfig.CLUSTER_DNS}: "
                                       f"{error}") from error
            time.sleep(0.5)

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

    def kill_and_restart(self, name: str) -> None:
        """SIGKILL one control-plane process (``etcd``, ``kube-apiserver``, ...) and start it again
        with the same command line, environment and log: a crash and its supervisor's restart, for
        fault-injection runs. The cluster's record follows the new process (``down`` stops it)."""
        state = ClusterState.load(self.data_dir)
        record = next((p for p in state.processes if p.name == name), None) if state is not None else None
        if state is None or record is None or not processes.is_alive(record):
            raise ClusterError(f"no running {name} in the cluster at {self.data_dir}")
        proc = Path(f"/proc/{record.pid}")
        argv = [arg.decode() for arg in (proc / "cmdline").read_bytes().split(b"\0") if arg]
        env = dict(item.decode().split("=", 1) for item in (proc / "environ").read_bytes().split(b"\0")
                   if b"=" in item)
        processes.kill(record)
        new, _ = processes.start(name, argv, self.data_dir / "logs" / f"{name}.log", env=env)
        state.processes[state.processes.index(record)] = new
        state.save()

    def down(self) -> bool:
        """Stop every process of the cluster (and undo the real node's host
        changes); True if anything was running."""
        state = ClusterState.load(self.data_dir)
        if state is None:
            return False
        was_running = bool(state.alive())
        self._stop(state)
        return was_running

    def _stop(self, state: ClusterState) -> None:
        problems: list[str] = []
        layout = nodeconfig.NodeLayout(state.data_dir, nodeconfig.NodeNetwork(state.slot))
        if state.host is not None:
            by_name = {p.name: p for p in state.processes}

            def stop(name: str) -> None:
                if name in by_name:
                    processes.stop(by_name[name])

            containerd = by_name.get("containerd")
            problems = realnode.stop_node(layout, state.host, stop,
                                          containerd is not None and processes.is_alive(containerd))
        for record in reversed(state.processes):
            processes.stop(record)
        if state.host is not None:
            problems += realnode.undo_host(layout, state.host)
        still = state.alive()
        if still:
            problems.append(f"could not stop: {', '.join(p.name for p in still)}")
        if problems:
            raise ClusterError("the local cluster was not cleaned up completely: " + "; ".join(problems))
        (state.data_dir / STATE_FILE).unlink(missing_ok=True)
