"""The original's own federation on this machine: three real-node clusters.

The original README runs the server in one cluster and each party in a
cluster of its own, every cluster answering the other two zones with their
gateway addresses and trusting their CAs, and the parties doing secure
aggregation (``--peers``) through each other's gateways. Here:

============  ====  ===========================  =========================
stack         slot  node address (its gateway)   jobs
============  ====  ===========================  =========================
``server``    0     10.213.0.1                   ``examples/federation/server.yaml``
``party-a``   1     10.214.1.2                   ``examples/federation/party-a.yaml``
``party-b``   2     10.214.2.2                   ``examples/federation/party-b.yaml``
============  ====  ===========================  =========================

Each cluster is bootstrapped with its stack from ``stacks/`` in the README's
order ("Bootstrap a real cluster"): the server; each party trusting the
server's CA and the parties before it; then every cluster once more with the
CAs of the clusters that came after it. What differs from a real
installation is only what this machine makes so: node addresses instead of
load balancers, images imported into each node instead of pulled.

Used by ``demo --topology original`` and by
``tests/integration/realnode/test_federation_three_clusters.py``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.localcluster import LocalCluster
from iflearner.localcluster.nodeconfig import NodeLayout, NodeNetwork
from iflearner.toolchain import REPO_ROOT

GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"
NAMESPACE = "default"
FEDERATION_DIR = REPO_ROOT / "examples" / "federation"
# examples/federation name the workload image by this placeholder (its real tag is content-addressed).
WORKLOAD_PLACEHOLDER = "iflearner.local/iflearner-workload:local"
OPERATOR_UID = 65532  # the operator image's user: owns its hostPath state volume


@dataclass(frozen=True)
class Side:
    """One cluster of the federation."""

    stack: str    # stacks/Pulumi.<stack>.yaml
    slot: int     # the real node's network slot
    example: str  # its job, examples/federation/<example>
    zone: str     # the domain its jobs' hosts lie under (the stack's jobDomains)

    @property
    def network(self) -> NodeNetwork:
        return NodeNetwork(self.slot)

    @property
    def is_party(self) -> bool:
        return self.stack != "server"


SERVER = Side("server", 0, "server.yaml", "server.iflearner.com")
PARTY_A = Side("party-a", 1, "party-a.yaml", "a.party.iflearner.com")
PARTY_B = Side("party-b", 2, "party-b.yaml", "b.party.iflearner.com")
SIDES = (SERVER, PARTY_A, PARTY_B)


def local_overrides(side: Side, state_host_path: Path, images: dict[str, str]) -> dict[str, Any]:
    """What differs from ``stacks/Pulumi.<stack>.yaml`` on this machine: the nodes' addresses
    instead of 172.31.164.x, and the images built here (imported, never pulled)."""
    return {
        "iflearner:ingressAddress": side.network.node_address,
        "iflearner:zones": [{"zone": other.zone, "address": other.network.node_address}
                            for other in SIDES if other is not side],
        "iflearner:operatorImage": images["iflearner-operator"],
        "iflearner:gatewayImage": images["traefik"],
        "iflearner:operatorImagePullPolicy": "Never",
        "iflearner:operatorReplicas": 1,
        "iflearner:stateHostPath": str(state_host_path),
    }


def example_job(side: Side, workload_image: str) -> dict[str, Any]:
    """The side's example job, only the image placeholder replaced."""
    text = (FEDERATION_DIR / side.example).read_text().replace(WORKLOAD_PLACEHOLDER, workload_image)
    return yaml.safe_load(text)


def _federation_images(progress: Callable[[str], None]) -> dict[str, Any]:
    """The operator, Traefik and workload images, built (or found cached): name -> BuiltImage."""
    from iflearner import toolchain
    from iflearner.images import ImageBuilder, project_spec
    from iflearner.images.gateway_images import traefik

    builder = ImageBuilder(progress=progress)
    specs = {"iflearner-operator": project_spec("iflearner-operator", builder),
             "iflearner-workload": project_spec("iflearner-workload", builder),
             "traefik": traefik(toolchain.tool("traefik"))}
    return {name: builder.build(spec) for name, spec in specs.items()}


