"""The reconciler on the gateway transport: Ready waits for the gateway's
acceptance read from the caches (without running Pulumi when only the
gateway's status moves), and says what to do when the operator does not
watch the Gateway API at all. Fakes from test_reconciler."""

from __future__ import annotations

import copy

import pytest
from test_reconciler import JOB, KEY, Clock, FakeCache, World, condition

from iflearner.controller.events import EventRecorder
from iflearner.controller.metrics import Metrics
from iflearner.controller.reconciler import Reconciler
from iflearner.desired import ClusterSettings

NAME = "iflearnerjob-server"
PLURALS = {"Gateway": "gateways", "GRPCRoute": "grpcroutes"}


def accepted(*kinds: str) -> list[dict]:
    return [{"type": t, "status": "True", "reason": t, "observedGeneration": 1} for t in kinds]


class GatewayWorld(World):
    """The fakes, with Gateway API objects as a gateway job's stack creates them (generation 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.owned.update({kind: FakeCache() for kind in PLURALS})

    def up(self, stack, program, refresh=False):
        result = super().up(stack, program, refresh)
        for kind in PLURALS:
            obj = self.objects.get((kind, "default", NAME))
            if obj is not None:
                obj["metadata"].setdefault("generation", 1)
        return result

    def get_or_none(self, path):
        if "/iflearnerjobs/" in path:
            return super().get_or_none(path)
        plurals = {"Pod": "pods", "Service": "services", "Secret": "secrets", "ConfigMap": "configmaps", **PLURALS}
        for (kind, ns, name), obj in self.objects.items():
            if path.endswith(f"/namespaces/{ns}/{plurals[kind]}/{name}"):
                return obj
        return None


@pytest.fixture
def world() -> GatewayWorld:
    world = GatewayWorld()
    job = copy.deepcopy(JOB)
    job["spec"]["transport"] = "gateway"
    world.jobs.store[KEY] = job
    return world


def reconciler_for(world: World, owned: dict) -> Reconciler:
    return Reconciler(world, world.jobs, owned, world, ClusterSettings(), None, EventRecorder(world), Metrics(),
                      clock=Clock(), cache_wait=0.1, signer=world)


def ready(world: World) -> dict:
    return condition(world.job().get("status") or {}, "Ready")


def test_ready_waits_for_the_gateway_then_follows_it_without_running_pulumi(world):
    reconciler = reconciler_for(world, world.owned)
    reconciler.reconcile(KEY)
    world.set_pod_phase("Running")
    reconciler.reconcile(KEY)
    assert (ready(world)["status"], ready(world)["reason"]) == ("False", "RoutePending")
    # What Traefik writes: status only, so no version the gating reads moves.
    world.objects[("Gateway", "default", NAME)]["status"] = {
        "conditions": accepted("Accepted", "Programmed"),
        "listeners": [{"name": "https", "conditions": accepted("Accepted", "ResolvedRefs", "Programmed")}]}
    world.objects[("GRPCRoute", "default", NAME)]["status"] = {
        "parents": [{"parentRef": {"name": NAME}, "conditions": accepted("Accepted", "ResolvedRefs")}]}
    reconciler.reconcile(KEY)
    assert ready(world)["status"] == "True", ready(world)
    assert world.job()["status"]["outputs"]["grpcRoute"] == NAME
    assert len(world.ups) == 1


def test_without_gateway_caches_the_message_says_to_restart_the_operator(world):
    owned = {k: v for k, v in world.owned.items() if k not in PLURALS}
    reconciler = reconciler_for(world, owned)
    reconciler.reconcile(KEY)
    world.set_pod_phase("Running")
    reconciler.reconcile(KEY)
    assert ready(world)["reason"] == "RoutePending"
    assert "restart the operator" in ready(world)["message"]
