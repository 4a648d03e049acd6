"""The monitoring kit (manifests/monitoring): the rules pass their promtool tests, the
PrometheusRule carries the same rules, every alert links a runbook section that exists, and every
series an alert reads is one the operator exports."""

from __future__ import annotations

import datetime
import re
import runpy
import shutil
import subprocess

import yaml

from iflearner.certrenewal import CertificateTimes
from iflearner.controller.metrics import Metrics
from iflearner.toolchain import REPO_ROOT

MONITORING = REPO_ROOT / "manifests" / "monitoring"
RULES = MONITORING / "iflearner-operator.rules.yaml"


def _alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_shows_every_alert_firing_and_resolving() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make setup` installs Debian's prometheus package"
    result = subprocess.run([promtool, "test", "rules", "tests/alerts_test.yaml"], cwd=MONITORING,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "tests" / "alerts_test.yaml").read_text()))
    assert tested == {rule["alert"] for rule in _alerts()}


def test_the_prometheusrule_carries_the_rules_file() -> None:
    rendered = runpy.run_path(str(REPO_ROOT / "scripts" / "render-prometheusrule.py"))["render"]()
    assert (MONITORING / "prometheusrule.yaml").read_text() == rendered, \
        "prometheusrule.yaml is stale: run python scripts/render-prometheusrule.py"
    document = yaml.safe_load(rendered)
    assert document["kind"] == "PrometheusRule" and document["spec"] == yaml.safe_load(RULES.read_text())


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_links_its_runbook_section_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    anchors = {_anchor(line.lstrip("#")) for line in readme.splitlines() if line.startswith("#")}
    for rule in _alerts():
        url = rule["annotations"]["runbook_url"]
        assert url == f"README.md#{rule['alert'].lower()}", url
        assert url.partition("#")[2] in anchors, f"README has no section for {rule['alert']}"
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_every_series_an_alert_reads_is_exported() -> None:
    metrics = Metrics()
    now = datetime.datetime.now(datetime.UTC)
    metrics.set_certificate("default", "server",
                            CertificateTimes("ab", now, now + datetime.timedelta(hours=3)), 2 / 3)
    metrics.set_jobs_source(lambda: [{
        "metadata": {"namespace": "default", "name": "server"},
        "status": {"phase": "Pending",
                   "conditions": [{"type": "Stalled", "status": "True", "reason": "PodSecurity"}],
                   "lastOperation": {"kind": "up", "result": "Failed", "failureCount": 2,
                                     "reason": "StackLocked"}}}])
    exported = {line.split("{")[0].split(" ")[0] for line in metrics.exposition().decode().splitlines()
                if line and not line.startswith("#")}
    read = set()
    for rule in _alerts():
        read |= set(re.findall(r"\b(iflearner_\w+)", rule["expr"]))
    assert read and read <= exported, read - exported
