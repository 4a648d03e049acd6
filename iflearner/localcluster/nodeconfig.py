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
# private subnet, never routed anywhere. One real node per host, so fixed.
NODE_NAME = "iflearner-real-node"
BRIDGE = "iflrreal0"
POD_SUBNET = "10.213.0.0/24"
GATEWAY = "10.213.0.1"
CNI_NETWORK = "iflearner-realnode"
CGROUP_ROOT = "/iflearner-realnode"
FORWARD_CHAIN = "IFLEARNER-REALNODE"
CLUSTER_DNS = "10.96.0.10"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins


@dataclass(frozen=True)
class NodeLayout:
    data_dir: Path

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


def containerd_toml(layout: NodeLayout, sandbox_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
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
"""


def cni_conflist(layout: NodeLayout, service_cidr: str) -> dict[str, Any]:
    """A bridge with host-local addresses. No default route and no
    masquerading: a Pod reaches other Pods, Services (routed to the bridge's
    gateway, where kube-proxy rewrites them) and the host, nothing else."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": True,
            "isDefaultGateway": False,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                "routes": [{"dst": service_cidr}],
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
        "cgroupRoot": CGROUP_ROOT,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": GATEWAY,
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
        # Pods or garbage-collect the imported images (no registry to pull
        # them back from) for lack of space.
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


def resolv_conf() -> str:
    # Pods with dnsPolicy Default (CoreDNS) get this file. Its nameserver is
    # the bridge's gateway, where nothing serves DNS: CoreDNS's `forward`
    # fails at once instead of sending queries off the machine, and `loop`
    # finds no loop.
    return f"nameserver {GATEWAY}\n"


def kube_proxy_configuration(layout: NodeLayout, metrics_port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(layout.kube_proxy_kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": GATEWAY,
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "clusterCIDR": POD_SUBNET,
        "nodePortAddresses": [f"{GATEWAY}/32"],
        "oomScoreAdj": 0,
        # 0 leaves the host's conntrack sysctls as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s", "udpTimeout": "0s", "udpStreamTimeout": "0s"},
        # true would set route_localnet on the whole host.
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }


def write_configs(layout: NodeLayout, *, sandbox_image: str, service_cidr: str, ca_cert: Path,
                  kubelet_port: int, kubelet_healthz_port: int, proxy_metrics_port: int,
                  proxy_healthz_port: int) -> None:
    for directory in (layout.root, layout.cni_conf_dir, layout.cni_ipam_dir, layout.kubelet_root,
                      layout.pod_logs, layout.containerd_root, layout.containerd_state):
        directory.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(containerd_toml(layout, sandbox_image))
    (layout.cni_conf_dir / "10-iflearner.conflist").write_text(json.dumps(cni_conflist(layout, service_cidr), indent=2))
    layout.resolv_conf.write_text(resolv_conf())
    layout.kubelet_config.write_text(json.dumps(
        kubelet_configuration(layout, ca_cert, kubelet_port, kubelet_healthz_port), indent=2))
    layout.kube_proxy_config.write_text(json.dumps(
        kube_proxy_configuration(layout, proxy_metrics_port, proxy_healthz_port), indent=2))
