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


def test_a_new_stack_costs_one_cli_start_before_its_update(runner, monkeypatch) -> None:
    """Each Pulumi CLI start costs about 0.1 CPU-s plus the passphrase key derivation (0.18 CPU-s):
    a new stack is created and selected in one process, and an existing one is selected, never
    re-initialized, by a runner that has not seen it (an operator after a restart)."""
    from pulumi import automation as auto

    from iflearner.stackrunner import StackRunner

    commands: list[list[str]] = []
    real_run = auto.LocalWorkspace._run_pulumi_cmd_sync

    def recording(self, args, *rest, **kwargs):
        commands.append(list(args))
        return real_run(self, args, *rest, **kwargs)

    monkeypatch.setattr(auto.LocalWorkspace, "_run_pulumi_cmd_sync", recording)

    def program() -> None:
        pulumi.export("answer", "42")

    stack = "engine-one-start"
    assert runner.up(stack, program).succeeded
    assert [c[:2] for c in commands] == [["stack", "select"]], commands
    assert "--create" in commands[0]

    commands.clear()
    restarted = StackRunner(runner.settings)
    again = restarted.up(stack, program)
    assert again.succeeded and not again.changed, again
    assert [c[:2] for c in commands] == [["stack", "select"]], commands
    assert restarted.outputs(stack)["answer"] == "42"
    assert restarted.destroy(stack).succeeded
