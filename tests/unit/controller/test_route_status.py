"""The gateway's verdict on a job's route, and what it does to the job's Ready condition."""

from __future__ import annotations

from typing import Any

from iflearner.controller.status import (
    RESULT_SUCCEEDED,
    ROUTE_ACCEPTED,
    ROUTE_PENDING,
    ROUTE_REFUSED,
    Observation,
    Operation,
    RouteStatus,
    compute_status,
    condition,
    gateway_route_status,
)

T0 = "2025-01-01T00:00:00Z"
UP_OK = Operation("up", RESULT_SUCCEEDED, T0, {"create": 7}, fingerprint="abc")


def cond(kind: str, status: str = "True", reason: str | None = None, generation: int = 1,
         message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason or kind, "observedGeneration": generation,
            "message": message}


def gateway(listener_conditions=None, conditions=None, generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "job", "namespace": "ns", "generation": generation},
        "status": {
            "conditions": conditions if conditions is not None else [cond("Accepted"), cond("Programmed")],
            "listeners": [{"name": "https", "conditions": listener_conditions if listener_conditions is not None
                           else [cond("Accepted"), cond("ResolvedRefs"), cond("Programmed")]}],
        },
    }


def route(conditions=None, generation: int = 1, parent: str = "job") -> dict[str, Any]:
    parents = [] if conditions is None else [
        {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": parent,
                       "sectionName": "https"},
         "controllerName": "traefik.io/gateway-controller", "conditions": conditions}]
    return {"metadata": {"name": "job", "namespace": "ns", "generation": generation},
            "status": {"parents": parents}}


ROUTE_OK = [cond("Accepted"), cond("ResolvedRefs")]


def test_everything_accepted_and_programmed():
    verdict = gateway_route_status(gateway(), route(ROUTE_OK), "https")
    assert verdict.state == ROUTE_ACCEPTED and verdict.accepted


def test_missing_objects_or_status_are_pending_not_refused():
    assert gateway_route_status(None, route(ROUTE_OK), "https").state == ROUTE_PENDING
    assert gateway_route_status(gateway(), None, "https").state == ROUTE_PENDING
    assert gateway_route_status(gateway(conditions=[]), route(ROUTE_OK), "https").state == ROUTE_PENDING
    # The gateway has not looked at the route yet.
    assert gateway_route_status(gateway(), route(None), "https").state == ROUTE_PENDING
    # A status for another Gateway does not count.
    assert gateway_route_status(gateway(), route(ROUTE_OK, parent="other"), "https").state == ROUTE_PENDING


def test_conditions_of_an_older_generation_are_pending():
    assert gateway_route_status(gateway(generation=2), route(ROUTE_OK), "https").state == ROUTE_PENDING
    assert gateway_route_status(gateway(), route(ROUTE_OK, generation=3), "https").state == ROUTE_PENDING


def test_reason_pending_is_not_a_refusal():
    pending = [cond("Accepted", "False", "Pending", message="waiting for controller")]
    assert gateway_route_status(gateway(conditions=pending), route(ROUTE_OK), "https").state == ROUTE_PENDING


def test_a_refused_listener_carries_the_gateways_reason():
    listener = [cond("Accepted", "False", "PortUnavailable", message="Cannot find entryPoint for Gateway")]
    verdict = gateway_route_status(
        gateway(listener, [cond("Accepted", "False", "ListenersNotValid")]), route(ROUTE_OK), "https")
    assert verdict.state == ROUTE_REFUSED and verdict.reason == "PortUnavailable"
    assert "Cannot find entryPoint" in verdict.message and "listener https" in verdict.message


def test_a_conflicted_listener_is_refused():
    listener = [cond("Accepted"), cond("Conflicted", "True", "HostnameConflict", message="same host")]
    verdict = gateway_route_status(gateway(listener), route(ROUTE_OK), "https")
    assert verdict.state == ROUTE_REFUSED and verdict.reason == "HostnameConflict"


def test_a_refused_route_carries_the_gateways_reason():
    refused = [cond("Accepted"), cond("ResolvedRefs", "False", "UnsupportedProtocol",
                                      message='only "kubernetes.io/h2c" and "https" appProtocol is supported')]
    verdict = gateway_route_status(gateway(), route(refused), "https")
    assert verdict.state == ROUTE_REFUSED and verdict.reason == "UnsupportedProtocol"
    assert "kubernetes.io/h2c" in verdict.message


def ready(status):
    found = condition(status, "Ready")
    assert found is not None
    return found["status"], found["reason"], found["message"]


def observed(route_status: RouteStatus | None, phase: str = "Running") -> dict[str, Any]:
    return compute_status(None, Observation(generation=1, now=T0, operation=UP_OK, pod_phase=phase,
                                            pod_name="job", host="job1.server.iflearner.com", route=route_status))


def test_ready_needs_the_route_accepted_when_the_pod_runs():
    assert ready(observed(RouteStatus(ROUTE_ACCEPTED, "ok")))[0] == "True"
    assert ready(observed(None))[0] == "True"  # an Ingress: nothing to wait for
    status, reason, _ = ready(observed(RouteStatus(ROUTE_PENDING, "waiting for the gateway")))
    assert (status, reason) == ("False", "RoutePending")
    assert condition(observed(RouteStatus(ROUTE_PENDING, "x")), "Reconciling")["status"] == "True"


def test_a_refusal_shows_the_gateways_reason_in_ready_and_the_message():
    refusal = RouteStatus(ROUTE_REFUSED, "GRPCRoute job not ResolvedRefs: UnsupportedProtocol: h2c only",
                          "UnsupportedProtocol")
    status = observed(refusal)
    state, reason, message = ready(status)
    assert (state, reason) == ("False", "RouteRefused")
    assert "UnsupportedProtocol" in message and "UnsupportedProtocol" in status["message"]
    assert condition(status, "Reconciling")["status"] == "False"


def test_a_finished_party_is_ready_whatever_its_route():
    refusal = RouteStatus(ROUTE_REFUSED, "gone", "X")
    assert ready(observed(refusal, phase="Succeeded"))[0] == "True"
