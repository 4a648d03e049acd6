"""The real node: containerd, kubelet and kube-proxy on this machine, so that
Pods run real containers from the project's own images.

:func:`prepare_host` and the ``start_*`` functions are called by
``LocalCluster.up`` with ``--node real``; :func:`stop_node` and
:func:`undo_host` by ``down`` (and by the next ``up`` after a crash). Host
changes are recorded in the state file before they are made (see
:mod:`iflearner.localcluster.host`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from iflearner import toolchain
from iflearner.localcluster import host, hostshare, processes
from iflearner.localcluster.host import HostChanges
from iflearner.localcluster.nodeconfig import INTERFACE_PREFIX, NodeLayout, NodeNetwork

# One real node per slot on a host (a slot's bridge, cgroup root and, on slot
# 0, kube-proxy's host-wide iptables chains): its data dir is noted here.
HOST_LOCK = NodeNetwork().host_lock
# Changed by us (forwarding for Service DNAT between Pods on the bridge) or by
# kubelet at start (its "kernel tunables"); restored by the last slot's down (hostshare).
SYSCTLS = [
    "net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables",
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
]
# Directories outside the data dir that the runtime may create (network
# namespaces, shim sockets, libcni's cache); removed by the last slot's down
# when the first made them and they are empty again.
SYSTEM_DIRS = ["/run/netns", "/run/containerd/s", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni",
               "/var/log/containers", "/var/lib/kubelet"]
# kubelet's device-plugin socket dir is fixed, whatever --root-dir says:
# when we created it, everything in it is our kubelet's.
KUBELET_FIXED_DIR = "/var/lib/kubelet"
CNI_CACHE = Path("/var/lib/cni/results")
# kubelet links every container's log here (a fixed path), pointing into its podLogsDir.
CONTAINER_LOG_LINKS = Path("/var/log/containers")
IMAGES = ("pause", "coredns", "testapp")

Progress = Callable[[str], None]


def missing_runtime() -> list[str]:
    """Programs the real node needs from the system (installed by `make setup`)."""
    needed = ["containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "nft", "ip", "mount", "umount",
              "docker-registry", "skopeo"]
    missing = [name for name in needed if shutil.which(name) is None]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("/usr/lib/cni/bridge (containernetworking-plugins)")
    return missing


def real_node_unavailable() -> str | None:
    """Why this machine cannot run the real node, or None when it can."""
    if os.geteuid() != 0:
        return "it needs root (containerd, a bridge, iptables, mounts)"
    missing = missing_runtime()
    if missing:
        return f"missing {', '.join(missing)}; `make setup` installs them"
    return None


def lock_holder(network: NodeNetwork | None = None) -> Path | None:
    try:
        return Path(json.loads((network or NodeNetwork()).host_lock.read_text())["data_dir"])
    except (OSError, ValueError, KeyError):
        return None


def holder_alive(slot: int, data_dir: str) -> bool:
    """Whether a slot's cluster from ``data_dir`` still runs, or is being started: its slot's
    lock names it, and the process that took the lock or one of the cluster's is alive."""
    from iflearner.localcluster.cluster import ClusterState

    try:
        lock = json.loads(NodeNetwork(slot).host_lock.read_text())
    except (OSError, ValueError):
        return False
    if lock.get("data_dir") != data_dir:
        return False
    if processes.pid_alive(int(lock.get("pid") or 0)):
        return True
    state = ClusterState.load(Path(data_dir))
    return bool(state is not None and state.alive())


def _host_snapshot() -> hostshare.Snapshot:
    """What every slot changes on the whole host, as it is before the first slot's ``up``."""
    mounts = host.mounts()
    return {
        "sysctls": {key: host.read_sysctl(key) for key in SYSCTLS if host._sysctl_path(key).exists()},
        "private": sorted({m.mount_point for m in mounts if not m.shared}),
        "shared": sorted({m.mount_point for m in mounts if m.shared}),
        "missing_dirs": [d for d in SYSTEM_DIRS if not Path(d).exists()],
        "netns": host.netns_names(),
        "cni_cache": sorted(p.name for p in CNI_CACHE.iterdir()) if CNI_CACHE.is_dir() else [],
        # iptables-nft's tables ("ip filter", "ip nat"): every slot's guard chains and slot 0's
        # kube-proxy write into the host's, so a table the first `up` brought into being is the
        # last `down`'s to remove (None: no nft binary).
        "nft_tables": host.nft_tables(),
    }


