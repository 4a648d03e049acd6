"""The CRD on a real API server: the original jobs apply unchanged, bad jobs
are refused with a message that says what to fix, and printer columns show."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from iflearner.toolchain import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_original_jobs_apply_unchanged_and_show_columns(kubeconfig, crd_installed, namespace):
    for name in ("server.yaml", "party-a.yaml", "party-b.yaml"):
        applied = kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(EXAMPLES / name))
        assert applied.returncode == 0, applied.stderr
    table = kubectl(kubeconfig, "get", "iflearnerjobs", "-n", namespace)
    header = table.stdout.splitlines()[0].split()
    assert header == ["NAME", "ROLE", "HOST", "PHASE", "READY", "AGE"]
    assert "job1.server.iflearner.com" in table.stdout and "client" in table.stdout
    wide = kubectl(kubeconfig, "get", "ifljob", "-n", namespace, "-o", "wide")
    assert "MESSAGE" in wide.stdout.splitlines()[0]
    # Pod template labels/annotations survive pruning.
    patched = kubectl(kubeconfig, "patch", "iflearnerjob", "iflearnerjob-server", "-n", namespace, "--type=merge",
                      "-p", '{"spec":{"template":{"metadata":{"labels":{"team":"ml"},"annotations":{"a":"b"}}}}}')
    assert patched.returncode == 0, patched.stderr
    labels = kubectl(kubeconfig, "get", "iflearnerjob", "iflearnerjob-server", "-n", namespace,
                     "-o", "jsonpath={.spec.template.metadata.labels.team}/{.spec.template.metadata.annotations.a}")
    assert labels.stdout == "ml/b"
    args = kubectl(kubeconfig, "get", "iflearnerjob", "iflearnerjob-client1", "-n", namespace,
                   "-o", "jsonpath={.spec.template.spec.containers[0].args[7]}")
    assert args.stdout == "--peers=0.0.0.0:50001;job1.b.party.iflearner.com:32322"


TEMPLATE = "template: {spec: {containers: [{name: c, image: i}]}}"
BAD_JOBS = {
    "bad-role": (f"role: srv\n  host: job1.server.iflearner.com\n  {TEMPLATE}",
                 'spec.role: Unsupported value: "srv"'),
    "bad-host": (f"role: server\n  host: Not_A_Host\n  {TEMPLATE}",
                 "spec.host"),
    "no-template": ("role: server\n  host: job1.server.iflearner.com", "spec.template: Required value"),
}


@pytest.mark.parametrize("name", sorted(BAD_JOBS))
def test_bad_jobs_are_refused_with_a_clear_message(kubeconfig, crd_installed, namespace, name):
    spec, expected = BAD_JOBS[name]
    manifest = f"apiVersion: git.iflytek.com/v1\nkind: IflearnerJob\nmetadata:\n  name: {name}\nspec:\n  {spec}\n"
    result = kubectl(kubeconfig, "apply", "-n", namespace, "-f", "-", stdin=manifest)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
