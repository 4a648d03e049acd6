"""Which CAs a client job's running Pod trusts: the first piece of a safe CA rotation.

Client Pods mount the trust files with ``subPath`` (at the paths the
original flags name), and the kubelet never refreshes such mounts: a Pod
keeps the bundle its job's trust ConfigMap held when the Pod started, even
after the ConfigMap is updated. So what the ConfigMap holds now is not what
the Pod trusts. ``status.trust`` keeps both:

- ``applied``: the CAs of the bundle the last successful ``up`` copied into
  the job's trust ConfigMap;
- ``mounted``: the CAs the current Pod (by uid) mounted. It is set from
  ``applied`` when a Pod with a new uid appears (a Pod is created by an
  ``up``, after that ``up`` applied the ConfigMap), and never changes for
  the same Pod.

A CA rotation may switch issuing to a new CA only when every running Pod's
``mounted`` list holds it (not built yet; see the README). Only public
facts are kept: subject and a SHA-256 fingerprint of each CA certificate.

Everything here is pure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

CAS_KEY = "iflearnerTrustCAs"  # where the trust informer keeps the bundle's CAs
_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
FINGERPRINT_HEX = 16


def bundle_cas(pem_text: object) -> list[dict[str, str]]:
    """Subject and SHA-256 fingerprint of every certificate in a PEM bundle (unparsable blocks skipped)."""
    if not isinstance(pem_text, str):
        return []
    found = []
    for block in _PEM_BLOCK.findall(pem_text):
        try:
            cert = x509.load_pem_x509_certificate(block.encode())
        except ValueError:
            continue
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        subject = str(names[0].value) if names else cert.subject.rfc4514_string()
        digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()[:FINGERPRINT_HEX]
        found.append({"subject": subject, "sha256": digest})
    return found


def trust_cas(data: Mapping[str, Any] | None) -> dict[str, list[dict[str, str]]]:
    """The CAs of the cluster trust ConfigMap's two bundles (server.crt, party.crt)."""
    data = data or {}
    return {"server": bundle_cas(data.get("server.crt")), "party": bundle_cas(data.get("party.crt"))}


def cached_cas(trust: Mapping[str, Any] | None) -> dict[str, list[dict[str, str]]] | None:
    value = (trust or {}).get(CAS_KEY)
    return dict(value) if isinstance(value, Mapping) else None


def next_trust_status(
    previous: Mapping[str, Any] | None,
    applied_now: Mapping[str, Any] | None,
    pod_uid_before: str | None,
    pod_uid: str | None,
) -> dict[str, Any] | None:
    """``status.trust`` after this pass.

    ``applied_now``: the bundle's CAs when this pass ran a successful ``up``
    (None: no ``up``; the previous ``applied`` stays). ``pod_uid_before`` and
    ``pod_uid``: the job's Pod in the cache before this pass's ``up`` and now
    (None: no Pod).

    A Pod is only ever created by an ``up`` (a deleted one is recreated by
    the next), after that ``up`` applied the trust ConfigMap: so a Pod with a
    new uid mounted the latest ``applied`` bundle, and a Pod keeps what it
    mounted. A Pod that was already running before any bundle was recorded
    (an operator upgrade) mounted something this record cannot know.
    """
    previous = previous if isinstance(previous, Mapping) else {}
    applied = dict(applied_now) if applied_now is not None else previous.get("applied")
    if not isinstance(applied, Mapping):
        return None
    mounted = previous.get("mounted") if isinstance(previous.get("mounted"), Mapping) else None
    if pod_uid is None:
        mounted = None
    elif mounted is None or mounted.get("podUid") != pod_uid:
        created_by_this_up = applied_now is not None and pod_uid != pod_uid_before
        # Without an up in this pass, the new Pod came from an earlier up whose
        # pass did not see it yet: the ConfigMap has held ``applied`` since.
        known = created_by_this_up or (applied_now is None and isinstance(previous.get("applied"), Mapping))
        if known:
            mounted = {"podUid": pod_uid, **dict(applied)}
        else:
            mounted = {"podUid": pod_uid, "unknown": "the Pod started before the operator recorded its bundle"}
    status: dict[str, Any] = {"applied": dict(applied)}
    if mounted is not None:
        status["mounted"] = dict(mounted)
    return status


def with_trust(status: dict[str, Any], value: Mapping[str, Any] | None) -> dict[str, Any]:
    """``status`` with its ``trust`` field set (or removed)."""
    if value is None:
        status.pop("trust", None)
    else:
        status["trust"] = dict(value)
    return status