def _change_host(before: hostshare.Snapshot) -> None:
    host.set_sysctl("net.ipv4.ip_forward", "1")
    if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        # Service replies between two Pods on one bridge must pass conntrack.
        host.set_sysctl("net.bridge.bridge-nf-call-iptables", "1")
    if any(not m.shared for m in host.mounts()):
        host.sh("mount", "--make-rshared", "/")  # kubelet: mount propagation into Pods


def _restore_host(before: hostshare.Snapshot) -> list[str]:
    """Undo the host-wide changes, as the last slot goes: values before the first ``up``."""
    restored = HostChanges(sysctls=dict(before.get("sysctls") or {}), made_shared=list(before.get("private") or []),
                           shared_before=list(before.get("shared") or []))
    problems = host.restore_sysctls(restored)
    if "nft_tables" in before:
        problems += host.remove_new_nft_tables(HostChanges(nft_tables_before=before["nft_tables"]))
    problems += host.remove_netns(host.unused_new_netns(list(before.get("netns") or [])))
    problems += host.restore_propagation(restored)
    if CNI_CACHE.is_dir():  # loopback results of sandboxes no node removed (killed with their runtime)
        for path in CNI_CACHE.iterdir():
            if path.name.startswith("cni-loopback-") and path.name not in (before.get("cni_cache") or []):
                path.unlink(missing_ok=True)
    for directory in before.get("missing_dirs") or []:
        if directory == KUBELET_FIXED_DIR:
            shutil.rmtree(directory, ignore_errors=True)
        if directory == str(host.NETNS_DIR) and any(m.mount_point == directory for m in host.mounts()):
            host.sh("umount", directory, check=False)  # `ip netns add` mounts it onto itself
        _remove_if_empty(Path(directory))
    return problems


def prepare_host(layout: NodeLayout, changes: HostChanges, service_cidr: str, save: Callable[[], None]) -> None:
    network = layout.network
    network.host_lock.write_text(json.dumps({"data_dir": str(layout.data_dir), "pid": os.getpid()}))
    changes.node_slot = network.slot
    changes.mount_prefixes = [str(layout.root)]
    changes.cni_cache_prefix = f"{network.cni_network}-"
    changes.cni_cache_before = sorted(p.name for p in CNI_CACHE.iterdir()) if CNI_CACHE.is_dir() else []
    # Slot 0's kube-proxy writes the host's chains; other slots' their own namespace's. (The nft
    # tables holding them are host-wide: hostshare's snapshot.)
    changes.kube_chains_before = host.kube_chain_names() if network.netns is None else None
    save()
    hostshare.acquire(network.slot, str(layout.data_dir), _host_snapshot, holder_alive, _change_host)
    if network.netns is None:
        host.create_bridge(changes, network.bridge, f"{network.gateway}/{network.pod_subnet.split('/')[1]}", save)
        # Service addresses go to the bridge, never to the default route, even
        # before kube-proxy has programmed them (the route goes with the bridge).
        host.sh("ip", "route", "replace", service_cidr, "dev", network.bridge, "src", network.gateway)
        guarded = network.bridge
    else:
        _create_node_netns(network, changes, service_cidr, save)
        guarded = network.host_veth
    host.install_forward_guard(changes, network.forward_chain, guarded, f"{INTERFACE_PREFIX}+",
                               network.host_address, save)
    host.create_cgroup_root(changes, network.cgroup_root, save)


