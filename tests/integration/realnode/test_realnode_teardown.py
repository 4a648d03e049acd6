"""Runs after the other real-node tests (file order): `cluster down` leaves
no process, mount, network namespace, bridge, iptables rule, cgroup or
sysctl change of the real node behind."""

from __future__ import annotations

from pathlib import Path

import pytest
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


@pytest.mark.parametrize("slot", [0, 1])
def test_second_real_cluster_refused_and_crashed_run_cleaned_by_next_up(tmp_path: Path, slot: int) -> None:
    """Runs after the session's real cluster is down: one real-node cluster
    per slot on a host; a run whose processes died (kill -9, no `down`) is
    undone by the next `up` in its slot, even from another data dir (slot 1:
    its node's network namespace too)."""
    import os
    import signal
    import time

    from iflearner.localcluster import ClusterAlreadyRunningError, LocalCluster
    from iflearner.localcluster.processes import is_alive

    before = host_snapshot()
    first, second = LocalCluster(tmp_path / "a"), LocalCluster(tmp_path / "b")
    network = nodeconfig.NodeNetwork(slot)
    crashed = first.up(node="real", slot=slot, progress=lambda _msg: None)
    try:
        with pytest.raises(ClusterAlreadyRunningError, match=f"in slot {slot}: one per slot can run on a host"):
            second.up(node="real", slot=slot, progress=lambda _msg: None)
        for record in crashed.processes:
            os.killpg(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while [r for r in crashed.processes if is_alive(r)] and time.monotonic() < deadline:
            for record in crashed.processes:
                try:
                    os.waitpid(record.pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.05)
        assert not [r for r in crashed.processes if is_alive(r)]
        if network.netns is None:
            assert Path(f"/sys/class/net/{network.bridge}").exists(), "the crash leaves the bridge"
        else:
            assert Path(f"/run/netns/{network.netns}").exists(), "the crash leaves the node's namespace"
            assert Path(f"/sys/class/net/{network.host_veth}").exists(), "and its veth"

        second.up(node="real", slot=slot, progress=lambda _msg: None)
        assert first.running_state() is None and not (tmp_path / "a" / "cluster.json").exists()
        assert realnode.lock_holder(network) == (tmp_path / "b").resolve()
    finally:
        second.down()
        first.down()
    after = host_snapshot()
    for key, values in before.items():
        assert after[key] == values, f"{key}: left {sorted(after[key] - values)}, lost {sorted(values - after[key])}"