def load_federation_images(containerd_socket: Path, progress: Callable[[str], None]) -> dict[str, str]:
    """The operator, Traefik and workload images imported into a real node's containerd: name ->
    reference (run with the pull policy ``Never`` or ``IfNotPresent``)."""
    from iflearner.images import import_image

    references = {}
    for name, built in _federation_images(progress).items():
        import_image(built, containerd_socket)
        references[name] = built.reference
    return references


def push_federation_images(data_dir: Path, network: NodeNetwork, progress: Callable[[str], None]) -> dict[str, str]:
    """The operator, Traefik and workload images pushed to a real node's registry, as an
    installation gets them (``images push``): name -> reference by digest, for the kubelet to pull."""
    from iflearner.images.push import push
    from iflearner.localcluster import registry

    target = registry.push_target(registry.RegistryLayout(data_dir, network))
    references = {}
    for name, built in _federation_images(progress).items():
        started = time.monotonic()
        references[name] = push(built, target)
        progress(f"pushed {name} to the node's registry in {time.monotonic() - started:.1f}s")
    return references


def pulled_images(api: client.ApiClient, namespace: str) -> list[str]:
    """The images the kubelet pulled for Pods of ``namespace``, from its "Pulling image" events."""
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    return sorted({e.message.split('"')[1] for e in events
                   if e.reason == "Pulling" and e.message and e.message.count('"') >= 2})


def _noop(_: str) -> None:
    pass


