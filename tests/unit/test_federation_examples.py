"""examples/federation/: the original example jobs with the real workload.

They must parse with the job model, and differ from examples/{server,party-a,
party-b}.yaml only in the image and the trainer's arguments (plus the
party's working directory, where its trainer lives, and the server's
``restartPolicy: Never``, so that it ends Succeeded).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from iflearner.job import load_job_file, parse_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PAIRS = [("server.yaml", "server.yaml"), ("party-a.yaml", "party-a.yaml"), ("party-b.yaml", "party-b.yaml")]
PLACEHOLDER = "iflearner.local/iflearner-workload:local"


def _container(template: dict) -> dict:
    containers = template["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize(("federation", "original"), PAIRS)
def test_example_parses_and_keeps_the_original_shape(federation: str, original: str):
    job = load_job_file(EXAMPLES / "federation" / federation)
    orig = load_job_file(EXAMPLES / original)
    assert (job.name, job.role, job.host) == (orig.name, orig.role, orig.host)
    # Every job of the federation runs to completion, the server too (it exits
    # once the parties are done; the original server never exited).
    assert job.template["spec"]["restartPolicy"] == "Never"
    if orig.role == "client":
        assert orig.template["spec"]["restartPolicy"] == "Never"
    new, old = _container(dict(job.template)), _container(dict(orig.template))
    assert new["image"] == PLACEHOLDER
    assert (new["name"], new["imagePullPolicy"]) == (old["name"], old["imagePullPolicy"])
    assert set(new) - {"workingDir"} == set(old) - {"workingDir"}
    # The same manifest header as the original (parse_job checks apiVersion/kind).
    raw = yaml.safe_load((EXAMPLES / "federation" / federation).read_text())
    assert (raw["apiVersion"], raw["kind"]) == ("git.iflytek.com/v1", "IflearnerJob")


def test_parties_use_exactly_the_original_server_and_cert_flags():
    for name in ("party-a.yaml", "party-b.yaml"):
        new = _container(dict(load_job_file(EXAMPLES / "federation" / name).template))
        old = _container(dict(load_job_file(EXAMPLES / name).template))
        for flag in ("--server=", "--cert=", "--name="):
            assert [a for a in new["args"] if a.startswith(flag)] == [a for a in old["args"] if a.startswith(flag)]
        assert new["args"][:4] == ["python", "-u", "trainer.py", new["args"][3]]
        assert "--epochs=5" in new["args"]


def test_server_runs_the_aggregator_for_both_parties():
    args = _container(dict(load_job_file(EXAMPLES / "federation" / "server.yaml").template))["args"]
    assert args[:3] == ["python", "-u", "server.py"]
    assert "-n=2" in args and "--epochs=5" in args


def test_placeholder_substituted_with_a_built_reference_still_parses():
    # What the demo/test does with the builder's content-addressed reference.
    text = (EXAMPLES / "federation" / "party-a.yaml").read_text()
    assert text.count(PLACEHOLDER) == 1
    manifest = yaml.safe_load(text.replace(PLACEHOLDER, "iflearner.local/iflearner-workload:0123456789abcdef"))
    assert _container(dict(parse_job(manifest).template))["image"].endswith(":0123456789abcdef")
