"""The job's route by transport: Gateway API (a Gateway per job plus a GRPCRoute) or the original Ingress."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from iflearner.desired import (
    GATEWAY_LISTENER,
    H2C_APP_PROTOCOL,
    ClusterSettings,
    Transport,
    desired_resources,
    owned_object_refs,
)
from iflearner.job import InvalidJobError, load_job_file, parse_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GATEWAY = ClusterSettings(transport="gateway")
INGRESS = ClusterSettings(transport="ingress")


def job(**spec: Any):
    return parse_job({
        "apiVersion": "git.iflytek.com/v1", "kind": "IflearnerJob",
        "metadata": {"name": "job", "namespace": "ns"},
        "spec": {"role": "server", "host": "job1.server.iflearner.com",
                 "template": {"spec": {"containers": [{"name": "c", "image": "img"}]}}, **spec},
    })


def test_settings_without_a_transport_keep_the_ingress():
    # Settings recorded before the gateway existed have no transport key.
    assert ClusterSettings().transport == "ingress"
    desired = desired_resources(job(), ClusterSettings())
    assert desired.transport is Transport.INGRESS
    assert desired.ingress is not None and desired.gateway is None and desired.grpc_route is None


def test_unknown_transport_setting_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'gateway' or 'ingress'"):
        ClusterSettings(transport="nginx")


def test_gateway_transport_declares_a_tls_listener_for_the_host_with_the_jobs_certificate():
    desired = desired_resources(job(), GATEWAY)
    gateway = desired.gateway
    assert gateway is not None and desired.ingress is None
    assert gateway["apiVersion"] == "gateway.networking.k8s.io/v1" and gateway["kind"] == "Gateway"
    assert gateway["metadata"]["namespace"] == "ns" and gateway["metadata"]["name"] == "job"
    assert gateway["spec"]["gatewayClassName"] == "iflearner"
    (listener,) = gateway["spec"]["listeners"]
    assert listener["name"] == GATEWAY_LISTENER
    assert listener["hostname"] == "job1.server.iflearner.com"
    assert (listener["protocol"], listener["port"]) == ("HTTPS", 8443)
    assert listener["tls"] == {"mode": "Terminate", "certificateRefs": [
        {"group": "", "kind": "Secret", "name": desired.names.tls_secret}]}
    # Only this job's namespace may attach, and only gRPC routes.
    assert listener["allowedRoutes"] == {"namespaces": {"from": "Same"},
                                         "kinds": [{"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}]}


def test_grpc_route_sends_the_hosts_calls_to_the_service_port_80():
    desired = desired_resources(job(), GATEWAY)
    route = desired.grpc_route
    assert route is not None and route["kind"] == "GRPCRoute"
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": desired.names.gateway, "sectionName": GATEWAY_LISTENER}]
    assert route["spec"]["hostnames"] == ["job1.server.iflearner.com"]
    assert route["spec"]["rules"] == [{"backendRefs": [
        {"group": "", "kind": "Service", "name": desired.names.service, "port": 80}]}]
    assert route["metadata"]["labels"] == desired.labels


def test_service_speaks_h2c_on_the_gateway_and_is_unchanged_on_the_ingress():
    gateway_ports = desired_resources(job(), GATEWAY).service["spec"]["ports"]
    ingress_ports = desired_resources(job(), INGRESS).service["spec"]["ports"]
    assert gateway_ports[0]["appProtocol"] == H2C_APP_PROTOCOL
    assert all("appProtocol" not in p for p in ingress_ports)
    # The status API (port 82) stays plain on both.
    assert [p["port"] for p in gateway_ports] == [80, 82] and "appProtocol" not in gateway_ports[1]


def test_a_job_overrides_the_clusters_transport():
    assert desired_resources(job(transport="ingress"), GATEWAY).transport is Transport.INGRESS
    assert desired_resources(job(transport="gateway"), INGRESS).transport is Transport.GATEWAY


def test_a_bad_transport_in_a_job_names_the_field_and_the_choices():
    with pytest.raises(InvalidJobError) as error:
        job(transport="nginx")
    (problem,) = error.value.problems
    assert problem.field == "spec.transport" and "'gateway'" in problem.message and "'ingress'" in problem.message


@pytest.mark.parametrize("filename", ["server.yaml", "party-a.yaml", "party-b.yaml"])
def test_original_examples_work_on_both_transports(filename):
    original = load_job_file(EXAMPLES / filename)
    assert original.transport is None
    for settings in (GATEWAY, INGRESS):
        desired = desired_resources(original, settings)
        assert desired.route_manifests, settings


def test_owned_objects_follow_the_transport():
    kinds = {ref[1] for ref in owned_object_refs(desired_resources(job(), GATEWAY))}
    assert {"Gateway", "GRPCRoute"} <= kinds and "Ingress" not in kinds
    kinds = {ref[1] for ref in owned_object_refs(desired_resources(job(), INGRESS))}
    assert "Ingress" in kinds and not {"Gateway", "GRPCRoute"} & kinds


def test_listener_port_and_class_come_from_the_settings():
    settings = replace(GATEWAY, gateway_class_name="other", gateway_listener_port=443)
    gateway = desired_resources(job(), settings).gateway
    assert gateway is not None
    assert gateway["spec"]["gatewayClassName"] == "other" and gateway["spec"]["listeners"][0]["port"] == 443
