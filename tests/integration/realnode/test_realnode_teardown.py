"""Runs after the other real-node tests (file order): `cluster down` leaves
no process, mount, network namespace, bridge, iptables rule, cgroup or
sysctl change of the real node behind."""

from __future__ import annotations

from pathlib import Path

from realnode_harness import RealCluster, host_snapshot

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
