"""When a job certificate must be renewed: pure functions of the certificate and a time.

Both sides use these: the controller (to decide that a job needs a Pulumi run,
and when to look again) and the certificate's dynamic provider (whose diff
replaces a certificate that has reached its renewal point). They agree
because they read the same certificate and apply the same rule:

    renewal time = notBefore + fraction x (notAfter - notBefore)

with ``fraction`` 2/3 by default, as cert-manager and kubelet client
certificates do, so a certificate is renewed with a third of its life left
and a failed renewal has that third to be retried in.

No I/O and no clock here: time comes in as ``now``. Only public certificate
fields are read; a private key never comes near this module.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509

DEFAULT_RENEWAL_FRACTION = 2 / 3
# A certificate is back-dated a little for clocks that run behind; the
# back-dating counts toward its lifetime, so it stays small for short ones.
MAX_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class CertificateTimes:
    """The public facts of a served certificate that renewal needs."""

    serial: str  # hex
    not_before: datetime.datetime
    not_after: datetime.datetime
    issuer: str = ""  # the issuing CA's common name (which CA of a rotation signed it)

    @property
    def lifetime(self) -> datetime.timedelta:
        return self.not_after - self.not_before


def check_fraction(fraction: float) -> float:
    """``fraction`` if it is a usable renewal point (strictly between 0 and 1)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the certificate renewal fraction must be between 0 and 1 (exclusive), got {fraction}")
    return fraction


def backdate(validity: datetime.timedelta) -> datetime.timedelta:
    """How far before issuing a certificate's notBefore lies: 5 min, or a tenth of a short validity."""
    return min(MAX_BACKDATE, validity / 10)


def certificate_times(cert_pem: str) -> CertificateTimes | None:
    """The serial and validity of the first certificate in ``cert_pem`` (None when it is not one)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except (ValueError, TypeError):
        return None
    names = cert.issuer.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    issuer = str(names[0].value) if names else cert.issuer.rfc4514_string()
    return CertificateTimes(format(cert.serial_number, "x"), cert.not_valid_before_utc, cert.not_valid_after_utc,
                            issuer)


def renewal_time(times: CertificateTimes, fraction: float = DEFAULT_RENEWAL_FRACTION) -> datetime.datetime:
    """When ``times``' certificate enters its renewal window."""
    return times.not_before + times.lifetime * check_fraction(fraction)


def renewal_due(times: CertificateTimes, now: datetime.datetime, fraction: float = DEFAULT_RENEWAL_FRACTION) -> bool:
    """Whether the certificate must be replaced at ``now`` (also true once it has expired).

    Never for a certificate without a lifetime (notAfter at or before
    notBefore: issued under a CA that has expired): a new one would be no
    better, and renewing it would loop; the CA must be renewed first.
    """
    if times.lifetime.total_seconds() <= 0:
        return False
    return now >= renewal_time(times, fraction)


def seconds_until_renewal(
    times: CertificateTimes, now: datetime.datetime, fraction: float = DEFAULT_RENEWAL_FRACTION
) -> float:
    """Seconds from ``now`` to the renewal time (0 when already due): when to requeue the job."""
    return max(0.0, (renewal_time(times, fraction) - now).total_seconds())
