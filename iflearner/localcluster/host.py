"""What the real node changes on the host, and how each change is undone.

Every change is recorded in :class:`HostChanges` (saved in the cluster's state
file) *before* it is made, so that ``cluster down``, or the next ``up`` after
a crash, undoes exactly what was done: the bridge, the iptables chain, the
cgroup root, network namespaces and mounts made by containerd and kubelet.
The host-wide ones that every slot shares (sysctls, mount propagation, system
directories) are reference-counted across slots: :mod:`hostshare`.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CGROUP_V1 = Path("/sys/fs/cgroup")


@dataclass
class HostChanges:
    bridge: str = ""
    iptables_chain: str = ""
    cgroup_root: str = ""
    # Host-wide changes, recorded here by older versions; now in hostshare's record (one for all
    # slots). Kept so that an old state file is still undone.
    sysctls: dict[str, str] = field(default_factory=dict)  # key -> value before
    made_shared: list[str] = field(default_factory=list)  # mount points that were private
    shared_before: list[str] = field(default_factory=list)  # mount points that were shared
    nft_tables_before: list[str] | None = None  # e.g. "ip filter"; None: no nft binary
    netns_before: list[str] = field(default_factory=list)  # (older versions)
    mount_prefixes: list[str] = field(default_factory=list)  # mounts below these are ours
    cni_cache_prefix: str = ""  # libcni's result cache files of our network
    cni_cache_before: list[str] = field(default_factory=list)  # files there before (other runtimes')
    created_dirs: list[str] = field(default_factory=list)  # (older versions) system dirs made by the node
    node_slot: int = 0  # see nodeconfig.NodeNetwork
    node_netns: str = ""  # the node's own network namespace (slots > 0), removed on down
    kube_chains_before: list[str] | None = None  # "iptables nat KUBE-X" in the host's namespace (slot 0)
    pod_netns: list[str] = field(default_factory=list)  # the Pods' cni-* namespaces, seen at stop

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> HostChanges:
        return cls(**data)  # type: ignore[arg-type]


class HostError(RuntimeError):
    pass


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise HostError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


# --- sysctls -----------------------------------------------------------------

def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctl(key: str) -> str:
    return _sysctl_path(key).read_text().strip()


def set_sysctl(key: str, value: str) -> None:
    _sysctl_path(key).write_text(value)


def restore_sysctls(changes: HostChanges) -> list[str]:
    problems = []
    for key, value in changes.sysctls.items():
        try:
            if read_sysctl(key) != value:
                set_sysctl(key, value)
        except OSError as error:
            problems.append(f"sysctl {key}: {error}")
    return problems


# --- mount propagation -------------------------------------------------------

@dataclass(frozen=True)
class Mount:
    mount_point: str
    shared: bool


def mounts() -> list[Mount]:
    """This mount namespace's mounts, from /proc/self/mountinfo."""
    result = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape")  # \040 for spaces etc.
        optional = fields[6:fields.index("-")]
        result.append(Mount(point, any(o.startswith("shared:") for o in optional)))
    return result


def restore_propagation(changes: HostChanges) -> list[str]:
    """Back to private, recursively (this also reaches mounts hidden under
    others, which no path names), then re-share what was shared before."""
    if not changes.made_shared:
        return []
    problems = []
    result = sh("mount", "--make-rprivate", "/", check=False)
    if result.returncode != 0:
        problems.append(f"make-rprivate /: {result.stderr.strip()}")
    present = {m.mount_point for m in mounts()}
    for point in changes.shared_before:
        if point in present:
            result = sh("mount", "--make-shared", point, check=False)
            if result.returncode != 0:
                problems.append(f"make-shared {point}: {result.stderr.strip()}")
    return problems


def unmount_below(prefixes: list[str]) -> list[str]:
    """Unmount every mount at or below the prefixes, deepest first."""
    problems = []
    for _ in range(3):  # stacked mounts at one point need one pass each
        targets = sorted({m.mount_point for m in mounts()
                          if any(m.mount_point == p or m.mount_point.startswith(p.rstrip("/") + "/")
                                 for p in prefixes)}, key=len, reverse=True)
        if not targets:
            return []
        problems = []
        for target in targets:
            if sh("umount", target, check=False).returncode != 0:
                result = sh("umount", "--lazy", target, check=False)
                if result.returncode != 0:
                    problems.append(f"umount {target}: {result.stderr.strip()}")
    return problems


