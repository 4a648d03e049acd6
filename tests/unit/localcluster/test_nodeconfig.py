"""The real node's configuration files: every path under the cluster's data
dir, the settings these machines need, nothing routed off the machine."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from iflearner.localcluster import nodeconfig
from iflearner.localcluster.host import HostChanges


def test_containerd_config_keeps_everything_under_the_data_dir(tmp_path: Path) -> None:
    layout = nodeconfig.NodeLayout(tmp_path)
    config = tomllib.loads(nodeconfig.containerd_toml(layout, "iflearner.local/pause:abc"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "iflearner.local/pause:abc"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["containerd"]["snapshotter"] == "overlayfs"
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"
    assert cri["stream_server_port"] == "0"
    paths = [config["root"], config["state"], config["grpc"]["address"], cri["cni"]["conf_dir"],
             cri["containerd"]["runtimes"]["runc"]["options"]["Root"],
             config["plugins"]["io.containerd.internal.v1.opt"]["path"]]
    assert all(p.startswith(str(tmp_path) + "/") for p in paths), paths


def test_cni_network_has_no_default_route_and_no_masquerade(tmp_path: Path) -> None:
    conf = nodeconfig.cni_conflist(nodeconfig.NodeLayout(tmp_path), "10.96.0.0/16")
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == nodeconfig.BRIDGE and len(bridge["bridge"]) <= 15
    assert bridge["ipMasq"] is False and bridge["isDefaultGateway"] is False
    # Services, and the other local clusters' nodes: never a default route.
    assert bridge["ipam"]["routes"] == [{"dst": "10.96.0.0/16"}, {"dst": nodeconfig.LOCAL_NETWORKS}]
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path))


def test_slots_never_share_a_name_an_address_or_a_lock(tmp_path: Path) -> None:
    import ipaddress

    networks = [nodeconfig.NodeNetwork(slot) for slot in range(nodeconfig.MAX_SLOT + 1)]
    local = ipaddress.ip_network(nodeconfig.LOCAL_NETWORKS)
    for attribute in ("bridge", "pod_subnet", "gateway", "node_address", "host_veth", "cni_network",
                      "cgroup_root", "forward_chain", "host_lock"):
        values = [getattr(n, attribute) for n in networks]
        assert len(set(values)) == len(values), attribute
    for network in networks:
        assert all(len(name) <= 15 for name in (network.bridge, network.host_veth, network.node_veth))
        assert all(name.startswith(nodeconfig.INTERFACE_PREFIX) for name in (network.bridge, network.host_veth))
        assert ipaddress.ip_network(network.pod_subnet).subnet_of(local)
        assert ipaddress.ip_address(network.node_address) in local
    first, second = networks[0], networks[1]
    assert first.netns is None and first.command(["kubelet"]) == ["kubelet"]
    assert first.bridge == nodeconfig.BRIDGE and first.host_lock == Path("/run/iflearner-realnode.json")
    assert second.command(["kubelet"]) == ["nsenter", "--net=/run/netns/iflr-node1", "--", "kubelet"]
    layout = nodeconfig.NodeLayout(tmp_path, second)
    kubelet = nodeconfig.kubelet_configuration(layout, tmp_path / "ca.crt", 1, 2)
    proxy = nodeconfig.kube_proxy_configuration(layout, 1, 2)
    assert kubelet["address"] == "10.214.1.2" and kubelet["cgroupRoot"] == "/iflearner-realnode1"
    assert proxy["nodePortAddresses"] == ["10.214.1.2/32"] and proxy["clusterCIDR"] == "10.213.1.0/24"
    assert "netns_mounts_under_state_dir = true" in nodeconfig.containerd_toml(layout, "p")
    assert "netns_mounts_under_state_dir = false" in nodeconfig.containerd_toml(nodeconfig.NodeLayout(tmp_path), "p")
    try:
        nodeconfig.NodeNetwork(nodeconfig.MAX_SLOT + 1)
    except ValueError as error:
        assert "slot" in str(error)
    else:
        raise AssertionError("an out-of-range slot must be refused")


def test_kubelet_and_kube_proxy_settings(tmp_path: Path) -> None:
    layout = nodeconfig.NodeLayout(tmp_path)
    kubelet = nodeconfig.kubelet_configuration(layout, tmp_path / "ca.crt", 12345, 12346)
    assert kubelet["failCgroupV1"] is False and kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["clusterDNS"] == [nodeconfig.CLUSTER_DNS]
    assert kubelet["containerRuntimeEndpoint"] == f"unix://{layout.containerd_socket}"
    assert kubelet["podLogsDir"].startswith(str(tmp_path))
    proxy = nodeconfig.kube_proxy_configuration(layout, 1, 2)
    assert proxy["mode"] == "iptables" and proxy["clusterCIDR"] == nodeconfig.POD_SUBNET
    assert proxy["iptables"]["localhostNodePorts"] is False
    assert nodeconfig.resolv_conf() == f"nameserver {nodeconfig.GATEWAY}\n"


def test_write_configs_and_host_changes_round_trip(tmp_path: Path) -> None:
    layout = nodeconfig.NodeLayout(tmp_path)
    nodeconfig.write_configs(layout, sandbox_image="p", service_cidr="10.96.0.0/16", ca_cert=tmp_path / "ca",
                             kubelet_port=1, kubelet_healthz_port=2, proxy_metrics_port=3, proxy_healthz_port=4)
    assert json.loads(layout.kubelet_config.read_text())["port"] == 1
    assert len(str(layout.containerd_socket)) < 100
    changes = HostChanges(bridge="b", sysctls={"net.ipv4.ip_forward": "0"}, netns_before=["x"])
    assert HostChanges.from_dict(json.loads(json.dumps(changes.to_dict()))) == changes


def test_kube_chains_found_in_an_iptables_dump() -> None:
    from iflearner.localcluster.host import kube_chains

    dump = """*filter
:INPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:OTHER - [0:0]
-A INPUT -j KUBE-FIREWALL
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OTHER -j ACCEPT
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -j DROP
COMMIT
*nat
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
COMMIT
"""
    jumps, chains = kube_chains(dump)
    assert chains == [("filter", "KUBE-FIREWALL"), ("nat", "KUBE-SERVICES")]
    assert jumps == [
        ("filter", ["INPUT", "-j", "KUBE-FIREWALL"]),
        ("filter", ["OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]),
        ("nat", ["PREROUTING", "-j", "KUBE-SERVICES"]),
    ]
