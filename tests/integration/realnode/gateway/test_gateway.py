"""Real gRPC through the real gateway (Traefik) on the real node.

A server job runs a gRPC server (grpcapp) in a container; a client job (a
second Pod) calls it by the job's host name, resolved by the cluster's
CoreDNS from the job's record, over TLS verified with nothing but the trust
file the operator mounts (/etc/server-iflearner-secret.crt). Both
transports; a 64 MiB unary message; one certificate per host (SNI); a
deleted job's host is no longer served.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from controller_harness import ControllerProcess, condition, wait_for
from gateway_harness import GATEWAY_ADDRESS, GatewayCluster
from kubernetes import client

GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"
TRUST = "/etc/server-iflearner-secret.crt"
MIB = 1 << 20
# DNS records reach CoreDNS through a ConfigMap volume (kubelet sync) and its reload.
PROPAGATION = 150


def server_job(name: str, ns: str, host: str, image: str, transport: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"role": "server", "host": host, "template": {"spec": {
        "containers": [{"name": "server", "image": image, "imagePullPolicy": "Never", "args": ["serve", "50001"]}]}}}
    if transport:
        spec["transport"] = transport
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IflearnerJob", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def client_job(name: str, ns: str, image: str, checks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IflearnerJob", "metadata": {"name": name, "namespace": ns},
            "spec": {"role": "client", "host": f"{name}.a.party.iflearner.com", "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "client", "image": image, "imagePullPolicy": "Never",
                                "args": ["probe", json.dumps(checks)]}]}}}}


def wait_ready(custom: client.CustomObjectsApi, ns: str, name: str, gw: GatewayCluster) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        job = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        return job if condition(job, "Ready").get("status") == "True" else None

    def describe() -> str:
        job = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        return json.dumps(job.get("status"), indent=1) + "\n" + gw.controller.log()

    return wait_for(f"{ns}/{name} Ready", ready, 240, interval=0.5, on_timeout=describe)


def run_probes(gw: GatewayCluster, ns: str, name: str, checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run the checks in a client job's Pod; its results by check name."""
    custom, core = client.CustomObjectsApi(gw.api), client.CoreV1Api(gw.api)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, client_job(name, ns, gw.grpcapp_image, checks))

    def finished() -> bool:
        try:
            return core.read_namespaced_pod(name, ns).status.phase in ("Succeeded", "Failed")
        except client.ApiException:
            return False

    wait_for(f"client {name} to finish", finished, 600, interval=1, on_timeout=gw.controller.log)
    logs = core.read_namespaced_pod_log(name, ns)
    results = {}
    for line in logs.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["name"]] = result
    assert set(results) == {c["name"] for c in checks}, logs
    return results


@pytest.fixture
def ns(gateway_cluster: GatewayCluster):
    """A job namespace of the bootstrap's (Traefik serves those only) that no test used before."""
    name = gateway_cluster.free_namespaces.pop(0)
    yield name
    custom = client.CustomObjectsApi(gateway_cluster.api)
    for job in custom.list_namespaced_custom_object(GROUP, VERSION, name, PLURAL)["items"]:
        custom.delete_namespaced_custom_object(GROUP, VERSION, name, PLURAL, job["metadata"]["name"])
    wait_for("the namespace's jobs to go", lambda: not custom.list_namespaced_custom_object(
        GROUP, VERSION, name, PLURAL)["items"], 180)