# --- network namespaces ------------------------------------------------------

def netns_names() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []


def netns_inode(name: str) -> int | None:
    try:
        return (NETNS_DIR / name).stat().st_ino
    except OSError:
        return None


def netns_in_use(pids: set[int] | None = None) -> set[int]:
    """The network namespaces (their inodes) that processes are in: all processes, or ``pids``."""
    inodes: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or (pids is not None and int(proc.name) not in pids):
            continue
        try:
            inodes.add((proc / "ns" / "net").stat().st_ino)
        except OSError:
            pass
    return inodes


def pod_netns_of(pids: set[int]) -> list[str]:
    """The runtime's ``cni-*`` namespaces that these processes (a node's Pods) are in."""
    used = netns_in_use(pids)
    return sorted(name for name in netns_names() if name.startswith("cni-") and netns_inode(name) in used)


def remove_netns(names: list[str]) -> list[str]:
    problems = []
    for name in names:
        path = NETNS_DIR / name
        if not path.exists():
            continue
        sh("umount", str(path), check=False)
        try:
            path.unlink()
        except OSError as error:
            problems.append(f"netns {name}: {error}")
    return problems


def unused_new_netns(before: list[str]) -> list[str]:
    """``cni-*`` namespaces not in ``before`` that no process is in (sandboxes of Pods killed
    without their runtime, e.g. every process of a node killed at once)."""
    used = netns_in_use()
    return [name for name in netns_names()
            if name.startswith("cni-") and name not in before and netns_inode(name) not in used]


def create_node_netns(changes: HostChanges, netns: str, save: Callable[[], None]) -> None:
    changes.node_netns = netns
    save()
    problems = delete_node_netns(changes)  # what a crashed run left
    path = NETNS_DIR / netns
    if path.exists():
        # `ip netns del` refused (a mount held elsewhere): detach it lazily and take the name back.
        sh("umount", "--lazy", str(path), check=False)
        try:
            path.unlink()
        except OSError as error:
            problems.append(str(error))
    if path.exists():
        raise HostError(f"the network namespace {netns} of an earlier run is still there and could not be "
                        f"removed ({'; '.join(problems)}); run `umount --lazy {path} && rm {path}`, then up again")
    sh("ip", "netns", "add", netns)