def _create_node_netns(network: NodeNetwork, changes: HostChanges, service_cidr: str,
                       save: Callable[[], None]) -> None:
    """The node's network namespace: a veth pair to the host (a /30), the
    Pods' bridge inside, a default route to the host (whose forward guard
    drops anything not for another local cluster) and the host's route to
    the Pod subnet."""
    assert network.netns is not None
    netns = network.netns
    host.create_node_netns(changes, netns, save)
    host.sh("ip", "link", "add", network.host_veth, "type", "veth", "peer", "name", network.node_veth,
            "netns", netns)
    host.sh("ip", "addr", "add", f"{network.host_address}/30", "dev", network.host_veth)
    host.sh("ip", "link", "set", network.host_veth, "up")
    for argv in (["link", "set", "lo", "up"],
                 ["addr", "add", f"{network.node_address}/30", "dev", network.node_veth],
                 ["link", "set", network.node_veth, "up"],
                 ["route", "add", "default", "via", network.host_address],
                 ["link", "add", network.bridge, "type", "bridge"],
                 ["addr", "add", f"{network.gateway}/{network.pod_subnet.split('/')[1]}", "dev", network.bridge],
                 ["link", "set", network.bridge, "up"],
                 ["route", "replace", service_cidr, "dev", network.bridge, "src", network.gateway]):
        host.sh("ip", "-n", netns, *argv)
    # Sysctls under /proc/sys/net belong to the namespace that reads them.
    sysctls = ["net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"]
    host.in_netns(netns, "sh", "-c", " ; ".join(f"[ ! -e /proc/sys/{key} ] || echo 1 > /proc/sys/{key}"
                                                 for key in sysctls))
    host.sh("ip", "route", "replace", network.pod_subnet, "via", network.node_address, "dev", network.host_veth)


def start_containerd(layout: NodeLayout, launch: Callable[[str, list[str]], None], timeout: float) -> None:
    # In the node's namespace: the CNI plugins it runs make the Pods' veths there.
    launch("containerd", layout.network.command(["containerd", "--config", str(layout.containerd_config)]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(["ctr", "--address", str(layout.containerd_socket), "version"],
                                capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"containerd did not answer on {layout.containerd_socket}; see its log")


def import_images(layout: NodeLayout, images: dict[str, object], progress: Progress) -> None:
    from iflearner.images import import_image

    for name, image in images.items():
        started = time.monotonic()
        if import_image(image, layout.containerd_socket):  # type: ignore[arg-type]
            progress(f"imported image {name} in {time.monotonic() - started:.1f}s")


def start_node(layout: NodeLayout, launch: Callable[[str, list[str]], None], node_name: str) -> None:
    network = layout.network
    launch("kubelet", network.command([
        str(toolchain.tool("kubelet")), f"--config={layout.kubelet_config}",
        f"--kubeconfig={layout.kubelet_kubeconfig}", f"--root-dir={layout.kubelet_root}",
        f"--cert-dir={layout.kubelet_root / 'pki'}",
        f"--hostname-override={node_name}", f"--node-ip={network.node_address}", "--v=1",
    ]))
    launch("kube-proxy", network.command([str(toolchain.tool("kube-proxy")),
                                          f"--config={layout.kube_proxy_config}", "--v=1"]))


def delete_containers(layout: NodeLayout) -> None:
    """Kill and delete every task (its shim unmounts the rootfs and exits)."""
    def ctr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(layout.containerd_socket), "--namespace", "k8s.io",
                               "--timeout", "20s", *args], capture_output=True, text=True, check=False)

    listed = ctr("tasks", "ls", "-q")
    if listed.returncode != 0:
        return
    for task in listed.stdout.split():
        ctr("tasks", "kill", "--signal", "SIGKILL", task)
        ctr("tasks", "delete", "--force", task)


def stop_node(layout: NodeLayout, changes: HostChanges, stop: Callable[[str], None],
              containerd_running: bool) -> list[str]:
    """Stop kube-proxy, kubelet, every container and containerd (``stop(name)``
    stops one of the cluster's recorded processes). The control plane keeps
    running: the API server cleans up through the bridge address on exit."""
    problems: list[str] = []
    stop("kube-proxy")
    stop("kubelet")
    if changes.cgroup_root:
        # The Pods' network namespaces, known by their processes (before these are gone): the
        # shared /run/netns also holds other slots' Pods'.
        changes.pod_netns = sorted(set(changes.pod_netns) | set(
            host.pod_netns_of(host.cgroup_pids(changes.cgroup_root))))
        problems += host.kill_cgroup(changes.cgroup_root)
    if containerd_running:
        delete_containers(layout)
    stop("containerd")
    problems += host.kill_pids(host.pids_with_argument(str(layout.containerd_socket)))
    return problems


