"""A job's stack on the local control plane with the real engine: exactly the
objects of its role, idempotent, fully destroyed, disjoint across namespaces,
and a certificate that passes a real TLS handshake."""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from signed import signed_program

from iflearner.desired import ClusterSettings, desired_resources, zone_file_key
from iflearner.job import load_job_file, stack_name
from iflearner.toolchain import REPO_ROOT

SETTINGS = ClusterSettings(ingress_address="10.96.100.100")


def job_in(path: str, namespace: str):
    return dataclasses.replace(load_job_file(REPO_ROOT / "examples" / path), namespace=namespace)


def up(runner, kubeconfig: Path, job):
    desired = desired_resources(job, SETTINGS)
    return desired, runner.up(stack_name(job), signed_program(desired, SETTINGS, kubeconfig))


def key_material(pem: str) -> str:
    """The base64 of a P-256 PKCS#8 key's private scalar: every such key shares the 36 bytes (48
    base64 characters) of ASN.1 header before it, so only what follows tells one key from another."""
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))[48:90]


def secret_key_material(data_value: str) -> str:
    """The same scalar in a Secret's data (base64 of the whole PEM): PEM characters 75-112."""
    return data_value[100:150]


def assert_state_holds_no_ca_key(runner, core, job, tls_secret) -> None:
    """Anyone with the state backend and the passphrase reads the decrypted checkpoint: it holds the
    job's own key (as a secret), never the CA's; nothing in the stack reads the CA Secret."""
    ca = core.read_namespaced_secret(SETTINGS.ca_secret_name, SETTINGS.operator_namespace)
    ca_key = base64.b64decode(ca.data["tls.key"]).decode()
    decrypted = json.dumps(runner.export(stack_name(job)))
    flat = decrypted.replace("\\n", "")
    for form in (key_material(ca_key), secret_key_material(ca.data["tls.key"])):
        assert form not in flat, "the CA key is in the job's state"
    job_key = base64.b64decode(tls_secret.data["tls.key"]).decode()
    job_forms = (key_material(job_key), secret_key_material(tls_secret.data["tls.key"]))
    assert any(form in flat for form in job_forms), "the job's own key is in its state (decrypted)"
    resources = json.loads(decrypted)["resources"]
    assert not [r["urn"] for r in resources if "cluster-ca" in r["urn"] or "dynamic" in r["type"]]
    state_dir = Path(runner.settings.backend_url.removeprefix("file://"))
    raw = "".join(p.read_text() for p in state_dir.rglob(f"{stack_name(job)}.json"))
    assert raw and not any(form in raw.replace("\\n", "") for form in job_forms), "the job's key is encrypted at rest"


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

    again = runner.up(stack_name(job), signed_program(desired, SETTINGS, kubeconfig))
    assert again.succeeded and not again.changed, again.changes
    assert_state_holds_no_ca_key(runner, core, job, secret)

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


def legacy_program(desired, kubeconfig: Path):
    """What job stacks declared before the signer: the CA Secret read into the stack, and the
    certificate signed in a dynamic provider (kept importable so such stacks can let it go)."""
    import pulumi
    import pulumi_kubernetes as k8s

    from iflearner.tlsresources import SignedCertificate

    def program() -> None:
        provider = k8s.Provider("cluster", kubeconfig=kubeconfig.read_text(), enable_server_side_apply=True)
        opts = pulumi.ResourceOptions(provider=provider)
        ca = k8s.core.v1.Secret.get("cluster-ca", f"{SETTINGS.operator_namespace}/{SETTINGS.ca_secret_name}",
                                    opts=opts)
        certificate = SignedCertificate(
            "certificate", ca_cert_pem=ca.data.apply(lambda d: base64.b64decode(d["tls.crt"]).decode()),
            ca_key_pem=ca.data.apply(lambda d: base64.b64decode(d["tls.key"]).decode()),
            common_name=desired.certificate.common_name, dns_names=list(desired.certificate.dns_names),
            validity_hours=desired.certificate.validity_hours)
        k8s.core.v1.Secret("tls-secret", metadata={**desired.tls_secret["metadata"],
                                                   "annotations": {"pulumi.com/patchForce": "true"}},
                           type="kubernetes.io/tls",
                           string_data={"tls.crt": certificate.cert_pem, "tls.key": certificate.private_key_pem},
                           opts=opts)

    return program


def test_a_stack_from_before_the_signer_keeps_its_certificate_and_drops_the_ca_key(
        runner, kubeconfig, core, cluster_prereqs, namespace):
    job = job_in("server.yaml", namespace)
    desired = desired_resources(job, SETTINGS)
    assert runner.up(stack_name(job), legacy_program(desired, kubeconfig)).succeeded
    served = core.read_namespaced_secret(desired.names.tls_secret, namespace)

    upgraded, result = up(runner, kubeconfig, job)
    assert result.succeeded, result.error
    assert result.changes.get("delete") == 1, result.changes  # the dynamic certificate resource
    after = core.read_namespaced_secret(desired.names.tls_secret, namespace)
    assert after.data == served.data, "the signer kept the certificate the job already served"
    assert_state_holds_no_ca_key(runner, core, job, after)
    assert runner.destroy(stack_name(job)).succeeded