def in_netns(netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``argv`` in the network namespace ``netns`` (and the host's mounts)."""
    return sh("nsenter", f"--net={NETNS_DIR / netns}", "--", *argv, check=check)


def delete_node_netns(changes: HostChanges) -> list[str]:
    """The node's namespace goes with everything in it: its bridge, the veth
    pair (and so the host's route through it), kube-proxy's rules."""
    if not changes.node_netns or not (NETNS_DIR / changes.node_netns).exists():
        return []
    result = sh("ip", "netns", "del", changes.node_netns, check=False)
    return [] if result.returncode == 0 else [f"netns {changes.node_netns}: {result.stderr.strip()}"]


# --- bridge and iptables -----------------------------------------------------

def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def create_bridge(changes: HostChanges, name: str, address_cidr: str, save: Callable[[], None]) -> None:
    changes.bridge = name
    save()
    if not link_exists(name):
        sh("ip", "link", "add", name, "type", "bridge")
    if address_cidr.split("/")[0] not in sh("ip", "-4", "addr", "show", "dev", name).stdout:
        sh("ip", "addr", "add", address_cidr, "dev", name)
    sh("ip", "link", "set", name, "up")


def delete_bridge(changes: HostChanges) -> list[str]:
    if changes.bridge and link_exists(changes.bridge):
        result = sh("ip", "link", "del", changes.bridge, check=False)
        if result.returncode != 0:
            return [f"bridge {changes.bridge}: {result.stderr.strip()}"]
    return []


def install_forward_guard(changes: HostChanges, chain: str, interface: str, local_interfaces: str,
                          host_address: str, save: Callable[[], None]) -> None:
    """Traffic of the node's ``interface`` (its bridge, or the veth to its
    network namespace) may be forwarded only to and from the local clusters'
    interfaces (``local_interfaces``, an iptables wildcard such as ``iflr+``):
    Service DNAT between Pods, and one local cluster's Pods dialling another's
    gateway. Anything else, to or from another interface, is dropped: nothing
    leaves this machine.

    And the host's own address on the node's network (``host_address``: where
    the API server listens, and on slot 0 kubelet and the NodePorts too) takes
    packets only from this machine (``lo``) and the local clusters' interfaces,
    in chain ``<chain>-IN`` of INPUT: Linux accepts a packet for any of its
    addresses on any interface, so a neighbour routing 10.213.0.0/16 to this
    machine would otherwise reach them."""
    changes.iptables_chain = chain
    save()
    remove_forward_guard(changes)
    sh("iptables", "-w", "-N", chain)
    sh("iptables", "-w", "-A", chain, "-i", local_interfaces, "-o", local_interfaces, "-j", "ACCEPT")
    sh("iptables", "-w", "-A", chain, "-i", interface, "-j", "DROP")
    sh("iptables", "-w", "-A", chain, "-o", interface, "-j", "DROP")
    sh("iptables", "-w", "-I", "FORWARD", "1", "-j", chain)
    inbound = f"{chain}-IN"
    sh("iptables", "-w", "-N", inbound)
    sh("iptables", "-w", "-A", inbound, "-i", "lo", "-j", "RETURN")
    sh("iptables", "-w", "-A", inbound, "-i", local_interfaces, "-j", "RETURN")
    sh("iptables", "-w", "-A", inbound, "-d", f"{host_address}/32", "-j", "DROP")
    sh("iptables", "-w", "-I", "INPUT", "1", "-j", inbound)


def remove_forward_guard(changes: HostChanges) -> list[str]:
    chain = changes.iptables_chain
    if not chain:
        return []
    problems = []
    for builtin, name in (("FORWARD", chain), ("INPUT", f"{chain}-IN")):
        while sh("iptables", "-w", "-D", builtin, "-j", name, check=False).returncode == 0:
            pass
        if sh("iptables", "-w", "-L", name, "-n", check=False).returncode == 0:
            sh("iptables", "-w", "-F", name, check=False)
            result = sh("iptables", "-w", "-X", name, check=False)
            if result.returncode != 0:
                problems.append(f"iptables chain {name}: {result.stderr.strip()}")
    return problems


def kube_chains(dump: str) -> tuple[list[tuple[str, list[str]]], list[tuple[str, str]]]:
    """From an ``iptables-save`` dump: the rules of other chains that jump to
    a KUBE-* chain, as (table, rule spec), and the KUBE-* chains, as (table, chain)."""
    table = ""
    chains: list[tuple[str, str]] = []
    jumps: list[tuple[str, list[str]]] = []
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":KUBE-"):
            chains.append((table, line[1:].split()[0]))
        elif line.startswith("-A ") and not line.split()[1].startswith("KUBE-") and " -j KUBE-" in line:
            jumps.append((table, shlex.split(line)[1:]))
    return jumps, chains


def kube_chain_names() -> list[str]:
    """Every KUBE-* chain in this network namespace, as "<tool> <table> <chain>"."""
    names = []
    for tool in ("iptables", "ip6tables"):
        if _has(tool):
            dump = sh(f"{tool}-save", check=False).stdout
            names += [f"{tool} {table} {chain}" for table, chain in kube_chains(dump)[1]]
    return sorted(names)


def remove_kube_chains(before: list[str]) -> list[str]:
    """Remove the KUBE-* chains that were not there ``before`` the node started (kubelet's
    KUBE-FIREWALL and KUBE-KUBELET-CANARY, and whatever kube-proxy's own cleanup left), in IPv4
    and IPv6, with every rule that jumps to them. Only slot 0's node writes the host's
    namespace (the others have their own); chains of another Kubernetes on this machine, there
    before, are left alone with their rules."""
    problems = []
    for tool in ("iptables", "ip6tables"):
        if not _has(tool):
            continue
        jumps, chains = kube_chains(sh(f"{tool}-save", check=False).stdout)
        chains = [(table, chain) for table, chain in chains if f"{tool} {table} {chain}" not in before]
        ours = set(chains)
        jumps = [(table, spec) for table, spec in jumps
                 if (table, spec[spec.index("-j") + 1] if "-j" in spec else "") in ours]
        for table, spec in jumps:
            result = sh(tool, "-w", "-t", table, "-D", *spec, check=False)
            if result.returncode != 0:
                problems.append(f"{tool} -t {table} -D {' '.join(spec)}: {result.stderr.strip()}")
        for table, chain in chains:
            sh(tool, "-w", "-t", table, "-F", chain, check=False)
        for table, chain in chains:
            result = sh(tool, "-w", "-t", table, "-X", chain, check=False)
            if result.returncode != 0:
                problems.append(f"{tool} -t {table} -X {chain}: {result.stderr.strip()}")
    return problems


def nft_tables() -> list[str] | None:
    """nftables tables ("ip filter", ...), where iptables-nft keeps its rules."""
    result = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False) \
        if _has("nft") else None
    if result is None or result.returncode != 0:
        return None
    return sorted(line.removeprefix("table ").strip() for line in result.stdout.splitlines()
                  if line.startswith("table "))