@dataclass
class OriginalTopology:
    """Three clusters, their bootstrap stacks and jobs, all under ``data_dir``.

    ``clusters`` may hold clusters made elsewhere (a test's running server
    cluster); the others are ``data_dir/<stack>-cluster``.
    """

    data_dir: Path
    passphrase: str
    progress: Callable[[str], None] = _noop
    clusters: dict[str, LocalCluster] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for side in SIDES:
            self.clusters.setdefault(side.stack, LocalCluster(self.data_dir / f"{side.stack}-cluster"))

    # --- clusters and images -------------------------------------------------------------------

    def up_clusters(self) -> None:
        """Start each side's real-node cluster in its slot (those not running yet)."""
        for side in SIDES:
            cluster = self.clusters[side.stack]
            if cluster.running_state() is None:
                self._timed(f"{side.stack} cluster up", lambda c=cluster, s=side: c.up(
                    node="real", slot=s.slot, progress=lambda m, n=s.stack: self.progress(f"{n} cluster: {m}")))

    def kubeconfig(self, side: Side) -> Path:
        return self.clusters[side.stack].kubeconfig

    def api(self, side: Side) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig(side)))

    def load_images(self) -> dict[str, dict[str, str]]:
        """The operator, Traefik and workload images, built once, imported into every node."""
        images = {}
        for side in SIDES:
            layout = NodeLayout(self.clusters[side.stack].data_dir, side.network)
            images[side.stack] = load_federation_images(layout.containerd_socket,
                                                        progress=lambda m: self.progress(f"images: {m}"))
        return images

    # --- bootstrap -------------------------------------------------------------------------------

    def project(self, side: Side) -> BootstrapProject:
        return BootstrapProject(side.stack, self.kubeconfig(side), self.data_dir / "bootstrap" / side.stack,
                                self.passphrase, self.data_dir / "stacks" / f"Pulumi.{side.stack}.yaml")

    def bootstrap(self, images: dict[str, dict[str, str]],
                  up_progress: Callable[[str], None] | None = None) -> dict[str, str]:
        """Every cluster bootstrapped and trusting the others, in the README's order; each
        stack's ``caCertificate`` by stack name."""
        cas: dict[str, str] = {}
        for side in SIDES:
            project = self._prepare(side, images[side.stack])
            for earlier in SIDES[:SIDES.index(side)]:
                self._trust(project, earlier, cas[earlier.stack])
            self._timed(f"{side.stack} up", lambda p=project: p.up(progress=up_progress))
            cas[side.stack] = project.outputs()["caCertificate"]
        # Back on each cluster, with the CAs of the clusters bootstrapped after it.
        for side in SIDES[:-1]:
            project = self.project(side)
            for later in SIDES[SIDES.index(side) + 1:]:
                self._trust(project, later, cas[later.stack])
            self._timed(f"{side.stack} up again", lambda p=project: p.up(progress=up_progress))
        return cas

    def _prepare(self, side: Side, images: dict[str, str]) -> BootstrapProject:
        state = self.data_dir / "operator-state" / side.stack
        state.mkdir(parents=True, exist_ok=True)
        os.chown(state, OPERATOR_UID, OPERATOR_UID)  # hostPath volumes ignore fsGroup
        settings = yaml.safe_load((REPO_ROOT / "stacks" / f"Pulumi.{side.stack}.yaml").read_text())
        settings["config"].update(local_overrides(side, state, images))
        stack_file = self.data_dir / "stacks" / f"Pulumi.{side.stack}.yaml"
        stack_file.parent.mkdir(parents=True, exist_ok=True)
        stack_file.write_text(yaml.safe_dump(settings))
        project = self.project(side)
        project.ensure_stack()
        return project

    @staticmethod
    def _trust(project: BootstrapProject, peer: Side, ca: str) -> None:
        """The README's `config set --path 'iflearner:peerCaCertificates.<side>[i]' < peer-ca.crt`."""
        kind = "party" if peer.is_party else "server"
        index = [s for s in SIDES if s.is_party == peer.is_party and s.stack != project.stack].index(peer)
        project.set_config(f"iflearner:peerCaCertificates.{kind}[{index}]", ca, path=True)

    def _timed(self, label: str, action: Callable[[], object]) -> None:
        started = time.monotonic()
        action()
        self.timings[label] = time.monotonic() - started
        self.progress(f"{label}: {self.timings[label]:.0f}s")

    # --- jobs ------------------------------------------------------------------------------------

    def apply(self, jobs: Iterable[tuple[Side, dict[str, Any]]]) -> None:
        for side, job in jobs:
            api = self.api(side)
            try:
                client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, job)
            finally:
                api.close()

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job of the three clusters (names are unique across them)."""
        found = []
        for side in SIDES:
            api = self.api(side)
            try:
                found += client.CustomObjectsApi(api).list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL)["items"]
            finally:
                api.close()
        return found

    def read_log(self, pod: str) -> str | None:
        """The log of the Pod of that name in whichever cluster runs it."""
        for side in SIDES:
            api = self.api(side)
            try:
                return client.CoreV1Api(api).read_namespaced_pod_log(pod, NAMESPACE)
            except ApiException as error:
                if error.status not in (400, 404):  # 400: the container has not started yet
                    raise
            finally:
                api.close()
        return None

    # --- teardown --------------------------------------------------------------------------------

    def down(self, stop_clusters: Iterable[str] = tuple(s.stack for s in SIDES), timeout: float = 300) -> bool:
        """Delete every job (the operators destroy their stacks), destroy the bootstrap stacks,
        stop the clusters named in ``stop_clusters``. True when all of it succeeded."""
        clean = True
        for side in reversed(SIDES):
            cluster = self.clusters[side.stack]
            if cluster.running_state() is not None:
                try:
                    self._delete_jobs(side, timeout)
                    state = self.data_dir / "bootstrap" / side.stack
                    if state.exists():
                        self.progress(f"destroying the {side.stack} bootstrap stack")
                        self.project(side).destroy()
                        shutil.rmtree(state)  # destroyed: a second down has nothing to do here
                except Exception as error:  # noqa: BLE001 - cleanup goes on regardless
                    self.progress(f"  could not clean the {side.stack} cluster: {error}")
                    clean = False
            if side.stack in stop_clusters:
                self.progress(f"stopping the {side.stack} cluster")
                clean = cluster.down() and clean
        return clean

    def _delete_jobs(self, side: Side, timeout: float) -> None:
        api = self.api(side)
        custom = client.CustomObjectsApi(api)

        def jobs() -> list[dict[str, Any]]:
            try:
                return list(custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])
            except ApiException as error:
                if error.status == 404:  # no CRD: never bootstrapped, or destroyed
                    return []
                raise

        try:
            found = jobs()
            for job in found:
                meta = job["metadata"]
                try:
                    custom.delete_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
                except ApiException as error:
                    if error.status != 404:
                        raise
            if found:
                self.progress(f"deleting {len(found)} job(s) in the {side.stack} cluster")
            deadline = time.monotonic() + timeout
            while remaining := jobs():
                if time.monotonic() > deadline:
                    names = ", ".join(j["metadata"]["name"] for j in remaining)
                    raise TimeoutError(f"jobs were not finalized within {timeout:.0f}s: {names}")
                time.sleep(1)
        finally:
            api.close()
