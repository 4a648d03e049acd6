"""The CRD's optional `transport` field on a real API server: accepted for
'gateway' and 'ingress', refused otherwise with the allowed values."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def apply(kubeconfig: Path, namespace: str, name: str, transport: str) -> subprocess.CompletedProcess[str]:
    manifest = f"""apiVersion: git.iflytek.com/v1
kind: IflearnerJob
metadata: {{name: {name}}}
spec:
  role: server
  host: {name}.server.iflearner.com
  transport: {transport}
  template: {{spec: {{containers: [{{name: c, image: i}}]}}}}
"""
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "apply", "-n", namespace, "-f", "-"],
                          input=manifest, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("transport", ["gateway", "ingress"])
def test_transport_is_accepted(kubeconfig, crd_installed, namespace, transport):
    result = apply(kubeconfig, namespace, f"t-{transport}", transport)
    assert result.returncode == 0, result.stderr


def test_unknown_transport_is_refused_with_the_choices(kubeconfig, crd_installed, namespace):
    result = apply(kubeconfig, namespace, "t-bad", "nginx")
    assert result.returncode != 0
    assert 'spec.transport: Unsupported value: "nginx"' in result.stderr and '"gateway"' in result.stderr