def remove_new_nft_tables(changes: HostChanges) -> list[str]:
    """Tables that the iptables chains of the node brought into being are
    deleted once they hold no rule (nothing else has used them since)."""
    if changes.nft_tables_before is None:
        return []
    problems = []
    for table in nft_tables() or []:
        if table in changes.nft_tables_before:
            continue
        family, name = table.split(" ", 1)
        listing = sh("nft", "-j", "list", "table", family, name, check=False)
        if listing.returncode != 0:
            continue
        if '"rule"' in listing.stdout:
            problems.append(f"nftables table {table} still holds rules")
            continue
        result = sh("nft", "delete", "table", family, name, check=False)
        if result.returncode != 0:
            problems.append(f"nftables table {table}: {result.stderr.strip()}")
    return problems


def _has(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


# --- cgroups -----------------------------------------------------------------

def cgroup_hierarchies() -> list[Path]:
    """Mount points of the cgroup v1 hierarchies (the machines run hybrid v1)."""
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype, *_ = line.split()
        if fstype == "cgroup":
            points.append(Path(point))
    return points


def create_cgroup_root(changes: HostChanges, name: str, save: Callable[[], None]) -> None:
    """kubelet's cgroupRoot must exist in every hierarchy; cpuset needs its
    cpus and mems copied from the parent before anything can join it."""
    changes.cgroup_root = name
    save()
    for hierarchy in cgroup_hierarchies():
        directory = hierarchy / name.strip("/")
        directory.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (directory / knob).exists() and not (directory / knob).read_text().strip():
                (directory / knob).write_text((hierarchy / knob).read_text())


def cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name.strip("/")
        if root.is_dir():
            for procs in root.rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    pass
    return pids


def kill_cgroup(name: str, timeout: float = 15.0) -> list[str]:
    """SIGKILL every process in the cgroup tree (the Pods' containers)."""
    deadline = time.monotonic() + timeout
    while pids := cgroup_pids(name):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            return [f"processes left in cgroup {name}: {sorted(pids)}"]
        time.sleep(0.1)
    return []


def remove_cgroup_root(changes: HostChanges) -> list[str]:
    if not changes.cgroup_root:
        return []
    problems = kill_cgroup(changes.cgroup_root)
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / changes.cgroup_root.strip("/")
        if not root.is_dir():
            continue
        for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                reverse=True) + [root]:
            try:
                directory.rmdir()
            except OSError as error:
                problems.append(f"cgroup {directory}: {error}")
    return problems


# --- processes not started by us but serving us (containerd's shims) -----------

def pids_with_argument(argument: str) -> list[int]:
    """Processes whose command line holds ``argument`` as one argument."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in args:
            found.append(int(proc.name))
    return found


def kill_pids(pids: list[int], timeout: float = 10.0) -> list[str]:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while left := [p for p in pids if _running(p)]:
        if time.monotonic() > deadline:
            return [f"processes still running: {left}"]
        time.sleep(0.05)
    return []


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True
