"""Shared by the real-node tests: the cluster handle and a snapshot of what
a cluster could leave behind on the host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from iflearner.localcluster import ClusterState, LocalCluster
from iflearner.localcluster import host as hostinfo

SYSTEM_PATHS = ("/var/lib/kubelet", "/var/lib/containerd", "/run/containerd", "/var/lib/cni", "/etc/cni",
                "/opt/cni", "/opt/containerd", "/var/log/pods", "/var/log/containers", "/run/kubernetes",
                "/etc/kubernetes", "/run/iflearner-realnode.json", "/run/iflearner-realnode-host.json")


def host_snapshot() -> dict[str, set[str]]:
    """What a cluster could leave behind on the host, comparable before/after."""
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    # Chain lines carry packet counters ("[12:345]"): compare without them.
    iptables = {line.split(" [")[0] for line in rules.splitlines() if not line.startswith("#")}
    links = set(os.listdir("/sys/class/net"))
    return {
        "iptables": iptables,
        "mounts": {m.mount_point for m in hostinfo.mounts()},
        "netns": set(hostinfo.netns_names()),
        "links": links,
        "sysctls": {f"{k}={hostinfo.read_sysctl(k)}" for k in (
            "net.ipv4.ip_forward", "vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops",
            "net.bridge.bridge-nf-call-iptables") if Path("/proc/sys", k.replace(".", "/")).exists()},
        "cni_cache": set(os.listdir("/var/lib/cni/results")) if Path("/var/lib/cni/results").is_dir() else set(),
        "propagation": {f"{m.mount_point}:{m.shared}" for m in hostinfo.mounts()},
        # The system's default paths of the runtime and kubelet: never used,
        # or (the few fixed ones) removed again.
        "system_paths": {p for p in SYSTEM_PATHS if Path(p).exists()},
    }


class RealCluster:
    def __init__(self, data_dir: Path) -> None:
        self.cluster = LocalCluster(data_dir)
        self.before = host_snapshot()
        self.state: ClusterState | None = None


def wait_until_host_free(timeout: float = 1800.0) -> None:
    """Only one real-node cluster can run on a host: wait for another run's (a
    second test session on a shared development machine) to end, so that it
    neither refuses this one nor leaks into its before/after snapshots."""
    import time

    from iflearner.localcluster import realnode
    from iflearner.localcluster.cluster import ClusterState

    deadline = time.monotonic() + timeout
    while True:
        holder = realnode.lock_holder()
        other = ClusterState.load(holder) if holder is not None else None
        if other is None or not other.alive():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"another real-node cluster ({holder}) is still running after {timeout:.0f}s")
        time.sleep(5)
