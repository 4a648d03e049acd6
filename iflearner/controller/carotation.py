"""CA rotation with an overlap window: which CA the signer issues job certificates with.

Client Pods mount their trust files with ``subPath`` and never see a newer
bundle; a server certificate from a CA their bundle lacks would break them.
So a rotation goes the way trust distributors do it:

1. The bootstrap starts it (``caGeneration`` raised, ``caRetiringGeneration``
   set to the old one): the CA Secret holds the new CA (``tls.crt``/``tls.key``)
   and the retiring one (``retiring.crt``/``retiring.key``), and the trust
   bundle carries both. Every client job's trust ConfigMap follows (the
   bundle is in their fingerprint).
2. The signer keeps issuing with the retiring CA while any running client
   Pod mounted a bundle that trusts the retiring CA but not the new one
   (``status.trust.mounted``), or mounted something the operator cannot
   know, until the window (``caRotationWindowSeconds``, counted from the new
   CA's notBefore) has passed.
3. Then issuing switches: every job's fingerprint moves (it covers the
   issuing CA), each runs ``up`` once and serves a certificate of the new CA.
4. The bootstrap finishes it (``caRetiringGeneration`` removed).

Everything here is pure.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from iflearner.controller.mountedtrust import bundle_cas

ISSUING_KEYS = ("tls.crt", "tls.key")
RETIRING_KEYS = ("retiring.crt", "retiring.key")
SIDES = ("server", "party")
# Job phases whose Pod no longer runs: what it mounted no longer matters.
FINISHED_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class CaFacts:
    """Public facts of one CA certificate."""

    subject: str
    sha256: str  # the fingerprint status.trust lists (mountedtrust.bundle_cas)
    not_before: datetime.datetime
    digest: str  # of the whole certificate, for the gating fingerprint

    def to_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "sha256": self.sha256, "notBefore": self.not_before.isoformat(),
                "digest": self.digest}

    @classmethod
    def from_dict(cls, raw: Any) -> CaFacts | None:
        if not isinstance(raw, Mapping):
            return None
        try:
            return cls(str(raw["subject"]), str(raw["sha256"]), datetime.datetime.fromisoformat(raw["notBefore"]),
                       str(raw["digest"]))
        except (KeyError, TypeError, ValueError):
            return None


def ca_facts(pem: str | None) -> CaFacts | None:
    """Facts of the first certificate in ``pem`` (None when there is none)."""
    listed = bundle_cas(pem)
    if not listed or pem is None:
        return None
    cert = x509.load_pem_x509_certificate(pem.encode())
    return CaFacts(listed[0]["subject"], listed[0]["sha256"], cert.not_valid_before_utc,
                   hashlib.sha256(pem.strip().encode()).hexdigest()[:32])


def secret_ca_facts(data: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """Facts of the CAs in a CA Secret's (base64) data: ``issuing`` and, during a rotation, ``retiring``."""
    found = {}
    for role, (cert_key, _) in (("issuing", ISSUING_KEYS), ("retiring", RETIRING_KEYS)):
        encoded = (data or {}).get(cert_key)
        try:
            pem = base64.b64decode(encoded, validate=True).decode() if isinstance(encoded, str) else None
        except (binascii.Error, ValueError):
            pem = None
        facts = ca_facts(pem)
        if facts is not None:
            found[role] = facts.to_dict()
    return found


@dataclass(frozen=True)
class IssuerChoice:
    """Which key pair of the CA Secret signs, and why."""

    keys: tuple[str, str]
    ca: CaFacts | None
    reason: str
    # While the retiring CA issues: when the window ends and issuing switches regardless.
    switch_at: datetime.datetime | None = None


def _holds_out(mounted: Any, new: CaFacts, retiring: CaFacts) -> bool:
    """Whether a Pod that mounted ``mounted`` would break on a certificate of the new CA."""
    if not isinstance(mounted, Mapping) or "unknown" in mounted:
        return True  # it started before the operator recorded its bundle: assume the worst
    for side in SIDES:
        fingerprints = {str(ca.get("sha256")) for ca in mounted.get(side) or [] if isinstance(ca, Mapping)}
        if retiring.sha256 in fingerprints and new.sha256 not in fingerprints:
            return True
    return False


def running_mounts(jobs: Iterable[Mapping[str, Any]]) -> list[Any]:
    """``status.trust.mounted`` of every client job whose Pod still runs (or is about to)."""
    mounts = []
    for job in jobs:
        status = job.get("status") or {}
        trust = status.get("trust")
        if not isinstance(trust, Mapping) or "mounted" not in trust or status.get("phase") in FINISHED_PHASES:
            continue
        mounts.append(trust["mounted"])
    return mounts


def choose_issuer(cas: Mapping[str, Any], mounts: Iterable[Any], window: datetime.timedelta,
                  now: datetime.datetime) -> IssuerChoice:
    """The CA that signs now, from the CA Secret's facts (:func:`secret_ca_facts`) and what the
    running client Pods mounted (:func:`running_mounts`)."""
    new, retiring = CaFacts.from_dict(cas.get("issuing")), CaFacts.from_dict(cas.get("retiring"))
    if new is None or retiring is None or retiring.sha256 == new.sha256:
        return IssuerChoice(ISSUING_KEYS, new, "no rotation in progress")
    holdouts = sum(1 for mounted in mounts if _holds_out(mounted, new, retiring))
    window_end = new.not_before + window
    if holdouts == 0:
        return IssuerChoice(ISSUING_KEYS, new, f"every running client Pod trusts the new CA {new.subject}")
    if now >= window_end:
        return IssuerChoice(ISSUING_KEYS, new, f"the rotation window ended at {window_end.isoformat()}; "
                                               f"{holdouts} running client Pod(s) still lack the new CA")
    return IssuerChoice(RETIRING_KEYS, retiring,
                        f"{holdouts} running client Pod(s) mounted a bundle without the new CA {new.subject}",
                        switch_at=window_end)
