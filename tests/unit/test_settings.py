from __future__ import annotations

import pytest

from iflearner.settings import SettingsError, load_cluster_settings, runner_settings


def test_cluster_settings_accept_camel_case_and_refuse_unknown_keys(tmp_path):
    good = tmp_path / "s.yaml"
    good.write_text("ingressAddress: 10.0.0.1\ningress_class_name: traefik\n")
    settings = load_cluster_settings(good)
    assert settings.ingress_address == "10.0.0.1" and settings.ingress_class_name == "traefik"
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingresAddress: 10.0.0.1\n")
    with pytest.raises(SettingsError, match="unknown setting 'ingresAddress'"):
        load_cluster_settings(bad)


def test_shared_backend_requires_a_passphrase(tmp_path, monkeypatch):
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("IFLEARNER_BACKEND_URL", raising=False)
    with pytest.raises(SettingsError, match="passphrase is required"):
        runner_settings("s3://bucket/state", None, tmp_path)
    local = runner_settings(None, None, tmp_path)
    assert local.backend_url.startswith("file://") and len(local.passphrase) >= 32
    assert (tmp_path / "passphrase").stat().st_mode & 0o777 == 0o600
    assert runner_settings(None, None, tmp_path).passphrase == local.passphrase


def test_a_kms_secrets_provider_makes_the_passphrase_optional_and_bad_ones_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("IFLEARNER_BACKEND_URL", raising=False)
    url = "awskms://alias/iflearner-jobs?region=eu-west-1"
    shared = runner_settings("s3://bucket/state", None, tmp_path, url)
    assert shared.secrets_provider == url and shared.passphrase == ""
    local = runner_settings(None, None, tmp_path / "local", url)
    assert local.secrets_provider == url and not (tmp_path / "local" / "passphrase").exists()
    with pytest.raises(SettingsError, match="'vault://x' is not supported.*awskms://, gcpkms://"):
        runner_settings(None, None, tmp_path, "vault://x")
    with pytest.raises(SettingsError, match="holds a credential.*VAULT_TOKEN"):
        runner_settings(None, None, tmp_path, "hashivault://user:token@vault:8200/key")
