"""Unit tests for the job model: the original jobs parse, bad jobs explain themselves."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from iflearner.job import (
    IflearnerJob,
    InvalidJobError,
    Peer,
    Problem,
    Role,
    load_job_file,
    parse_job,
    stack_name,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRD = REPO / "crd" / "iflearnerjob.yaml"


def job_manifest(**spec_overrides: Any) -> dict[str, Any]:
    """A valid client job manifest, with spec fields overridden."""
    spec: dict[str, Any] = {
        "role": "client",
        "host": "job1.a.party.iflearner.com",
        "template": {"spec": {"containers": [{"name": "c", "image": "img:1"}]}},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "git.iflytek.com/v1",
        "kind": "IflearnerJob",
        "metadata": {"name": "job", "namespace": "ns"},
        "spec": spec,
    }


def problems_of(manifest: Any) -> dict[str, str]:
    with pytest.raises(InvalidJobError) as caught:
        parse_job(manifest)
    return {p.field: p.message for p in caught.value.problems}


@pytest.mark.parametrize(
    ("filename", "name", "role", "host"),
    [
        ("server.yaml", "iflearnerjob-server", Role.SERVER, "job1.server.iflearner.com"),
        ("party-a.yaml", "iflearnerjob-client1", Role.CLIENT, "job1.a.party.iflearner.com"),
        ("party-b.yaml", "iflearnerjob-client2", Role.CLIENT, "job1.b.party.iflearner.com"),
    ],
)
def test_original_examples_parse(filename: str, name: str, role: Role, host: str) -> None:
    job = load_job_file(EXAMPLES / filename)
    assert (job.name, job.namespace, job.role, job.host) == (name, "default", role, host)
    assert job.peers == ()
    assert job.generation == 0
    container = job.template["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/iflytek/iflearner:v0.1.0"


def test_party_a_args_are_the_original_ones() -> None:
    job = load_job_file(EXAMPLES / "party-a.yaml")
    assert job.template["spec"]["restartPolicy"] == "Never"
    assert job.template["spec"]["containers"][0]["args"] == [
        "python", "-u", "quickstart_pytorch.py", "--name=client1", "--epochs=10",
        "--server=job1.server.iflearner.com:30031", "--cert=/etc/server-iflearner-secret.crt",
        "--peers=0.0.0.0:50001;job1.b.party.iflearner.com:32322",
        "--peer-cert=/etc/party-iflearner-secret.crt",
    ]
    server = load_job_file(EXAMPLES / "server.yaml")
    assert server.template["spec"]["containers"][0]["args"][2:] == ["-n=2", "--epochs=10"]


def test_optional_fields_are_read() -> None:
    manifest = job_manifest(
        peers=[{"host": "job1.b.party.iflearner.com", "address": "172.31.164.54"}],
        ingressClassName="internal",
        schedulername="volcano",
    )
    manifest["metadata"].update(generation=3, uid="u-1")
    job = parse_job(manifest)
    assert job.peers == (Peer("job1.b.party.iflearner.com", "172.31.164.54"),)
    assert (job.ingress_class_name, job.scheduler_name, job.generation, job.uid) == (
        "internal", "volcano", 3, "u-1",
    )


def test_template_is_a_deep_copy() -> None:
    manifest = job_manifest()
    job = parse_job(manifest)
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    assert job.template["spec"]["containers"][0]["image"] == "img:1"


def test_bad_role_names_field_and_choices() -> None:
    problems = problems_of(job_manifest(role="srv"))
    assert problems == {"spec.role": "must be 'server' or 'client', got 'srv'"}


@pytest.mark.parametrize(
    "host", ["localhost", "Job1.Server.com", "job_1.server.com", "-a.b", "a.b.", "x" * 64 + ".com", 42]
)
def test_non_dns_host_is_refused_with_an_example(host: object) -> None:
    problems = problems_of(job_manifest(host=host))
    assert list(problems) == ["spec.host"]
    message = problems["spec.host"]
    assert message.startswith("must be ") and "lowercase" in message
    assert f"got {host!r}"[:60] in message


def test_uppercase_host_suggests_lowercase_spelling() -> None:
    assert "use 'job1.server.com'" in problems_of(job_manifest(host="Job1.Server.com"))["spec.host"]


def test_missing_template_is_reported() -> None:
    manifest = job_manifest()
    del manifest["spec"]["template"]
    problems = problems_of(manifest)
    assert list(problems) == ["spec.template"]
    assert "containers" in problems["spec.template"]


@pytest.mark.parametrize("containers", [[], None, "c"])
def test_empty_containers_are_reported(containers: Any) -> None:
    problems = problems_of(job_manifest(template={"spec": {"containers": containers}}))
    assert list(problems) == ["spec.template.spec.containers"]
    assert "add a container" in problems["spec.template.spec.containers"]


def test_container_without_image_is_reported() -> None:
    problems = problems_of(job_manifest(template={"spec": {"containers": [{"name": "c"}]}}))
    assert list(problems) == ["spec.template.spec.containers[0].image"]


def test_bad_restart_policy_is_reported() -> None:
    template = {"spec": {"restartPolicy": "Sometimes", "containers": [{"name": "c", "image": "i"}]}}
    problems = problems_of(job_manifest(template=template))
    assert "Never" in problems["spec.template.spec.restartPolicy"]


def test_bad_peer_address_is_reported() -> None:
    peer = {"host": "job1.b.party.iflearner.com", "address": "300.1.1.1"}
    problems = problems_of(job_manifest(peers=[peer]))
    assert list(problems) == ["spec.peers[0].address"]
    assert "IPv4" in problems["spec.peers[0].address"]
    assert "'300.1.1.1'" in problems["spec.peers[0].address"]


def test_peer_equal_to_own_host_and_duplicate_peers_are_reported() -> None:
    peers = [
        {"host": "job1.a.party.iflearner.com", "address": "10.0.0.1"},
        {"host": "job1.b.party.iflearner.com", "address": "10.0.0.2"},
        {"host": "job1.b.party.iflearner.com", "address": "10.0.0.3"},
    ]
    problems = problems_of(job_manifest(peers=peers))
    assert "must differ from spec.host" in problems["spec.peers[0].host"]
    assert "duplicates" in problems["spec.peers[2].host"]
    assert "spec.peers[1].host" not in problems


def test_all_problems_are_collected_at_once() -> None:
    manifest = job_manifest(role="srv", host="nodot", template={"spec": {"containers": []}},
                            peers=[{"host": "job1.b.party.iflearner.com", "address": "nope"}])
    manifest["apiVersion"] = "git.iflytek.com/v2"
    manifest["metadata"]["name"] = "Bad_Name"
    with pytest.raises(InvalidJobError) as caught:
        parse_job(manifest)
    fields = [p.field for p in caught.value.problems]
    assert fields == [
        "apiVersion", "metadata.name", "spec.role", "spec.host",
        "spec.template.spec.containers", "spec.peers[0].address",
    ]
    lines = str(caught.value).splitlines()
    assert len(lines) == len(fields)
    assert all(re.match(r"^[\w.\[\]]+: \S", line) for line in lines)
    assert isinstance(caught.value, ValueError)


def test_missing_spec_and_name() -> None:
    problems = problems_of({"apiVersion": "git.iflytek.com/v1", "kind": "IflearnerJob", "metadata": {}})
    assert set(problems) == {"metadata.name", "spec"}


def test_not_a_mapping() -> None:
    assert list(problems_of(["a"])) == ["manifest"]


def test_non_string_template_labels_are_reported() -> None:
    template = {"metadata": {"labels": {"tier": 1}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    assert "quote" in problems_of(job_manifest(template=template))["spec.template.metadata.labels"]


def test_invalid_job_error_str_is_one_line_per_problem() -> None:
    error = InvalidJobError([Problem("a", "x"), Problem("b.c", "y")])
    assert str(error) == "a: x\nb.c: y"
    assert error.problems == (Problem("a", "x"), Problem("b.c", "y"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "found 0"),
        ("a: [1\n", "not valid YAML"),
        ("kind: ConfigMap\n", "kind IflearnerJob"),
    ],
)
def test_load_job_file_errors_name_the_file(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(InvalidJobError) as caught:
        load_job_file(write(tmp_path, text))
    assert [p.field for p in caught.value.problems] == ["file"]
    assert expected in caught.value.problems[0].message


def test_load_job_file_refuses_two_documents(tmp_path: Path) -> None:
    one = (EXAMPLES / "server.yaml").read_text()
    with pytest.raises(InvalidJobError, match="exactly one"):
        load_job_file(write(tmp_path, one + "---\n" + one))


def test_load_job_file_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidJobError, match="cannot read"):
        load_job_file(tmp_path / "absent.yaml")


def test_load_job_file_reports_spec_problems(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump(job_manifest(role="boss")))
    with pytest.raises(InvalidJobError, match="spec.role"):
        load_job_file(path)


def _job(name: str, namespace: str) -> IflearnerJob:
    manifest = copy.deepcopy(job_manifest())
    manifest["metadata"] = {"name": name, "namespace": namespace}
    return parse_job(manifest)


def test_stack_name_is_readable_and_unique_per_namespace() -> None:
    assert stack_name(_job("job", "ns")) == "ns.job"
    assert stack_name(_job("job", "a")) != stack_name(_job("job", "b"))
    # The namespace has no dots, so 'a-b' + 'c' and 'a' + 'b-c' cannot collide.
    assert stack_name(_job("c", "a-b")) != stack_name(_job("b-c", "a"))


def test_long_stack_names_fit_pulumi_and_stay_unique() -> None:
    long_a, long_b = "a" * 60 + "." + "a" * 60 + ".x", "a" * 60 + "." + "a" * 60 + ".y"
    first, second = stack_name(_job(long_a, "ns")), stack_name(_job(long_b, "ns"))
    assert first != second
    for name in (first, second):
        assert len(name) <= 100
        assert re.match(r"^[A-Za-z0-9._-]+$", name)
        assert name.startswith("ns.aaaa")


# --- The CRD manifest agrees with the model and accepts the original jobs ---


def _crd_version() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "iflearnerjobs.git.iflytek.com"
    (version,) = crd["spec"]["versions"]
    return version


def test_crd_names_and_scope() -> None:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("git.iflytek.com", "Namespaced")
    assert spec["names"]["kind"] == "IflearnerJob"
    assert spec["names"]["plural"] == "iflearnerjobs"
    assert spec["names"]["singular"] == "iflearnerjob"
    assert spec["names"]["shortNames"] == ["ifljob", "iflj"]
    version = _crd_version()
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert version["subresources"] == {"status": {}}


def test_crd_spec_schema_matches_the_model() -> None:
    spec = _crd_version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["role", "host", "template"]
    assert spec["properties"]["role"]["enum"] == [r.value for r in Role]
    pattern = re.compile(spec["properties"]["host"]["pattern"])
    for host in ("job1.server.iflearner.com", "job1.a.party.iflearner.com", "a.b"):
        assert pattern.match(host)
    for host in ("localhost", "Job1.server.com", "a_b.com", "a.b.", "-a.b", "x" * 64 + ".com"):
        assert not pattern.match(host)
    peer_host = spec["properties"]["peers"]["items"]["properties"]["host"]["pattern"]
    assert peer_host == spec["properties"]["host"]["pattern"]
    address = re.compile(spec["properties"]["peers"]["items"]["properties"]["address"]["pattern"])
    assert address.match("172.31.164.54") and not address.match("256.1.1.1")
    assert not address.match("1.2.3")
    rules = [v["rule"] for v in spec["x-kubernetes-validations"]]
    assert "!has(self.peers) || self.peers.all(p, p.host != self.host)" in rules


def test_crd_keeps_pod_template_labels_and_annotations() -> None:
    template = _crd_version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["template"]
    assert template["x-kubernetes-preserve-unknown-fields"] is True
    metadata = template["properties"]["metadata"]
    for key in ("labels", "annotations"):
        assert metadata["properties"][key]["additionalProperties"] == {"type": "string"}
    pod_spec = template["properties"]["spec"]
    assert pod_spec["x-kubernetes-preserve-unknown-fields"] is True
    assert pod_spec["required"] == ["containers"]
    containers = pod_spec["properties"]["containers"]
    assert containers["minItems"] == 1
    assert containers["items"]["required"] == ["name", "image"]
    assert containers["items"]["x-kubernetes-preserve-unknown-fields"] is True


def _undescribed(schema: dict[str, Any], path: str) -> list[str]:
    missing = [] if "description" in schema else [path]
    for name, child in (schema.get("properties") or {}).items():
        missing += _undescribed(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        missing += _undescribed(schema["items"], f"{path}[]")
    return missing


def test_crd_every_spec_and_status_field_is_described() -> None:
    root = _crd_version()["schema"]["openAPIV3Schema"]["properties"]
    assert _undescribed(root["spec"], "spec") == []
    assert _undescribed(root["status"], "status") == []


def test_crd_status_and_printer_columns() -> None:
    version = _crd_version()
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    assert {"phase", "message", "observedGeneration", "conditions", "lastOperation", "outputs"} <= set(
        status["properties"]
    )
    condition = status["properties"]["conditions"]["items"]["properties"]
    assert set(condition) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration",
    }
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Role", "Host", "Phase", "Ready", "Age", "Message",
    ]
    assert columns["Role"]["jsonPath"] == ".spec.role"
    assert columns["Host"]["jsonPath"] == ".spec.host"
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert (columns["Age"]["jsonPath"], columns["Age"]["type"]) == (".metadata.creationTimestamp", "date")
    assert (columns["Message"]["jsonPath"], columns["Message"]["priority"]) == (".status.message", 1)


def _declared_fields(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """Fields of ``value`` the schema would prune (not declared, not preserved)."""
    if not isinstance(value, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    props = schema.get("properties") or {}
    pruned = [f"{path}.{k}" for k in value if k not in props and "additionalProperties" not in schema]
    for key, child in value.items():
        if key in props:
            pruned += _declared_fields(props[key], child, f"{path}.{key}")
    return pruned


@pytest.mark.parametrize("filename", ["server.yaml", "party-a.yaml", "party-b.yaml"])
def test_crd_schema_declares_every_field_of_the_examples(filename: str) -> None:
    manifest = yaml.safe_load((EXAMPLES / filename).read_text())
    spec_schema = _crd_version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec_schema["required"]) <= set(manifest["spec"])
    assert _declared_fields(spec_schema, manifest["spec"], "spec") == []
    assert manifest["spec"]["role"] in spec_schema["properties"]["role"]["enum"]
    assert re.match(spec_schema["properties"]["host"]["pattern"], manifest["spec"]["host"])
    assert "namespace" not in manifest["metadata"]


def test_names_with_a_trailing_newline_are_refused():
    # `$` matches before a final newline; every pattern is matched whole.
    from iflearner.job import is_dns_subdomain, is_host_name

    assert is_host_name("h.example.com") and not is_host_name("h.example.com\n")
    assert not is_dns_subdomain("default\n")
