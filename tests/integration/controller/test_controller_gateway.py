"""The gateway transport through the controller on the real control plane:
the job's Gateway (its TLS listener) and GRPCRoute pass the real Gateway API
CRDs' validation; Ready waits for the gateway's acceptance and carries its
refusal; deleting the job removes both. Nothing runs Traefik here (kwok), so
the test writes the status a gateway controller would; the real-node tests
(tests/integration/realnode/gateway) run the real Traefik."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from controller_harness import condition, create_job, gone, job_manifest, wait_for
from kubernetes import client

from iflearner.bootstrap.gateway_stack import gateway_api_crds_file

GROUP, VERSION = "gateway.networking.k8s.io", "v1"


@pytest.fixture(scope="module")
def gateway_api(kubeconfig: Path) -> None:
    """The Gateway API CRDs the bootstrap installs (server-side: they are too big for an annotation)."""
    kubectl = ["kubectl", "--kubeconfig", str(kubeconfig)]
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(gateway_api_crds_file())], check=True,
                   capture_output=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Established", "--timeout=60s",
                    "crd/gateways.gateway.networking.k8s.io", "crd/grpcroutes.gateway.networking.k8s.io"],
                   check=True, capture_output=True)


def _cond(kind: str, status: str, reason: str, generation: int, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message or reason,
            "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"}


def _gateway_says(custom: client.CustomObjectsApi, ns: str, name: str, route_ok: bool = True,
                  route_reason: str = "ResolvedRefs", route_message: str = "") -> None:
    """What Traefik writes: Gateway and listener Accepted/Programmed, the route's parent status."""
    gateway = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "gateways", name)
    generation = gateway["metadata"]["generation"]
    listener_conditions = [_cond(k, "True", k, generation) for k in ("Accepted", "ResolvedRefs", "Programmed")]
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, "gateways", name, {"status": {
        "conditions": [_cond("Accepted", "True", "Accepted", generation),
                       _cond("Programmed", "True", "Programmed", generation)],
        "listeners": [{"name": "https", "attachedRoutes": 1, "conditions": listener_conditions,
                       "supportedKinds": [{"group": GROUP, "kind": "GRPCRoute"}]}]}})
    route = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "grpcroutes", name)
    route_generation = route["metadata"]["generation"]
    resolved = _cond("ResolvedRefs", "True" if route_ok else "False", route_reason, route_generation,
                     route_message)
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, "grpcroutes", name, {"status": {"parents": [{
        "parentRef": {"group": GROUP, "kind": "Gateway", "name": name, "sectionName": "https"},
        "controllerName": "traefik.io/gateway-controller",
        "conditions": [_cond("Accepted", "True", "Accepted", route_generation), resolved]}]}})


def test_gateway_job_waits_for_acceptance_and_shows_a_refusal(
        start_controller, jobs_ns, custom: client.CustomObjectsApi, gateway_api) -> None:
    controller = start_controller("--transport", "gateway")
    ns, name = jobs_ns, "gw-server"
    create_job(custom, job_manifest(name, ns))

    def job() -> dict[str, Any]:
        return custom.get_namespaced_custom_object("git.iflytek.com", "v1", ns, "iflearnerjobs", name)

    def ready() -> dict[str, Any]:
        return condition(job(), "Ready")

    # Created and valid under the real CRDs; the Pod runs, but no gateway has accepted the route yet.
    wait_for("Ready=False RoutePending", lambda: ready().get("reason") == "RoutePending", 180,
             on_timeout=controller.log)
    gateway = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "gateways", name)
    assert gateway["spec"]["listeners"][0]["hostname"] == f"{name}.server.iflearner.com"
    assert job()["status"]["outputs"]["grpcRoute"] == name
    core = client.CoreV1Api(custom.api_client)
    service = core.read_namespaced_service(name, ns)
    assert service.spec.ports[0].app_protocol == "kubernetes.io/h2c"

    _gateway_says(custom, ns, name)
    wait_for("Ready=True once the gateway accepts", lambda: ready().get("status") == "True", 60,
             on_timeout=controller.log)

    _gateway_says(custom, ns, name, route_ok=False, route_reason="UnsupportedProtocol",
                  route_message='only "kubernetes.io/h2c" and "https" appProtocol is supported')
    refused = wait_for("Ready=False RouteRefused", lambda: (lambda c: c if c.get("reason") == "RouteRefused"
                                                            else None)(ready()), 60, on_timeout=controller.log)
    assert "UnsupportedProtocol" in refused["message"] and "kubernetes.io/h2c" in refused["message"]
    assert "UnsupportedProtocol" in job()["status"]["message"]

    custom.delete_namespaced_custom_object("git.iflytek.com", "v1", ns, "iflearnerjobs", name)
    wait_for("the job's Gateway and GRPCRoute to go", lambda: all(gone(
        lambda plural=plural: custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name))
        for plural in ("gateways", "grpcroutes")), 120, on_timeout=controller.log)


def test_switching_a_jobs_transport_replaces_its_route(
        start_controller, jobs_ns, custom: client.CustomObjectsApi, networking, gateway_api) -> None:
    """The cluster's transport is ingress; the job opts into the gateway, and back."""
    controller = start_controller()
    ns, name = jobs_ns, "switch"
    manifest = job_manifest(name, ns)
    create_job(custom, manifest)
    wait_for("the job's Ingress", lambda: networking.read_namespaced_ingress(name, ns), 180,
             on_timeout=controller.log)

    def patch(transport: str | None) -> None:
        custom.patch_namespaced_custom_object("git.iflytek.com", "v1", ns, "iflearnerjobs", name,
                                              {"spec": {"transport": transport}})

    def exists(read) -> bool:
        return not gone(read)

    read_gateway = lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns, "gateways", name)  # noqa: E731
    read_ingress = lambda: networking.read_namespaced_ingress(name, ns)  # noqa: E731
    patch("gateway")
    wait_for("Gateway in, Ingress out", lambda: exists(read_gateway) and gone(read_ingress), 180,
             on_timeout=controller.log)
    patch(None)
    wait_for("Ingress back, Gateway out", lambda: exists(read_ingress) and gone(read_gateway), 180,
             on_timeout=controller.log)
