"""A real Prometheus (Debian's package) on this host for the real-node tests: it scrapes the
operator's Pods and evaluates the project's alert rules (manifests/monitoring).

Debian builds Prometheus without Kubernetes service discovery, so the test hands it the Pods'
addresses (read from the API) through a file_sd file, which Prometheus watches; the scrape is the
same as a cluster Prometheus's, honor_labels as podmonitor.yaml sets it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from iflearner.localcluster import processes
from iflearner.toolchain import REPO_ROOT

RULES = REPO_ROOT / "manifests" / "monitoring" / "iflearner-operator.rules.yaml"


def config(targets_file: Path, interval: str = "2s") -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(RULES)],
        "scrape_configs": [{
            "job_name": "iflearner-operator",
            "honor_labels": True,
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": interval}],
        }],
    }


class Prometheus:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.targets_file = directory / "targets.json"
        self.record: processes.ProcessRecord | None = None
        self.url = ""

    def __enter__(self) -> Prometheus:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: `make setup` installs Debian's prometheus package"
        self.directory.mkdir(parents=True, exist_ok=True)
        config_file = self.directory / "prometheus.yml"
        self.set_targets({})
        config_file.write_text(yaml.safe_dump(config(self.targets_file)))
        check = subprocess.run(["promtool", "check", "config", str(config_file)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        port = processes.free_ports(1)[0]
        self.url = f"http://127.0.0.1:{port}"
        self.record, _ = processes.start("prometheus", [
            binary, f"--config.file={config_file}", f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"], self.directory / "prometheus.log")
        deadline = time.monotonic() + 60
        while not self._ready():
            assert time.monotonic() < deadline, (self.directory / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        return self

    def __exit__(self, *_: object) -> None:
        if self.record is not None:
            processes.stop(self.record)

    def set_targets(self, pods: dict[str, str]) -> None:
        """Scrape these Pods (name -> address:port), labelled with their name."""
        groups = [{"targets": [address], "labels": {"pod": name}} for name, address in sorted(pods.items())]
        scratch = self.targets_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(groups))
        scratch.replace(self.targets_file)  # whole, never half-written

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def firing(self, **labels: str) -> list[str]:
        """Names of the alerts firing now whose labels include ``labels``."""
        alerts = self.api("alerts")["alerts"]
        return sorted(a["labels"]["alertname"] for a in alerts if a["state"] == "firing"
                      and all(a["labels"].get(k) == v for k, v in labels.items()))

    def log(self) -> str:
        return (self.directory / "prometheus.log").read_text()[-3000:]
