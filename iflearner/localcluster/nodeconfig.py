"""Configuration files of the real node's programs (containerd with its CRI
plugin, the CNI network, kubelet, kube-proxy), rendered from one
:class:`NodeLayout`. Pure functions of their arguments.

Every path is under the cluster's data directory: nothing is written to the
system's default locations (/etc/containerd, /var/lib/containerd,
/var/lib/kubelet, /etc/cni, /var/lib/cni/networks, /var/log/pods).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The real node's network exists only on this machine: a bridge with a
# private subnet, never routed anywhere. Slot 0 (the default) runs in the
# host's network namespace; a second real-node cluster on the same host (two
# clusters of a federation) takes slot 1, 2...: its containerd, kubelet and
# kube-proxy run in a network namespace of their own, joined to the host by a
# veth pair, so that bridges, kube-proxy's chains and addresses never clash.
NODE_NAME = "iflearner-real-node"
CLUSTER_DNS = "10.96.0.10"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
# Every address of every slot (Pod subnets 10.213.<slot>.0/24, node links
# 10.214.<slot>.0/30): Pods route this range to their bridge, so that a Pod of
# one local cluster reaches another's gateway; nothing else has a route.
LOCAL_NETWORKS = "10.212.0.0/14"
# Forward guards accept traffic between these interfaces only (iptables' `+`
# wildcard): every slot's bridge and host-side veth starts with it.
INTERFACE_PREFIX = "iflr"
MAX_SLOT = 9


@dataclass(frozen=True)
class NodeNetwork:
    """Names and addresses of one real node's network, by slot."""

    slot: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.slot <= MAX_SLOT:
            raise ValueError(f"a real node's slot is 0..{MAX_SLOT}, not {self.slot}")

    @property
    def suffix(self) -> str:
        return "" if self.slot == 0 else str(self.slot)

    @property
    def bridge(self) -> str:
        return f"{INTERFACE_PREFIX}real{self.slot}"

    @property
    def pod_subnet(self) -> str:
        return f"10.213.{self.slot}.0/24"

    @property
    def gateway(self) -> str:
        """The bridge's address: Pods' gateway (and slot 0's node address)."""
        return f"10.213.{self.slot}.1"

    @property
    def netns(self) -> str | None:
        """The node's network namespace (None: the host's)."""
        return None if self.slot == 0 else f"{INTERFACE_PREFIX}-node{self.slot}"

    @property
    def host_veth(self) -> str:
        return f"{INTERFACE_PREFIX}{self.slot}h"

    @property
    def node_veth(self) -> str:
        return f"{INTERFACE_PREFIX}{self.slot}n"

    @property
    def host_address(self) -> str:
        """Where the host (API server) is reached from the node: the bridge on slot 0, else its veth."""
        return self.gateway if self.slot == 0 else f"10.214.{self.slot}.1"

    @property
    def node_address(self) -> str:
        """The node's InternalIP: kubelet's serving address and the NodePort address."""
        return self.gateway if self.slot == 0 else f"10.214.{self.slot}.2"

    @property
    def cni_network(self) -> str:
        return f"iflearner-realnode{self.suffix}"

    @property
    def cgroup_root(self) -> str:
        return f"/iflearner-realnode{self.suffix}"

    @property
    def forward_chain(self) -> str:
        return f"IFLEARNER-REALNODE{self.suffix}"

    @property
    def host_lock(self) -> Path:
        return Path(f"/run/iflearner-realnode{self.suffix}.json")

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run in the node's network namespace (and the host's mounts)."""
        if self.netns is None:
            return argv
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]


_SLOT0 = NodeNetwork()
# Slot 0's names, for the code and tests that know only one real node.
BRIDGE = _SLOT0.bridge
POD_SUBNET = _SLOT0.pod_subnet
GATEWAY = _SLOT0.gateway
CNI_NETWORK = _SLOT0.cni_network
CGROUP_ROOT = _SLOT0.cgroup_root
FORWARD_CHAIN = _SLOT0.forward_chain


@dataclass(frozen=True)
class NodeLayout:
    data_dir: Path
    network: NodeNetwork = NodeNetwork()

    @property
    def root(self) -> Path:
        return self.data_dir / "node"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        # unix socket paths are limited to 107 bytes: keep this one short.
        return self.root / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.kubeconfig"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def kube_proxy_kubeconfig(self) -> Path:
        return self.root / "kube-proxy.kubeconfig"


def containerd_toml(layout: NodeLayout, sandbox_image: str, registry_hosts: Path | None = None) -> str:
    """containerd's config; ``registry_hosts``: its hosts directory (the node's registry, see
    :mod:`iflearner.localcluster.registry`)."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    registry = f'\n[{cri}.registry]\n  config_path = "{registry_hosts}"\n' if registry_hosts else ""
    return f"""version = 2
root = "{layout.containerd_root}"
state = "{layout.containerd_state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{layout.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{layout.root / 'containerd' / 'opt'}"

[{cri}]
  sandbox_image = "{sandbox_image}"
  # These machines lack CAP_SYS_RESOURCE: without this every sandbox fails
  # with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # A random port on loopback instead of the fixed 10010 (exec/logs streams).
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # Pods' network namespaces under containerd's state dir, not /run/netns:
  # a second node on the host must never see (or clean up) the first's.
  netns_mounts_under_state_dir = {str(layout.network.slot > 0).lower()}

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  # runc's state outside /run/containerd/runc.
  Root = "{layout.root / 'runc'}"

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{layout.cni_conf_dir}"
  max_conf_num = 1
{registry}"""


