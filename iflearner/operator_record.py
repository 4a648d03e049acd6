"""What the bootstrap records in the cluster about its operator, so that a
person's tools (``preview``) use the operator's state backend and settings
instead of a private local state that would show every resource as new.

The record is the operator's settings ConfigMap: ``cluster-settings.yaml``
(as the operator reads it) and ``state-backend-url``, the backend URL with
any password removed (a reader of ConfigMaps must not learn credentials).
The passphrase stays in the operator's Secret, read only by those allowed to.
"""

from __future__ import annotations

import base64
import urllib.parse
from dataclasses import dataclass
from typing import Any

SETTINGS_CONFIGMAP = "iflearner-operator-settings"
PASSPHRASE_SECRET = "iflearner-operator-state"
SETTINGS_KEY = "cluster-settings.yaml"
BACKEND_KEY = "state-backend-url"
PASSPHRASE_KEY = "passphrase"
REDACTED = "REDACTED"
# Query parameters of backend URLs that carry a credential themselves (libpq's, the Go CDK blob
# drivers', SAS). Not sslkey/sslcert: libpq takes paths there, the key stays in a file.
CREDENTIAL_PARAMETERS = frozenset({
    "password", "sslpassword", "secret", "token", "secret_key", "secret_access_key", "session_token",
    "access_token", "account_key", "sig", "sas_token",
})


def url_credentials(url: str) -> list[str]:
    """The parts of ``url`` that carry a credential: a password in its user info, and credential
    query parameters (empty when there are none; a user name alone is no secret)."""
    parts = urllib.parse.urlsplit(url)
    found = []
    if parts.password is not None:
        found.append("the password in the user info")
    for key, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in CREDENTIAL_PARAMETERS:
            found.append(f"the query parameter {key!r}")
    return found


def redact_url(url: str) -> str:
    """``url`` without its password or credential query parameters
    (``postgres://u:secret@h/db`` -> ``postgres://u:REDACTED@h/db``)."""
    parts = urllib.parse.urlsplit(url)
    query = parts.query
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if any(k.lower() in CREDENTIAL_PARAMETERS for k, _ in pairs):
        query = urllib.parse.urlencode([(k, REDACTED if k.lower() in CREDENTIAL_PARAMETERS else v) for k, v in pairs])
    if parts.password is None and query == parts.query:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user = urllib.parse.quote(parts.username or "", safe="")
        netloc = f"{user}:{REDACTED}@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


@dataclass(frozen=True)
class OperatorRecord:
    """The operator's backend and settings as the bootstrap recorded them."""

    namespace: str
    backend_url: str | None
    cluster_settings_yaml: str | None
    passphrase: str | None

    @property
    def backend_is_redacted(self) -> bool:
        return bool(self.backend_url) and REDACTED in str(self.backend_url)


def record_from_objects(namespace: str, configmap: dict[str, Any] | None,
                        secret: dict[str, Any] | None) -> OperatorRecord | None:
    """Pure: the record from the ConfigMap's and Secret's ``data`` (None if absent)."""
    if configmap is None:
        return None
    data = configmap.get("data") or {}
    passphrase = None
    encoded = (secret or {}).get("data", {}).get(PASSPHRASE_KEY) if secret else None
    if encoded:
        passphrase = base64.b64decode(encoded).decode()
    return OperatorRecord(namespace, data.get(BACKEND_KEY) or None, data.get(SETTINGS_KEY), passphrase)


def read_operator_record(kubeconfig: str | None, namespace: str) -> OperatorRecord | None:
    """The record in ``namespace``, or None when the cluster has none (or cannot be reached)."""
    import yaml
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    try:
        if kubeconfig is None:
            config.load_incluster_config()
            api_client = client.ApiClient()
        else:
            api_client = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
    except Exception:  # noqa: BLE001 - no usable cluster access: no record
        return None
    core = client.CoreV1Api(api_client)
    try:
        configmap = api_client.sanitize_for_serialization(
            core.read_namespaced_config_map(SETTINGS_CONFIGMAP, namespace, _request_timeout=10))
    except ApiException:
        return None
    except Exception:  # noqa: BLE001 - unreachable cluster: no record
        return None
    try:
        secret = api_client.sanitize_for_serialization(
            core.read_namespaced_secret(PASSPHRASE_SECRET, namespace, _request_timeout=10))
    except ApiException:
        secret = None  # not allowed to read it: the caller's passphrase is used
    finally:
        api_client.close()
    return record_from_objects(namespace, configmap, secret)
