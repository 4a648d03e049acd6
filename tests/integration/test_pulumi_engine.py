"""The real Pulumi engine, offline, with the Kubernetes provider and the
certificate resources: an inline program creates a key, a self-signed
certificate and a Secret holding them; destroy removes the Secret."""

from __future__ import annotations

import base64

import pulumi
import pulumi_kubernetes as k8s
from cryptography import x509
from kubernetes import client
from kubernetes.client.rest import ApiException

from iflearner.tlsresources import CertificateAuthority


def test_inline_program_creates_and_destroys_secret(runner, kubeconfig, core: client.CoreV1Api, namespace: str):
    kubeconfig_text = kubeconfig.read_text()

    def program() -> None:
        provider = k8s.Provider("local", kubeconfig=kubeconfig_text)
        ca = CertificateAuthority("ca", common_name="engine-test-ca", validity_hours=24)
        k8s.core.v1.Secret(
            "keypair",
            metadata={"name": "engine-test", "namespace": namespace},
            type="kubernetes.io/tls",
            string_data={"tls.crt": ca.cert_pem, "tls.key": ca.private_key_pem},
            opts=pulumi.ResourceOptions(provider=provider),
        )
        pulumi.export("certificate", ca.cert_pem)
        pulumi.export("key", ca.private_key_pem)

    stack = f"engine-{namespace}"
    result = runner.up(stack, program)
    assert result.succeeded, result.error
    assert result.changes.get("create") == 4  # stack, provider, CA, Secret
    outputs = runner.outputs(stack)
    assert "key" not in outputs, "secret outputs must never be returned in clear"

    secret = core.read_namespaced_secret("engine-test", namespace)
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
    assert cert.subject.rfc4514_string() == "CN=engine-test-ca"
    assert base64.b64decode(secret.data["tls.key"]).startswith(b"-----BEGIN PRIVATE KEY-----")
    assert outputs["certificate"].startswith("-----BEGIN CERTIFICATE-----")

    state_files = list((runner.settings.work_dir.parent / "state").rglob(f"{stack}.json"))
    assert state_files, "state is kept in the file:// backend"
    assert b"BEGIN PRIVATE KEY" not in state_files[0].read_bytes(), "private keys are encrypted in state"

    again = runner.up(stack, program)
    assert again.succeeded and not again.changed, again.changes

    destroyed = runner.destroy(stack)
    assert destroyed.succeeded, destroyed.error
    try:
        core.read_namespaced_secret("engine-test", namespace)
        raise AssertionError("the Secret should be gone after destroy")
    except ApiException as error:
        assert error.status == 404
