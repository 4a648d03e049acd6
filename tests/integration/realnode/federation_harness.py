"""Shared by the real federation tests: waiting, jobs, and a snapshot of what
a bootstrap and its jobs may change in a cluster (to compare after teardown)."""

from __future__ import annotations

import time
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from iflearner.local.topology import FEDERATION_DIR, WORKLOAD_PLACEHOLDER

GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"


def wait(what: str, check: Any, timeout: float, describe: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (ApiException, OSError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{describe()}" if describe else ""))
        time.sleep(1)


def jobs(api: client.ApiClient) -> list[dict[str, Any]]:
    try:
        return client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    except ApiException as error:
        if error.status == 404:  # the CRD is gone with the bootstrap
            return []
        raise


def delete_jobs(api: client.ApiClient) -> None:
    """Delete every job and wait until the operator has finalized them (destroyed their stacks)."""
    custom = client.CustomObjectsApi(api)
    for job in jobs(api):
        meta = job["metadata"]
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
        except ApiException as error:
            if error.status != 404:
                raise
    wait("every job to be finalized by the operator", lambda: not jobs(api), 300)


def ended_jobs(api: client.ApiClient, namespace: str, names: list[str]) -> dict[str, dict[str, Any]] | None:
    """The jobs by name once every one of ``names`` is Succeeded or Failed, else None."""
    found = {j["metadata"]["name"]: j for j in
             client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]}
    phases = [(found.get(n, {}).get("status") or {}).get("phase") for n in names]
    return found if all(p in ("Succeeded", "Failed") for p in phases) else None


def cluster_snapshot(api: client.ApiClient) -> dict[str, Any]:
    """What the bootstrap and the jobs may change, comparable before/after."""
    core, ext = client.CoreV1Api(api), client.ApiextensionsV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    return {
        "corefile": core.read_namespaced_config_map("coredns", "kube-system").data["Corefile"],
        "namespaces": sorted(n.metadata.name for n in core.list_namespace().items),
        "crds": sorted(c.metadata.name for c in ext.list_custom_resource_definition().items),
        "cluster_roles": sorted(r.metadata.name for r in rbac.list_cluster_role().items
                                if "iflearner" in r.metadata.name or "traefik" in r.metadata.name),
        "kube_system_config_maps": sorted(c.metadata.name for c in
                                          core.list_namespaced_config_map("kube-system").items),
    }


def wait_back_to(api: client.ApiClient, before: dict[str, Any]) -> dict[str, Any]:
    """The snapshot once the bootstrap's namespaces are gone (they end asynchronously)."""
    wait("the bootstrap's namespaces to be gone",
         lambda: cluster_snapshot(api)["namespaces"] == before["namespaces"], 180,
         lambda: str(cluster_snapshot(api)["namespaces"]))
    return cluster_snapshot(api)


def wrong_trust_party(image: str, name: str, config_map: str) -> dict[str, Any]:
    """examples/federation/party-b.yaml as another party whose --cert names the CA in ``config_map``
    (key ca.crt, mounted at /etc/wrong-ca), one that did not sign the server's certificate."""
    job = yaml.safe_load((FEDERATION_DIR / "party-b.yaml").read_text().replace(WORKLOAD_PLACEHOLDER, image))
    job["metadata"]["name"] = name
    job["spec"]["host"] = "job1.w.party.iflearner.com"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["args"] = [a.replace("client2", "wrongca").replace("/etc/server-iflearner-secret.crt",
                                                                  "/etc/wrong-ca/ca.crt")
                         for a in container["args"]] + ["--tls-grace=10"]
    container["volumeMounts"] = [{"name": "wrong-ca", "mountPath": "/etc/wrong-ca", "readOnly": True}]
    pod["volumes"] = [{"name": "wrong-ca", "configMap": {"name": config_map}}]
    return job


def assert_failed_for_tls(status: dict[str, Any]) -> None:
    """The job of a party whose trust file does not accept the server ended Failed, saying why."""
    assert status["phase"] == "Failed", status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PodFailed", ready
    assert "TLS verification failed" in ready["message"], ready
    assert "/etc/wrong-ca/ca.crt does not accept" in ready["message"], ready
    assert "exited with code 3" in ready["message"], ready
    # Failed is final for a party that exited: no Pulumi retries, no restart loop.
    assert status["lastOperation"]["result"] == "Succeeded", status["lastOperation"]


# What iflearner-flow does: poll the server's status API by its Service name. Prints each new
# answer; ends once every party is complete (the server exits a few seconds later).
_PROBE_SCRIPT = """
import json, sys, time, urllib.request
url, parties = sys.argv[1], int(sys.argv[2])
last, deadline = None, time.monotonic() + 900
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.loads(answer.read())
    except Exception as error:
        body = None
        if str(error) != last:
            print("STATUS-ERROR", error, flush=True)
            last = str(error)
    if body is not None and body != last:
        print("STATUS", json.dumps(body, sort_keys=True), flush=True)
        last = body
        if len(body) >= parties and all(v.get("complete") for v in body.values()):
            sys.exit(0)
    time.sleep(0.3)
sys.exit(1)
"""


def status_probe_pod(name: str, image: str, status_url: str, parties: int) -> dict[str, Any]:
    """A Pod that follows a server's status API (``http://<job>.<namespace>:82/v1/status``) the way
    iflearner-flow does, printing ``STATUS <json>`` per new answer, until ``parties`` are complete."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-u", "-c", _PROBE_SCRIPT, status_url, str(parties)]}]}}