def cni_conflist(layout: NodeLayout, service_cidr: str) -> dict[str, Any]:
    """A bridge with host-local addresses. No default route and no
    masquerading: a Pod reaches other Pods, Services (routed to the bridge's
    gateway, where kube-proxy rewrites them), the host and the other local
    clusters' nodes (:data:`LOCAL_NETWORKS`), nothing else."""
    network = layout.network
    return {
        "cniVersion": "1.0.0",
        "name": network.cni_network,
        "plugins": [{
            "type": "bridge",
            "bridge": network.bridge,
            "isGateway": True,
            "isDefaultGateway": False,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": network.pod_subnet, "gateway": network.gateway}]],
                # Services, and the other local clusters' gateways (a federation's
                # parties dial the server's cluster); no default route.
                "routes": [{"dst": service_cidr}, {"dst": LOCAL_NETWORKS}],
                "dataDir": str(layout.cni_ipam_dir),
            },
        }],
    }


def kubelet_configuration(layout: NodeLayout, ca_cert: Path, port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # cgroup v1 hosts: kubelet 1.35+ refuses them unless told not to.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # Pods' cgroups under a root of our own, removed on down.
        "cgroupRoot": layout.network.cgroup_root,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": layout.network.node_address,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "clusterDNS": [CLUSTER_DNS],
        "resolvConf": str(layout.resolv_conf),
        "podLogsDir": str(layout.pod_logs),
        "failSwapOn": False,
        "oomScoreAdj": 0,
        # The disk is shared with everything else on the machine: never evict
        # Pods or garbage-collect images (the imported ones have no registry
        # to be pulled back from) for lack of space.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "registerNode": True,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusReportFrequency": "1m",
        "maxPods": 200,
    }


def resolv_conf(network: NodeNetwork = _SLOT0) -> str:
    # Pods with dnsPolicy Default (CoreDNS) get this file. Its nameserver is
    # the bridge's gateway, where nothing serves DNS: CoreDNS's `forward`
    # fails at once instead of sending queries off the machine, and `loop`
    # finds no loop.
    return f"nameserver {network.gateway}\n"


def kube_proxy_configuration(layout: NodeLayout, metrics_port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(layout.kube_proxy_kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": layout.network.node_address,
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "clusterCIDR": layout.network.pod_subnet,
        "nodePortAddresses": [f"{layout.network.node_address}/32"],
        "oomScoreAdj": 0,
        # 0 leaves the host's conntrack sysctls as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s", "udpTimeout": "0s", "udpStreamTimeout": "0s"},
        # true would set route_localnet on the whole host.
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }


def write_configs(layout: NodeLayout, *, sandbox_image: str, service_cidr: str, ca_cert: Path,
                  kubelet_port: int, kubelet_healthz_port: int, proxy_metrics_port: int,
                  proxy_healthz_port: int, registry_hosts: Path | None = None) -> None:
    for directory in (layout.root, layout.cni_conf_dir, layout.cni_ipam_dir, layout.kubelet_root,
                      layout.pod_logs, layout.containerd_root, layout.containerd_state):
        directory.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(containerd_toml(layout, sandbox_image, registry_hosts))
    (layout.cni_conf_dir / "10-iflearner.conflist").write_text(json.dumps(cni_conflist(layout, service_cidr), indent=2))
    layout.resolv_conf.write_text(resolv_conf(layout.network))
    layout.kubelet_config.write_text(json.dumps(
        kubelet_configuration(layout, ca_cert, kubelet_port, kubelet_healthz_port), indent=2))
    layout.kube_proxy_config.write_text(json.dumps(
        kube_proxy_configuration(layout, proxy_metrics_port, proxy_healthz_port), indent=2))