def undo_host(layout: NodeLayout, changes: HostChanges) -> list[str]:
    """Undo every recorded host change, once no process of the cluster runs.
    Returns what could not be undone (empty when clean)."""
    problems: list[str] = []
    own_netns = bool(changes.node_netns)
    if own_netns:
        # kube-proxy's rules, the bridge and the veth pair live and die with it.
        problems += host.delete_node_netns(changes)
    else:
        kube_before = changes.kube_chains_before or []
        if not kube_before:
            # kube-proxy's cleanup removes every kube-proxy chain and table: only when none was
            # there before (another Kubernetes on this machine keeps its own).
            problems += _cleanup_kube_proxy_rules(layout)
        problems += host.remove_kube_chains(kube_before)
    problems += host.remove_netns(changes.pod_netns)
    problems += host.unmount_below(changes.mount_prefixes)
    problems += host.remove_cgroup_root(changes)
    problems += host.remove_forward_guard(changes)
    problems += host.remove_new_nft_tables(changes)  # a state file of a version before hostshare's tables
    problems += host.delete_bridge(changes)
    # Host-wide changes recorded by an older version in this slot's own record (now: hostshare).
    problems += host.restore_sysctls(changes)
    problems += host.restore_propagation(changes)
    if changes.cni_cache_prefix and CNI_CACHE.is_dir():
        _remove_cni_cache(changes)
    if CONTAINER_LOG_LINKS.is_dir():
        for link in CONTAINER_LOG_LINKS.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(layout.pod_logs)):
                link.unlink()
    for directory in changes.created_dirs:
        if directory == KUBELET_FIXED_DIR:
            shutil.rmtree(directory, ignore_errors=True)
        _remove_if_empty(Path(directory))
    network = NodeNetwork(changes.node_slot)
    if lock_holder(network) == layout.data_dir:
        network.host_lock.unlink(missing_ok=True)
    # Last: the host's shared settings, restored if no other slot still runs.
    problems += hostshare.release(network.slot, str(layout.data_dir), holder_alive, _restore_host)
    return problems


def _remove_cni_cache(changes: HostChanges) -> None:
    """libcni's result cache of our sandboxes: our network's files
    (``<network>-<sandbox id>-eth0``) and the loopback results containerd's
    CRI keeps for the same sandboxes. Loopback results of sandboxes whose
    network never came up name no network: the last slot out removes them
    (``_restore_host``)."""
    ours = [p for p in CNI_CACHE.iterdir() if p.name.startswith(changes.cni_cache_prefix)]
    sandboxes = {p.name.removeprefix(changes.cni_cache_prefix).rsplit("-", 1)[0] for p in ours}
    for path in CNI_CACHE.iterdir():
        loopback_id = path.name.removeprefix("cni-loopback-").rsplit("-", 1)[0] \
            if path.name.startswith("cni-loopback-") else None
        if path in ours or loopback_id in sandboxes:
            path.unlink(missing_ok=True)


def _cleanup_kube_proxy_rules(layout: NodeLayout) -> list[str]:
    """kube-proxy's own cleanup mode removes its KUBE-* chains and rules."""
    try:
        binary = toolchain.tool("kube-proxy")
    except toolchain.ToolchainMissingError as error:
        return [str(error)]
    log = layout.data_dir / "logs" / "kube-proxy-cleanup.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        result = subprocess.run([str(binary), "--cleanup", "--v=1"], stdout=out, stderr=subprocess.STDOUT,
                                check=False, timeout=60)
    return [] if result.returncode == 0 else [f"kube-proxy --cleanup failed; see {log}"]


def _remove_if_empty(directory: Path) -> None:
    if not directory.is_dir():
        return
    for child in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if child.is_dir() and not child.is_symlink():
            try:
                child.rmdir()
            except OSError:
                return
    try:
        directory.rmdir()
    except OSError:
        pass
