from __future__ import annotations

import base64

import pytest

from iflearner.operator_record import record_from_objects, redact_url
from iflearner.settings import SettingsError, preview_settings


def test_passwords_never_reach_the_record():
    assert redact_url("postgres://op:s3cret@db.example:5432/state") == "postgres://op:REDACTED@db.example:5432/state"
    assert redact_url("s3://bucket/prefix?region=eu-west-1") == "s3://bucket/prefix?region=eu-west-1"
    assert redact_url("file:///var/lib/state") == "file:///var/lib/state"
    assert redact_url("postgres://op@db/state?sslmode=disable&password=s3cret") == \
        "postgres://op@db/state?sslmode=disable&password=REDACTED"


def _record(backend: str, settings: str = "ingressAddress: 10.1.2.3\n", passphrase: str | None = "from-secret"):
    secret = {"data": {"passphrase": base64.b64encode(passphrase.encode()).decode()}} if passphrase else None
    return record_from_objects("iflearner-system", {"data": {"state-backend-url": backend,
                                                              "cluster-settings.yaml": settings}}, secret)


def test_no_configmap_no_record():
    assert record_from_objects("iflearner-system", None, None) is None


def test_preview_uses_the_recorded_backend_settings_and_passphrase(tmp_path, monkeypatch):
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("IFLEARNER_BACKEND_URL", raising=False)
    state = tmp_path / "operator-state"
    state.mkdir()
    chosen = preview_settings(None, None, None, _record(f"file://{state}"), tmp_path / "mine")
    assert chosen.runner.backend_url == f"file://{state}"
    assert chosen.runner.passphrase == "from-secret"
    assert chosen.cluster.ingress_address == "10.1.2.3"
    assert "the operator's backend" in chosen.origin and "iflearner-system/iflearner-operator-settings" in chosen.origin


def test_flags_win_over_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "mine")
    monkeypatch.delenv("IFLEARNER_BACKEND_URL", raising=False)
    chosen = preview_settings("s3://bucket/x", None, None, _record("s3://other"), tmp_path)
    assert chosen.runner.backend_url == "s3://bucket/x" and chosen.runner.passphrase == "mine"
    assert chosen.origin == "the backend given by --backend-url"
    assert chosen.cluster.ingress_address == "10.1.2.3"  # settings still the operator's


def test_a_backend_inside_the_operator_pod_falls_back_to_local_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("IFLEARNER_BACKEND_URL", raising=False)
    chosen = preview_settings(None, None, None, _record("file:///nonexistent/iflearner/state"), tmp_path)
    assert chosen.runner.backend_url == f"file://{(tmp_path / 'state').resolve()}"
    assert "not on this machine" in chosen.origin


def test_a_redacted_backend_asks_for_the_url(tmp_path, monkeypatch):
    monkeypatch.delenv("IFLEARNER_BACKEND_URL", raising=False)
    with pytest.raises(SettingsError, match="needs credentials; pass it with --backend-url"):
        preview_settings(None, None, None, _record("postgres://op:REDACTED@db/state"), tmp_path)
