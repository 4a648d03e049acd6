"""`iflearner-operator preview` runs a real preview and changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kubernetes.client.rest import ApiException

from iflearner.toolchain import REPO_ROOT


def test_preview_lists_creates_and_changes_nothing(kubeconfig, core, cluster_prereqs, tmp_path):
    env = {**os.environ, "PULUMI_CONFIG_PASSPHRASE": "preview-test"}
    backend = f"file://{tmp_path / 'state'}"
    (tmp_path / "state").mkdir()
    args = [sys.executable, "-m", "iflearner", "preview", str(REPO_ROOT / "examples" / "server.yaml"),
            "--kubeconfig", str(kubeconfig), "--backend-url", backend]
    text = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "kubernetes:core/v1:Service" in text.stdout and "create" in text.stdout
    assert "kubernetes:networking.k8s.io/v1:Ingress" in text.stdout

    as_json = subprocess.run([*args, "-o", "json"], capture_output=True, text=True, env=env, timeout=300)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["succeeded"] and report["changes"]["create"] >= 6
    types = {step["type"] for step in report["steps"]}
    assert {"kubernetes:core/v1:Pod", "kubernetes:core/v1:Secret", "kubernetes:core/v1:Service"} <= types

    try:
        core.read_namespaced_pod("iflearnerjob-server", "default")
        raise AssertionError("preview must not create the Pod")
    except ApiException as error:
        assert error.status == 404
    assert not list((tmp_path / "state").rglob("default.iflearnerjob-server.json")), "preview leaves no stack"

