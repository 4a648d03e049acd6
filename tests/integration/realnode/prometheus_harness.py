"""A real Prometheus (Debian's package) on this host for the real-node tests: it discovers the
operator's Pods through the cluster's API, as a Prometheus in the cluster would, scrapes them,
and evaluates the project's alert rules (manifests/monitoring)."""

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


def config(kubeconfig: Path, namespace: str, interval: str = "2s") -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(RULES)],
        "scrape_configs": [{
            "job_name": "iflearner-operator",
            "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig),
                                       "namespaces": {"names": [namespace]}}],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
                 "regex": "iflearner-operator", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "metrics",
                 "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            ],
        }],
    }


class Prometheus:
    def __init__(self, directory: Path, kubeconfig: Path, namespace: str) -> None:
        self.directory = directory
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.record: processes.ProcessRecord | None = None
        self.url = ""

    def __enter__(self) -> Prometheus:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: `make setup` installs Debian's prometheus package"
        self.directory.mkdir(parents=True, exist_ok=True)
        config_file = self.directory / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config(self.kubeconfig, self.namespace)))
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
