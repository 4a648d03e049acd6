"""Flags of `iflearner-operator run`, the passphrase source, and the JSON log format."""

from __future__ import annotations

import argparse
import io
import json
import logging

from iflearner.controller.logs import JsonFormatter, job_logger
from iflearner.controller.options import add_run_arguments, options_from_args


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return options_from_args(parser.parse_args(list(argv)))


def test_defaults(monkeypatch):
    for name in ("KUBECONFIG", "IFLEARNER_NAMESPACES", "PULUMI_BACKEND_URL", "IFLEARNER_LEADER_ELECT"):
        monkeypatch.delenv(name, raising=False)
    options = parse()
    assert options.workers == 4 and options.resync_seconds == 600
    assert options.namespaces == () and options.backend_url is None
    assert options.leader_elect is False and options.metrics_address == ":8080"
    assert (options.lease_duration, options.renew_deadline, options.retry_period) == (15, 10, 2)
    assert options.settings.ingress_class_name == "nginx"


def test_flags(tmp_path):
    options = parse("--kubeconfig", str(tmp_path / "kc"), "-n", "a", "-n", "b", "--workers", "8",
                    "--resync-period", "30", "--backend-url", "s3://bucket", "--leader-elect",
                    "--lease-duration", "6", "--renew-deadline", "4", "--retry-period", "1",
                    "--metrics-address", "127.0.0.1:0", "--ingress-address", "10.0.0.1")
    assert options.kubeconfig == tmp_path / "kc"
    assert options.namespaces == ("a", "b") and options.workers == 8 and options.resync_seconds == 30
    assert options.backend_url == "s3://bucket" and options.leader_elect
    assert options.settings.ingress_address == "10.0.0.1"


def test_namespaces_from_environment(monkeypatch):
    monkeypatch.setenv("IFLEARNER_NAMESPACES", "x, y")
    assert parse().namespaces == ("x", "y")


def test_cluster_settings_file_and_overrides(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("ingressAddress: 10.96.200.1\ningressClassName: traefik\n")
    options = parse("--cluster-settings", str(path), "--ingress-class", "nginx-internal")
    assert options.settings.ingress_address == "10.96.200.1"
    assert options.settings.ingress_class_name == "nginx-internal"
    assert options.settings.ca_secret_name == "iflearner-ca"


def test_bootstrap_deployment_arguments_parse():
    """The flags the bootstrap Deployment and the demo pass are accepted."""
    from iflearner.bootstrap.operator import LEASE_NAME, OperatorConfig, deployment
    from iflearner.desired import ClusterSettings

    objects = deployment(ClusterSettings(), OperatorConfig())
    container = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = [a for a in container["args"] if a != "run" and not a.startswith("--cluster-settings")]
    options = parse(*args)
    assert options.leader_elect and options.lease_namespace == "iflearner-system"
    assert options.lease_name == LEASE_NAME
    assert options.health_address == "0.0.0.0:8081" and options.metrics_address == "0.0.0.0:8080"
    assert options.secrets_provider == "passphrase"
    url = "awskms://alias/iflearner-jobs?region=eu-west-1"
    objects = deployment(ClusterSettings(), OperatorConfig(secrets_provider=url))
    container = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = [a for a in container["args"] if a != "run" and not a.startswith("--cluster-settings")]
    assert parse(*args).secrets_provider == url


def test_runner_settings_use_the_passphrase_file(tmp_path):
    secret = tmp_path / "passphrase"
    secret.write_text("s3cret\n")
    options = parse("--state-dir", str(tmp_path / "state"), "--passphrase-file", str(secret))
    settings = options.runner_settings()
    assert settings.passphrase == "s3cret"
    assert settings.backend_url.startswith("file://")


def test_json_logs_carry_job_fields_and_redact_secrets():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    job_logger(logger, "default", "job1").info("up succeeded", extra={"seconds": 1.5, "passphrase": "x"})
    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "up succeeded" and entry["level"] == "info"
    assert entry["namespace"] == "default" and entry["name"] == "job1"
    assert entry["seconds"] == 1.5 and entry["passphrase"] == "[redacted]"
    assert entry["time"].endswith("Z")
