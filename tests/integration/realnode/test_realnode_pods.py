"""Pods on the real node run real containers from the project's images:
Services and cluster DNS work between Pods, a ConfigMap item mounted as one
file reads back byte-identical, and a memory limit is enforced."""

from __future__ import annotations

import hashlib
import time

import pytest
from kubernetes import client

from iflearner.images import project_images

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def testapp_image(real_cluster) -> str:
    return project_images(names=["testapp"], progress=lambda _msg: None)["testapp"].reference


def wait_for(predicate, what: str, timeout: float = TIMEOUT, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pod(name: str, image: str, args: list[str], **extra) -> client.V1Pod:
    container_fields = {k: extra.pop(k) for k in ("volume_mounts", "resources") if k in extra}
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1PodSpec(
            restart_policy="Never",
            containers=[client.V1Container(name="main", image=image, image_pull_policy="Never", args=args,
                                           **container_fields)],
            **extra,
        ),
    )


def finished(core: client.CoreV1Api, name: str, namespace: str) -> client.V1Pod | None:
    current = core.read_namespaced_pod(name, namespace)
    return current if current.status.phase in ("Succeeded", "Failed") else None


def describe(core: client.CoreV1Api, name: str, namespace: str) -> str:
    current = core.read_namespaced_pod(name, namespace)
    try:
        logs = core.read_namespaced_pod_log(name, namespace)
    except client.ApiException as error:
        logs = f"(no logs: {error.reason})"
    return f"phase={current.status.phase} statuses={current.status.container_statuses} logs={logs!r}"


def test_service_reached_by_cluster_ip_and_dns_name(real_core: client.CoreV1Api, real_namespace: str,
                                                     testapp_image: str) -> None:
    ns = real_namespace
    real_core.create_namespaced_pod(ns, pod("web", testapp_image, ["serve", "8080"]))
    real_core.create_namespaced_service(ns, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector={"app": "web"},
                                  ports=[client.V1ServicePort(port=80, target_port=8080)])))
    wait_for(lambda: real_core.read_namespaced_pod("web", ns).status.phase == "Running", "the web Pod to run")
    web = real_core.read_namespaced_pod("web", ns)
    assert web.spec.node_name == "iflearner-real-node"
    assert web.status.pod_ip.startswith("10.213.0.")
    cluster_ip = real_core.read_namespaced_service("web", ns).spec.cluster_ip
    dns_name = f"web.{ns}.svc.cluster.local"
    # The client retries: the Service's rules and DNS record appear within
    # seconds of the Pod being Running.
    script = f"""
import sys, time, urllib.request
for url in ["http://{cluster_ip}/by-ip", "http://{dns_name}/by-name"]:
    for attempt in range(60):
        try:
            print(urllib.request.urlopen(url, timeout=3).read().decode().strip(), flush=True)
            break
        except OSError as error:
            last = error
            time.sleep(1)
    else:
        sys.exit(f"{{url}}: {{last}}")
"""
    client_pod = pod("client", testapp_image, [])
    client_pod.spec.containers[0].command = ["python3", "-c", script]
    real_core.create_namespaced_pod(ns, client_pod)
    done = wait_for(lambda: finished(real_core, "client", ns), "the client Pod to finish")
    assert done.status.phase == "Succeeded", describe(real_core, "client", ns)
    logs = real_core.read_namespaced_pod_log("client", ns).split("\n")
    assert logs[:2] == ["web /by-ip", "web /by-name"], logs


def test_configmap_item_mounted_as_one_file_is_byte_identical(real_core: client.CoreV1Api, real_namespace: str,
                                                             testapp_image: str) -> None:
    ns = real_namespace
    content = ("-----BEGIN CERTIFICATE-----\r\nMIIB\u00e9\u4e2d\tline with trailing space \n\n"
               "-----END CERTIFICATE-----\n")
    real_core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="trust"), data={"server.crt": content, "other": "x"}))
    path = "/etc/server-iflearner-secret.crt"
    reader = pod("reader", testapp_image, [], volumes=[client.V1Volume(
        name="trust", config_map=client.V1ConfigMapVolumeSource(name="trust"))],
        volume_mounts=[client.V1VolumeMount(name="trust", mount_path=path, sub_path="server.crt")])
    reader.spec.containers[0].command = [
        "python3", "-c", f"import hashlib,os; d=open('{path}','rb').read(); "
        f"print(hashlib.sha256(d).hexdigest(), len(d), os.path.isfile('{path}'))"]
    real_core.create_namespaced_pod(ns, reader)
    done = wait_for(lambda: finished(real_core, "reader", ns), "the reader Pod to finish")
    assert done.status.phase == "Succeeded", describe(real_core, "reader", ns)
    digest, size, is_file = real_core.read_namespaced_pod_log("reader", ns).split()
    expected = content.encode()
    assert (digest, int(size), is_file) == (hashlib.sha256(expected).hexdigest(), len(expected), "True")


def test_container_over_its_memory_limit_is_oom_killed(real_core: client.CoreV1Api, real_namespace: str,
                                                      testapp_image: str) -> None:
    ns = real_namespace
    hog = pod("hog", testapp_image, ["hog", "400"], resources=client.V1ResourceRequirements(
        limits={"memory": "64Mi", "cpu": "500m"}, requests={"memory": "64Mi", "cpu": "100m"}))
    real_core.create_namespaced_pod(ns, hog)
    done = wait_for(lambda: finished(real_core, "hog", ns), "the hog Pod to be killed")
    state = done.status.container_statuses[0].state.terminated
    assert done.status.phase == "Failed", describe(real_core, "hog", ns)
    assert state is not None and state.reason == "OOMKilled", describe(real_core, "hog", ns)
    assert state.exit_code == 137
