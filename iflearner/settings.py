"""Settings shared by the CLI and the controller: the cluster settings file,
the kubeconfig, and where stacks keep state and how secrets are encrypted."""

from __future__ import annotations

import dataclasses
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from iflearner.desired import ClusterSettings
from iflearner.operator_record import SETTINGS_CONFIGMAP, OperatorRecord
from iflearner.stackrunner import (
    PASSPHRASE_ENV,
    PASSPHRASE_PROVIDER,
    RunnerSettings,
    SecretsProviderError,
    validate_secrets_provider,
)

BACKEND_URL_ENV = "IFLEARNER_BACKEND_URL"
DEFAULT_STATE_DIR = Path.home() / ".cache" / "iflearner-operator" / "state"


class SettingsError(ValueError):
    """A settings file or flag is wrong; the message says what to fix."""


def load_cluster_settings(path: Path | None) -> ClusterSettings:
    """Cluster settings from a YAML mapping of ClusterSettings fields (camelCase or snake_case)."""
    if path is None:
        return ClusterSettings()
    try:
        text = path.read_text()
    except OSError as error:
        raise SettingsError(f"cannot read cluster settings {path}: {error}") from error
    return parse_cluster_settings(text, str(path))


def parse_cluster_settings(text: str, origin: str) -> ClusterSettings:
    """Cluster settings from YAML text; ``origin`` names it in errors."""
    path = origin
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise SettingsError(f"cannot read cluster settings {origin}: {error}") from error
    if not isinstance(raw, dict):
        raise SettingsError(f"{path} must hold a mapping of cluster settings")
    known = {f.name: f for f in dataclasses.fields(ClusterSettings)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        field_name = "".join(f"_{c.lower()}" if c.isupper() else c for c in str(key))
        if field_name not in known:
            raise SettingsError(f"{path}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        values[field_name] = value
    return ClusterSettings(**values)


def kubeconfig_text(path: Path | None) -> str | None:
    """The kubeconfig to hand to the Kubernetes provider; None means in-cluster."""
    if path is None:
        env = os.environ.get("KUBECONFIG")
        if env:
            path = Path(env.split(os.pathsep)[0])
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            return None
        else:
            path = Path.home() / ".kube" / "config"
    try:
        return path.read_text()
    except OSError as error:
        raise SettingsError(f"cannot read kubeconfig {path}: {error}; pass --kubeconfig") from error


@dataclass(frozen=True)
class PreviewSettings:
    """What ``preview`` runs with, and a sentence that says where it came from."""

    runner: RunnerSettings
    cluster: ClusterSettings
    origin: str


def preview_settings(
    backend_url: str | None, passphrase_file: Path | None, cluster_settings: Path | None,
    record: OperatorRecord | None, state_dir: Path | None = None,
) -> PreviewSettings:
    """Flags (and their environment variables) first, then what the bootstrap
    recorded about the cluster's operator, so that a preview compares with the
    operator's own stacks; else the local default backend."""
    backend_url = backend_url or os.environ.get(BACKEND_URL_ENV)
    if record is None:
        return PreviewSettings(runner_settings(backend_url, passphrase_file, state_dir),
                               load_cluster_settings(cluster_settings),
                               "the backend given by --backend-url" if backend_url else "a local backend")
    where = f"recorded in {record.namespace}/{SETTINGS_CONFIGMAP}"
    if cluster_settings is None and record.cluster_settings_yaml:
        settings = parse_cluster_settings(record.cluster_settings_yaml, where)
    else:
        settings = load_cluster_settings(cluster_settings)
    recorded = record.backend_url
    if backend_url or not recorded:
        return PreviewSettings(runner_settings(backend_url, passphrase_file, state_dir), settings,
                               "the backend given by --backend-url" if backend_url else "a local backend")
    if record.backend_is_redacted:
        raise SettingsError(f"the operator's state backend {recorded} ({where}) needs credentials; "
                            "pass it with --backend-url (or IFLEARNER_BACKEND_URL)")
    if recorded.startswith("file://") and not Path(recorded.removeprefix("file://")).is_dir():
        return PreviewSettings(
            runner_settings(None, passphrase_file, state_dir), settings,
            f"a local backend: the operator's backend {recorded} ({where}) is not on this machine "
            "(it is a volume of the operator Pod), so every resource shows as new")
    origin = f"the operator's backend {recorded} ({where})"
    if passphrase_file is None and not os.environ.get(PASSPHRASE_ENV) and record.passphrase:
        return PreviewSettings(RunnerSettings(recorded, record.passphrase, _work_dir(state_dir)), settings, origin)
    return PreviewSettings(runner_settings(recorded, passphrase_file, state_dir), settings, origin)


def _work_dir(state_dir: Path | None) -> Path:
    work_dir = (state_dir or DEFAULT_STATE_DIR) / "workspace"
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir


def runner_settings(
    backend_url: str | None, passphrase_file: Path | None, state_dir: Path | None = None,
    secrets_provider: str = PASSPHRASE_PROVIDER,
) -> RunnerSettings:
    """Where stacks live: a DIY backend URL if given, else a local file:// directory.

    The passphrase comes from --passphrase-file, else PULUMI_CONFIG_PASSPHRASE;
    only the default local backend may generate one (kept beside its state,
    mode 0600), so a shared backend is never encrypted with a throw-away key.
    With a KMS ``secrets_provider`` a passphrase is optional: only stacks still
    under the passphrase (created before the provider changed) need it.
    """
    try:
        secrets_provider = validate_secrets_provider(secrets_provider)
    except SecretsProviderError as error:
        raise SettingsError(str(error)) from None
    kms = secrets_provider != PASSPHRASE_PROVIDER
    backend_url = backend_url or os.environ.get(BACKEND_URL_ENV)
    if passphrase_file is not None:
        try:
            passphrase = passphrase_file.read_text().strip()
        except OSError as error:
            raise SettingsError(f"cannot read passphrase file {passphrase_file}: {error}") from error
    else:
        passphrase = os.environ.get(PASSPHRASE_ENV, "")
    if backend_url:
        if not passphrase and not kms:
            raise SettingsError(
                f"a passphrase is required with backend {backend_url}: set {PASSPHRASE_ENV} or --passphrase-file"
            )
        return RunnerSettings(backend_url, passphrase, _work_dir(state_dir), secrets_provider)
    state_dir = state_dir or DEFAULT_STATE_DIR
    if not passphrase and not kms:
        state_dir.mkdir(parents=True, exist_ok=True)
        key_file = state_dir / "passphrase"
        if not key_file.exists():
            key_file.touch(mode=0o600)
            key_file.write_text(secrets.token_urlsafe(32))
        passphrase = key_file.read_text().strip()
    return RunnerSettings.local(state_dir, passphrase, secrets_provider)
