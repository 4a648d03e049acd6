"""Certificate renewal in the controller: pure decisions on the certificate a job serves.

The informer keeps, for each job's TLS Secret, only the public facts of its
certificate (serial, notBefore, notAfter: :func:`summarize_tls_secret`); the
private key is dropped before anything is cached. From that and ``now``:

- :func:`gate` turns a "nothing changed, skip Pulumi" decision into a run
  when the certificate has reached its renewal time (the run's certificate
  resource sees the same and replaces the certificate);
- :func:`requeue_after` brings the job back at its renewal time, so renewal
  never waits for a resync;
- :func:`certificate_status` is what ``status.certificate`` says.

Everything here is pure.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Mapping
from typing import Any

from iflearner.certrenewal import CertificateTimes, certificate_times, renewal_due, renewal_time, seconds_until_renewal
from iflearner.controller.gating import Decision
from iflearner.controller.status import parse_time, rfc3339

# Where the informer keeps the summary in a cached TLS Secret (the data is dropped).
SUMMARY_KEY = "iflearnerCertificate"
# The requeue lands a little after the renewal time, never just before it.
REQUEUE_MARGIN = 0.2


def summarize_tls_secret(data: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Serial and validity of ``tls.crt`` in a Secret's (base64) data; None without one."""
    encoded = (data or {}).get("tls.crt")
    if not isinstance(encoded, str):
        return None
    try:
        pem = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, ValueError):
        return None
    times = certificate_times(pem)
    if times is None:
        return None
    return {"serial": times.serial, "notBefore": rfc3339(times.not_before), "notAfter": rfc3339(times.not_after),
            "issuer": times.issuer}


def served_certificate(secret: Mapping[str, Any] | None) -> CertificateTimes | None:
    """The certificate a cached TLS Secret serves (None when there is none yet)."""
    summary = (secret or {}).get(SUMMARY_KEY)
    if not isinstance(summary, Mapping):
        return None
    not_before, not_after = parse_time(summary.get("notBefore")), parse_time(summary.get("notAfter"))
    if not_before is None or not_after is None:
        return None
    return CertificateTimes(str(summary.get("serial") or ""), not_before, not_after, str(summary.get("issuer") or ""))


def gate(decision: Decision, served: CertificateTimes | None, now: datetime.datetime, fraction: float) -> Decision:
    """``decision``, or a run when it would skip Pulumi and the served certificate is due."""
    if decision.should_run or served is None or not renewal_due(served, now, fraction):
        return decision
    due = rfc3339(renewal_time(served, fraction))
    return Decision(True, f"the certificate (serial {served.serial}) is due for renewal since {due}, "
                          f"expires {rfc3339(served.not_after)}")


def requeue_after(
    current: float | None, served: CertificateTimes | None, now: datetime.datetime, fraction: float
) -> float | None:
    """The sooner of ``current`` and the served certificate's renewal time (seconds from now).

    A certificate that is already due adds nothing: this pass ran (or is
    backing off from) its renewal, and a requeue "now" would spin while a
    failed renewal waits for its backoff.
    """
    if served is None or renewal_due(served, now, fraction) or served.lifetime.total_seconds() <= 0:
        return current
    at = seconds_until_renewal(served, now, fraction) + REQUEUE_MARGIN
    return at if current is None else min(current, at)


def certificate_status(served: CertificateTimes | None, fraction: float) -> dict[str, str] | None:
    """``status.certificate``: what is served and when it is renewed (public facts only)."""
    if served is None:
        return None
    return {
        "serial": served.serial,
        "notBefore": rfc3339(served.not_before),
        "notAfter": rfc3339(served.not_after),
        "renewalTime": rfc3339(renewal_time(served, fraction)),
        **({"issuer": served.issuer} if served.issuer else {}),
    }


def with_certificate(status: dict[str, Any], served: CertificateTimes | None, fraction: float) -> dict[str, Any]:
    """``status`` with its ``certificate`` field set (or removed when nothing is served)."""
    value = certificate_status(served, fraction)
    if value is None:
        status.pop("certificate", None)
    else:
        status["certificate"] = value
    return status
