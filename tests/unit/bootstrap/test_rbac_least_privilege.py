"""The operator's RBAC is confined to the job namespaces unless the config says
every namespace; bad `iflearner:jobNamespaces` values end in errors saying
what to write. (The real API server's verdict: tests/integration/test_operator_rbac.py.)"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from iflearner.bootstrap.operator import OperatorConfig, OperatorConfigError, deployment
from iflearner.bootstrap.rbac import (
    JobNamespacesError,
    parse_job_namespaces,
    rbac,
    render_yaml,
    validate_job_namespaces,
)
from iflearner.controller.options import add_run_arguments, options_from_args
from iflearner.desired import BOOTSTRAP_DNS_RECORD_SHARDS, ClusterSettings
from iflearner.toolchain import REPO_ROOT

SETTINGS = ClusterSettings(dns_record_shards=BOOTSTRAP_DNS_RECORD_SHARDS)  # as the bootstrap configures it


def _args(config: OperatorConfig) -> list[str]:
    deploy = next(o for o in deployment(SETTINGS, config) if o["kind"] == "Deployment")
    return deploy["spec"]["template"]["spec"]["containers"][0]["args"]


def _secret_grants(objects: list[dict]) -> list[tuple[str, str | None, tuple[str, ...], tuple[str, ...]]]:
    """(kind, namespace, verbs, resourceNames) of every rule that reaches Secrets."""
    found = []
    for obj in objects:
        for rule in obj.get("rules", []):
            if "secrets" in rule["resources"] and "" in rule["apiGroups"]:
                found.append((obj["kind"], obj["metadata"].get("namespace"), tuple(rule["verbs"]),
                              tuple(rule.get("resourceNames", ()))))
    return found


def test_the_default_config_grants_secrets_only_in_the_default_namespace_and_the_ca_by_name():
    """Before: no jobNamespaces meant a ClusterRoleBinding with full CRUD on every Secret."""
    objects = rbac(SETTINGS)
    assert not any(o["kind"] in ("ClusterRole", "ClusterRoleBinding") for o in objects)
    grants = _secret_grants(objects)
    assert ("Role", "default", ("get", "list", "watch", "create", "patch", "delete"), ()) in grants
    assert ("Role", "iflearner-system", ("get", "list", "watch"), ("iflearner-ca",)) in grants
    assert len(grants) == 2, grants
    assert OperatorConfig().job_namespaces == ("default",)
    assert "--namespace=default" in _args(OperatorConfig()), "the controller must watch only what it is granted"


def test_kube_system_only_the_records_configmaps_by_name():
    in_dns = [o for o in rbac(SETTINGS, ("a", "b")) if o["metadata"].get("namespace") == "kube-system"]
    rules = [r for o in in_dns for r in o.get("rules", [])]
    shards = ["iflearner-dns-records", *(f"iflearner-dns-records-{i}" for i in range(1, 8))]
    # list/watch by name: the controller watches the shards to repair a job's record removed by hand.
    assert rules == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": shards,
                      "verbs": ["get", "list", "watch", "patch"]}]


def test_each_listed_namespace_gets_a_role_and_binding_and_a_watch_flag():
    objects = rbac(SETTINGS, ("team-a", "team-b", "team-a"))
    jobs = {(o["kind"], o["metadata"]["namespace"]) for o in objects
            if o["metadata"]["name"] == "iflearner-operator-jobs"}
    assert jobs == {(kind, ns) for kind in ("Role", "RoleBinding") for ns in ("team-a", "team-b")}
    args = _args(OperatorConfig(job_namespaces=("team-a", "team-b")))
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]


def test_cluster_wide_only_when_the_config_says_every_namespace():
    objects = rbac(SETTINGS, ("*",))
    role = next(o for o in objects if o["kind"] == "ClusterRole")
    binding = next(o for o in objects if o["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert not any(a.startswith("--namespace") for a in _args(OperatorConfig(job_namespaces=("*",))))
    assert parse_job_namespaces('["*"]') == ("*",)


@pytest.mark.parametrize(("raw", "message"), [
    ("[]", r"jobNamespaces is empty.*list the namespaces where IflearnerJobs are created"),
    ('["Team_A"]', r"'Team_A' is not a namespace name: use at most 63 lowercase letters"),
    (f'["{"a" * 64}"]', r"is not a namespace name"),
    ('["default\\n"]', r"is not a namespace name"),
    ('["-x"]', r"is not a namespace name"),
    ('["*", "default"]', r"mixes \"\*\" \(every namespace\) with names \['default'\]"),
    ('["iflearner-system"]', r"lists iflearner-system, the operator's own namespace.*every Secret"),
    ('["kube-system"]', r"lists kube-system, the cluster DNS namespace"),
    ("default", r"must be a list of namespaces, got 'default'.*config set --path"),
    ('{"a": 1}', r"must be a list of namespaces"),
    ('["a", 1]', r"must list namespace names as strings"),
])
def test_bad_job_namespaces_say_what_to_fix(raw, message):
    with pytest.raises(JobNamespacesError, match=message):
        validate_job_namespaces(parse_job_namespaces(raw), SETTINGS)


def test_the_operator_config_refuses_them_before_anything_is_declared():
    with pytest.raises(OperatorConfigError, match="is empty"):
        OperatorConfig(job_namespaces=()).validate()
    with pytest.raises(OperatorConfigError, match="ops, the operator's own namespace"):
        OperatorConfig(job_namespaces=("ops",)).validate(ClusterSettings(operator_namespace="ops"))
    with pytest.raises(JobNamespacesError):
        rbac(SETTINGS, ())
    assert parse_job_namespaces(None) == ("default",)


def test_the_controller_refuses_a_namespace_flag_that_is_not_a_namespace(capsys, monkeypatch):
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--namespace", "Default"])
    assert "'Default' is not a namespace name" in capsys.readouterr().err
    monkeypatch.setenv("IFLEARNER_NAMESPACES", "ok,bad_one")
    with pytest.raises(ValueError, match="IFLEARNER_NAMESPACES: 'bad_one' is not a namespace name"):
        options_from_args(parser.parse_args([]))


@pytest.mark.parametrize(("file", "namespaces"), [("default.yaml", ("default",)), ("cluster-wide.yaml", ("*",))])
def test_the_rbac_files_a_user_reads_are_what_the_bootstrap_applies(file: str, namespaces: tuple[str, ...]):
    path: Path = REPO_ROOT / "manifests" / "rbac" / file
    assert path.read_text() == render_yaml(SETTINGS, namespaces), \
        f"regenerate: python -m iflearner.bootstrap.rbac {' '.join(namespaces)} > {path.relative_to(REPO_ROOT)}"


def test_every_stack_file_names_its_job_namespaces():
    import yaml

    for stack in (REPO_ROOT / "stacks").glob("Pulumi.*.yaml"):
        config = yaml.safe_load(stack.read_text())["config"]
        names = validate_job_namespaces(config["iflearner:jobNamespaces"], SETTINGS)
        assert names == ("default",), stack