def test_grpc_through_the_gateway_on_both_transports(gateway_cluster: GatewayCluster, ns: str) -> None:
    gw = gateway_cluster
    custom = client.CustomObjectsApi(gw.api)
    host_gw, host_ing = "gw1.server.iflearner.com", "ing1.server.iflearner.com"
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, server_job("gw1", ns, host_gw,
                                                                                  gw.grpcapp_image))
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, server_job(
        "ing1", ns, host_ing, gw.grpcapp_image, transport="ingress"))
    job = wait_ready(custom, ns, "gw1", gw)
    assert job["status"]["outputs"]["grpcRoute"] == "gw1"
    assert "accepted" in condition(job, "Ready")["message"] or job["status"]["phase"] == "Running"
    wait_ready(custom, ns, "ing1", gw)
    route = custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", ns, "grpcroutes", "gw1")
    (parent,) = route["status"]["parents"]
    assert {c["type"]: c["status"] for c in parent["conditions"]}["Accepted"] == "True"

    first = {"retry_seconds": PROPAGATION, "ca": TRUST}
    results = run_probes(gw, ns, "probe1", [
        {"name": "gateway", "target": f"{host_gw}:443", "size": 1024, **first},
        {"name": "gateway-30031", "target": f"{host_gw}:30031", "ca": TRUST, "retry_seconds": 30},
        {"name": "gateway-64mib", "target": f"{host_gw}:443", "ca": TRUST, "size": 64 * MIB, "timeout": 120},
        {"name": "ingress", "target": f"{host_ing}:443", "size": 1024, **first},
        {"name": "ingress-64mib", "target": f"{host_ing}:443", "ca": TRUST, "size": 64 * MIB, "timeout": 120},
        # Right address, wrong name: the certificate does not verify.
        {"name": "wrong-name", "kind": "tls", "target": f"{host_gw}:443", "ca": TRUST,
         "server_name": "nope.server.iflearner.com", "expect": "fail"},
        {"name": "wrong-name-grpc", "target": f"{host_gw}:443", "ca": TRUST,
         "server_name": "nope.server.iflearner.com", "expect": "fail"},
        # One gateway, two hosts: each presents its own certificate (SNI).
        {"name": "sni-gw", "kind": "tls", "target": f"{GATEWAY_ADDRESS}:443", "ca": TRUST, "server_name": host_gw},
        {"name": "sni-ing", "kind": "tls", "target": f"{GATEWAY_ADDRESS}:443", "ca": TRUST, "server_name": host_ing},
    ])
    failed = {k: v for k, v in results.items() if not v["ok"] and not k.startswith("wrong-name")}
    assert not failed, failed
    assert not results["wrong-name"]["ok"] and "CERTIFICATE_VERIFY_FAILED" in results["wrong-name"]["error"]
    assert not results["wrong-name-grpc"]["ok"]
    assert results["sni-gw"]["served_dns_names"] == [host_gw]
    assert results["sni-ing"]["served_dns_names"] == [host_ing]


def test_deleting_a_job_stops_the_gateway_serving_its_host(gateway_cluster: GatewayCluster, ns: str) -> None:
    gw = gateway_cluster
    custom = client.CustomObjectsApi(gw.api)
    host = "gone1.server.iflearner.com"
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, server_job("gone1", ns, host,
                                                                                  gw.grpcapp_image))
    wait_ready(custom, ns, "gone1", gw)
    by_address = {"target": f"{GATEWAY_ADDRESS}:443", "ca": TRUST, "server_name": host}
    before = run_probes(gw, ns, "probe-before", [{"name": "served", **by_address, "retry_seconds": 60}])
    assert before["served"]["ok"], before

    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "gone1")
    gateways = "gateway.networking.k8s.io"

    def status_of(group: str, plural: str) -> int:
        try:
            get = custom.get_namespaced_custom_object
            get(group, VERSION if group == GROUP else "v1", ns, plural, "gone1")
        except client.ApiException as error:
            return error.status
        return 200

    # The finalizer goes only after the stack's destroy has finished; the route and its Gateway
    # are deleted one after the other inside that destroy, so only then must both be gone.
    wait_for("the deleted job to go", lambda: status_of(GROUP, PLURAL) == 404, 180,
             on_timeout=gw.controller.log)
    assert status_of(gateways, "grpcroutes") == 404
    assert status_of(gateways, "gateways") == 404
    after = run_probes(gw, ns, "probe-after", [
        {"name": "grpc", **by_address, "expect": "fail", "retry_seconds": 30},
        {"name": "tls", "kind": "tls", **by_address, "expect": "fail", "retry_seconds": 30},
    ])
    assert not after["grpc"]["ok"] and not after["tls"]["ok"], after
    assert host not in after["tls"]["served_dns_names"]


def test_a_route_the_gateway_refuses_shows_its_reason(gateway_cluster: GatewayCluster, ns: str,
                                                      tmp_path) -> None:
    """An operator configured for a listener port Traefik has no entry point for: the real Traefik
    refuses the job's listener, and the job's Ready condition says why, in Traefik's words."""
    gw = gateway_cluster
    custom = client.CustomObjectsApi(gw.api)
    gw.controller.stop()
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"ingressAddress: {GATEWAY_ADDRESS}\ntransport: gateway\ngatewayListenerPort: 9443\n")
    misconfigured = ControllerProcess(gw.kubeconfig, tmp_path / "state", tmp_path / "controller.log",
                                      "--cluster-settings", str(settings)).start()
    try:
        misconfigured.wait_ready()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, server_job(
            "refused1", ns, "refused1.server.iflearner.com", gw.grpcapp_image))

        def refused() -> dict[str, Any] | None:
            ready = condition(custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "refused1"), "Ready")
            return ready if ready.get("reason") == "RouteRefused" else None

        ready = wait_for("Ready=False RouteRefused", refused, 180, on_timeout=misconfigured.log)
        assert ready["status"] == "False"
        assert "PortUnavailable" in ready["message"] and "9443" in ready["message"], ready
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "refused1")
        wait_for("the refused job to go", lambda: not custom.list_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL)["items"], 180, on_timeout=misconfigured.log)
    finally:
        misconfigured.stop()
        gw.controller.start().wait_ready()
