"""Settings shared by the CLI and the controller: the cluster settings file,
the kubeconfig, and where stacks keep state and how secrets are encrypted."""

from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from iflearner.desired import ClusterSettings
from iflearner.stackrunner import PASSPHRASE_ENV, RunnerSettings

BACKEND_URL_ENV = "IFLEARNER_BACKEND_URL"
DEFAULT_STATE_DIR = Path.home() / ".cache" / "iflearner-operator" / "state"


class SettingsError(ValueError):
    """A settings file or flag is wrong; the message says what to fix."""


def load_cluster_settings(path: Path | None) -> ClusterSettings:
    """Cluster settings from a YAML mapping of ClusterSettings fields (camelCase or snake_case)."""
    if path is None:
        return ClusterSettings()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SettingsError(f"cannot read cluster settings {path}: {error}") from error
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


def runner_settings(
    backend_url: str | None, passphrase_file: Path | None, state_dir: Path | None = None
) -> RunnerSettings:
    """Where stacks live: a DIY backend URL if given, else a local file:// directory.

    The passphrase comes from --passphrase-file, else PULUMI_CONFIG_PASSPHRASE;
    only the default local backend may generate one (kept beside its state,
    mode 0600), so a shared backend is never encrypted with a throw-away key.
    """
    backend_url = backend_url or os.environ.get(BACKEND_URL_ENV)
    if passphrase_file is not None:
        try:
            passphrase = passphrase_file.read_text().strip()
        except OSError as error:
            raise SettingsError(f"cannot read passphrase file {passphrase_file}: {error}") from error
    else:
        passphrase = os.environ.get(PASSPHRASE_ENV, "")
    if backend_url:
        if not passphrase:
            raise SettingsError(
                f"a passphrase is required with backend {backend_url}: set {PASSPHRASE_ENV} or --passphrase-file"
            )
        work_dir = (state_dir or DEFAULT_STATE_DIR) / "workspace"
        work_dir.mkdir(parents=True, exist_ok=True)
        return RunnerSettings(backend_url, passphrase, work_dir)
    state_dir = state_dir or DEFAULT_STATE_DIR
    if not passphrase:
        state_dir.mkdir(parents=True, exist_ok=True)
        key_file = state_dir / "passphrase"
        if not key_file.exists():
            key_file.touch(mode=0o600)
            key_file.write_text(secrets.token_urlsafe(32))
        passphrase = key_file.read_text().strip()
    return RunnerSettings.local(state_dir, passphrase)
