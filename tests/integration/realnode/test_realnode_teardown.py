"""Runs after the other real-node tests (file order): `cluster down` leaves
no process, mount, network namespace, bridge, iptables rule, cgroup or
sysctl change of the real node behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client, config
from realnode_harness import RealCluster, host_snapshot

from iflearner.images import project_images
from iflearner.localcluster import host as hostinfo
from iflearner.localcluster import nodeconfig, realnode


def test_down_leaves_nothing_behind(real_cluster: RealCluster) -> None:
    state = real_cluster.state
    assert state is not None and state.node == "real"
    data_dir = str(state.data_dir)
    socket = str(nodeconfig.NodeLayout(state.data_dir).containerd_socket)
    assert hostinfo.pids_with_argument(socket), "containerd's shims should be running before down"

    assert real_cluster.cluster.down()

    for record in state.processes:
        stat = Path(f"/proc/{record.pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", record
    assert not hostinfo.pids_with_argument(socket), "a containerd shim is left"
    after = host_snapshot()
    for key, before in real_cluster.before.items():
        assert after[key] - before == set(), f"{key} left behind: {sorted(after[key] - before)}"
        assert before - after[key] == set(), f"{key} changed: {sorted(before - after[key])}"
    assert not [m for m in hostinfo.mounts() if m.mount_point.startswith(data_dir)]
    assert not any(line.startswith((":KUBE-", ":IFLEARNER-", ":CNI-")) for line in after["iptables"])
    assert not Path(f"/sys/class/net/{nodeconfig.BRIDGE}").exists()
    assert not [h for h in hostinfo.cgroup_hierarchies() if (h / nodeconfig.CGROUP_ROOT.strip("/")).exists()]
    assert not realnode.HOST_LOCK.exists()
    assert real_cluster.cluster.running_state() is None


def _crash(state) -> None:  # noqa: ANN001
    """kill -9 of every process the cluster started (its Pods' containers stay, as after a crash)."""
    import os
    import signal
    import time

    from iflearner.localcluster.processes import is_alive

    for record in state.processes:
        os.killpg(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while [r for r in state.processes if is_alive(r)] and time.monotonic() < deadline:
        for record in state.processes:
            try:
                os.waitpid(record.pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.05)
    assert not [r for r in state.processes if is_alive(r)]


def _web(state, namespace: str = "default") -> client.CoreV1Api:  # noqa: ANN001
    """A web Pod and its Service on the cluster; its API, once the Pod runs."""
    from test_realnode_pods import pod, wait_for

    core = client.CoreV1Api(config.new_client_from_config(config_file=str(state.kubeconfig)))
    image = project_images(names=["testapp"], progress=lambda _msg: None)["testapp"].reference
    core.create_namespaced_pod(namespace, pod("web", image, ["serve", "8080"]))
    core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80, target_port=8080)])))
    wait_for(lambda: core.read_namespaced_pod("web", namespace).status.phase == "Running", "the web Pod to run")
    return core


def _reachable_from_a_neighbour(address: str, port: int) -> str:
    """"connected", "refused" or "timeout": a TCP connection from a network namespace wired to this
    host as another machine on its network would be (a route to 10.213.0.0/16 via this host);
    ``address`` "host" is the host's own address on that link."""
    import ipaddress
    import subprocess

    ns, outside, inside = "iflearner-neighbour", "nbr0h", "nbr0n"
    # A link subnet this host has no route into (the host's own network may be any documentation range).
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout.split()
    taken = [ipaddress.ip_network(word, strict=False) for word in routes if "/" in word or word.count(".") == 3]
    link = next(net for net in map(ipaddress.ip_network, ("198.51.100.0/30", "203.0.113.0/30", "192.0.2.0/30",
                                                          "100.127.255.248/30"))
                if not any(net.overlaps(other) for other in taken))
    here, there = (str(address) for address in link.hosts())
    try:
        for argv in (["ip", "netns", "add", ns],
                     ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns],
                     ["ip", "addr", "add", f"{here}/30", "dev", outside], ["ip", "link", "set", outside, "up"],
                     ["ip", "-n", ns, "addr", "add", f"{there}/30", "dev", inside],
                     ["ip", "-n", ns, "link", "set", inside, "up"], ["ip", "-n", ns, "link", "set", "lo", "up"],
                     ["ip", "-n", ns, "route", "add", "10.213.0.0/16", "via", here]):
            subprocess.run(argv, check=True, capture_output=True)
        target = here if address == "host" else address
        script = f"""
import socket
try:
    socket.create_connection(({target!r}, {port}), 3).close()
    print("connected")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("timeout")
"""
        return subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", script], check=True,
                              capture_output=True, text=True).stdout.strip()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def _pod_netns(slot: int) -> list[str]:
    return hostinfo.pod_netns_of(hostinfo.cgroup_pids(nodeconfig.NodeNetwork(slot).cgroup_root))


