"""A job's stack on the local control plane with the real engine: exactly the
objects of its role, idempotent, fully destroyed, disjoint across namespaces,
and a certificate that passes a real TLS handshake."""

from __future__ import annotations

import base64
import dataclasses
import socket
import ssl
import threading
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from iflearner.desired import ClusterSettings, desired_resources, zone_file_key
from iflearner.job import load_job_file, stack_name
from iflearner.program import job_program
from iflearner.toolchain import REPO_ROOT

SETTINGS = ClusterSettings(ingress_address="10.96.100.100")


def job_in(path: str, namespace: str):
    return dataclasses.replace(load_job_file(REPO_ROOT / "examples" / path), namespace=namespace)


def up(runner, kubeconfig: Path, job):
    desired = desired_resources(job, SETTINGS)
    return desired, runner.up(stack_name(job), job_program(desired, SETTINGS, kubeconfig.read_text()))


def missing(read) -> bool:
    try:
        read()
    except ApiException as error:
        return error.status == 404
    return False


def test_server_job_stack_lifecycle(runner, kubeconfig, api_client, core, cluster_prereqs, namespace):
    job = job_in("server.yaml", namespace)
    desired, result = up(runner, kubeconfig, job)
    assert result.succeeded, result.error
    assert runner.outputs(stack_name(job))["service"] == "iflearnerjob-server"

    service = core.read_namespaced_service("iflearnerjob-server", namespace)
    assert {(p.name, p.port, p.target_port) for p in service.spec.ports} == {("grpc", 80, 50001), ("http", 82, 50002)}
    assert service.spec.selector == {"app": "iflearnerjob-server"}
    ingress = client.NetworkingV1Api(api_client).read_namespaced_ingress("iflearnerjob-server", namespace)
    assert ingress.spec.ingress_class_name == "nginx"
    assert ingress.metadata.annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert ingress.metadata.annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "1024m"
    assert ingress.spec.tls[0].hosts == ["job1.server.iflearner.com"]
    assert ingress.spec.tls[0].secret_name == desired.names.tls_secret
    assert ingress.spec.rules[0].host == "job1.server.iflearner.com"
    pod = core.read_namespaced_pod("iflearnerjob-server", namespace)
    assert pod.metadata.labels["app"] == "iflearnerjob-server"
    assert pod.spec.containers[0].args[-1] == "--epochs=10"
    secret = core.read_namespaced_secret(desired.names.tls_secret, namespace)
    assert secret.type == "kubernetes.io/tls"
    for obj in (service, ingress, pod, secret):
        for key, value in desired.labels.items():
            assert obj.metadata.labels[key] == value
    # A server job mounts no trust files and has no trust ConfigMap.
    assert not any(v.config_map for v in pod.spec.volumes or [] if v.name.endswith("iflearner-crt"))
    records = core.read_namespaced_config_map(SETTINGS.dns_configmap_name, SETTINGS.dns_namespace)
    key = zone_file_key("job1.server.iflearner.com")
    assert "10.96.100.100" in records.data[key]

    again = runner.up(stack_name(job), job_program(desired, SETTINGS, kubeconfig.read_text()))
    assert again.succeeded and not again.changed, again.changes

    destroyed = runner.destroy(stack_name(job))
    assert destroyed.succeeded, destroyed.error
    assert missing(lambda: core.read_namespaced_service("iflearnerjob-server", namespace))
    assert missing(lambda: core.read_namespaced_pod("iflearnerjob-server", namespace))
    assert missing(lambda: core.read_namespaced_secret(desired.names.tls_secret, namespace))
    assert missing(lambda: client.NetworkingV1Api(api_client).read_namespaced_ingress("iflearnerjob-server", namespace))
    records = core.read_namespaced_config_map(SETTINGS.dns_configmap_name, SETTINGS.dns_namespace)
    assert key not in (records.data or {})


def _serve_once(cert: Path, key: Path, ready: threading.Event, port: list[int]) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port.append(listener.getsockname()[1])
        ready.set()
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass


def test_party_job_mounts_trust_and_certificates_verify(runner, kubeconfig, core, cluster_prereqs, namespace, tmp_path):
    server = job_in("server.yaml", namespace)
    party = job_in("party-a.yaml", namespace)
    server_desired, server_result = up(runner, kubeconfig, server)
    assert server_result.succeeded, server_result.error
    party_desired, party_result = up(runner, kubeconfig, party)
    assert party_result.succeeded, party_result.error

    pod = core.read_namespaced_pod("iflearnerjob-client1", namespace)
    mounts = {m.mount_path: m for m in pod.spec.containers[0].volume_mounts}
    for path in ("/etc/server-iflearner-secret.crt", "/etc/party-iflearner-secret.crt"):
        assert mounts[path].read_only and mounts[path].sub_path == path.removeprefix("/etc/")
    trust = core.read_namespaced_config_map(party_desired.names.trust_configmap, namespace)
    assert set(trust.data) == {"server-iflearner-secret.crt", "party-iflearner-secret.crt"}
    assert "PRIVATE KEY" not in "".join(trust.data.values())

    # A real TLS handshake: the server presents the issued certificate; a
    # client trusting only the distributed trust file verifies it for spec.host.
    secret = core.read_namespaced_secret(server_desired.names.tls_secret, namespace)
    (tmp_path / "tls.crt").write_bytes(base64.b64decode(secret.data["tls.crt"]))
    (tmp_path / "tls.key").write_bytes(base64.b64decode(secret.data["tls.key"]))
    trust_file = tmp_path / "server-iflearner-secret.crt"
    trust_file.write_text(trust.data["server-iflearner-secret.crt"])
    ready, port = threading.Event(), []
    thread = threading.Thread(target=_serve_once, args=(tmp_path / "tls.crt", tmp_path / "tls.key", ready, port),
                              daemon=True)
    thread.start()
    ready.wait(10)
    verifying = ssl.create_default_context(cafile=str(trust_file))
    with socket.create_connection(("127.0.0.1", port[0])) as raw:
        with verifying.wrap_socket(raw, server_hostname="job1.server.iflearner.com") as tls:
            assert tls.recv(2) == b"ok"
    with socket.create_connection(("127.0.0.1", port[0])) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            verifying.wrap_socket(raw, server_hostname="job2.server.iflearner.com")
    thread.join(10)

    for job in (party, server):
        assert runner.destroy(stack_name(job)).succeeded
    assert missing(lambda: core.read_namespaced_config_map(party_desired.names.trust_configmap, namespace))


def test_same_name_in_two_namespaces_is_disjoint(runner, kubeconfig, core, cluster_prereqs, namespace):
    other = f"{namespace}-b"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    try:
        first, second = job_in("party-b.yaml", namespace), job_in("party-b.yaml", other)
        second = dataclasses.replace(second, host="job2.b.party.iflearner.com")
        assert stack_name(first) != stack_name(second)
        for job in (first, second):
            _, result = up(runner, kubeconfig, job)
            assert result.succeeded, result.error
        uids = {core.read_namespaced_pod("iflearnerjob-client2", ns).metadata.uid for ns in (namespace, other)}
        assert len(uids) == 2
        assert runner.destroy(stack_name(first)).succeeded
        assert missing(lambda: core.read_namespaced_pod("iflearnerjob-client2", namespace))
        assert core.read_namespaced_pod("iflearnerjob-client2", other).metadata.name == "iflearnerjob-client2"
        assert runner.destroy(stack_name(second)).succeeded
    finally:
        core.delete_namespace(other)