def test_two_slots_share_the_host_in_any_order_and_crash(tmp_path: Path) -> None:
    """Runs after the session's real cluster is down. Slot 0 up, slot 1 up; each crashed in turn
    (kill -9, no `down`) and undone by the next `up` in its slot, from another data dir, without
    touching the other slot's Pods; slot 0 down while slot 1 runs (its Pods still reach each other
    and the API server, the host's settings stay); slot 1 down: the host is as before the first
    `up`. One real-node cluster per slot: a second is refused."""
    from test_realnode_pods import finished, pod, wait_for

    from iflearner.localcluster import ClusterAlreadyRunningError, LocalCluster, hostshare

    before = host_snapshot()
    quiet = {"node": "real", "progress": lambda _msg: None}
    clusters = {name: LocalCluster(tmp_path / name) for name in ("a", "b", "c", "d")}
    try:
        a = clusters["a"].up(slot=0, **quiet)
        b = clusters["b"].up(slot=1, **quiet)
        assert hostshare.holders() == {0: str(a.data_dir), 1: str(b.data_dir)}
        with pytest.raises(ClusterAlreadyRunningError, match="in slot 1: one per slot can run on a host"):
            LocalCluster(tmp_path / "x").up(slot=1, **quiet)
        a_core = _web(a)
        a_netns = _pod_netns(0)
        assert a_netns, "slot 0's Pods have their network namespaces"
        # Only this machine and its Pods reach the API server and kubelet on the bridge's address.
        api_port = int(a.apiserver_url.rsplit(":", 1)[1])
        kubelet_port = json.loads(nodeconfig.NodeLayout(a.data_dir).kubelet_config.read_text())["port"]
        assert _reachable_from_a_neighbour("host", api_port) == "refused", "the neighbour reaches the host"
        for port in (api_port, kubelet_port):
            assert _reachable_from_a_neighbour(nodeconfig.GATEWAY, port) == "timeout", port

        _crash(b)  # slot 1 crashes; the next up in slot 1 undoes it and leaves slot 0 alone
        assert Path(f"/run/netns/{nodeconfig.NodeNetwork(1).netns}").exists(), "the crash leaves the node's namespace"
        c = clusters["c"].up(slot=1, **quiet)
        assert clusters["b"].running_state() is None and not (tmp_path / "b" / "cluster.json").exists()
        assert a_core.read_namespaced_pod("web", "default").status.phase == "Running"
        assert set(a_netns) <= set(hostinfo.netns_names()), "slot 0's Pods keep their network namespaces"
        c_core = _web(c)
        c_netns = _pod_netns(1)

        _crash(a)  # and slot 0 crashes; its next up undoes it and leaves slot 1 alone
        d = clusters["d"].up(slot=0, **quiet)
        assert realnode.lock_holder(nodeconfig.NodeNetwork(0)) == d.data_dir
        assert set(c_netns) <= set(hostinfo.netns_names())

        assert clusters["d"].down()  # slot 0 goes while slot 1 runs
        assert hostinfo.read_sysctl("net.ipv4.ip_forward") == "1"
        assert next(m for m in hostinfo.mounts() if m.mount_point == "/").shared
        assert set(c_netns) <= set(hostinfo.netns_names())
        script = """
import ssl, sys, time, urllib.error, urllib.request
insecure = ssl._create_unverified_context()
for url in ["http://web.default.svc.cluster.local/after", "https://kubernetes.default.svc/readyz"]:
    for attempt in range(30):
        try:
            print(url, urllib.request.urlopen(url, timeout=3, context=insecure).status, flush=True)
            break
        except OSError as error:
            last = error
            time.sleep(1)
    else:
        sys.exit(f"{url}: {last}")
"""
        image = project_images(names=["testapp"], progress=lambda _msg: None)["testapp"].reference
        probe = pod("probe", image, [])
        probe.spec.containers[0].command = ["python3", "-c", script]
        c_core.create_namespaced_pod("default", probe)
        done = wait_for(lambda: finished(c_core, "probe", "default"), "the probe Pod to finish")
        logs = c_core.read_namespaced_pod_log("probe", "default")
        assert done.status.phase == "Succeeded", logs
        assert logs.split("\n")[:2] == ["http://web.default.svc.cluster.local/after 200",
                                          "https://kubernetes.default.svc/readyz 200"], logs
    finally:
        for name in ("d", "c", "b", "a"):
            clusters[name].down()
    assert not hostshare.RECORD.exists()
    after = host_snapshot()
    for key, values in before.items():
        assert after[key] == values, f"{key}: left {sorted(after[key] - values)}, lost {sorted(values - after[key])}"
