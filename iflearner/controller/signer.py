"""The one component that holds the cluster CA key: it signs job certificates for job stacks.

Job stacks used to read the CA Secret themselves (``Secret.get``) and sign in
a dynamic provider, so the CA private key was an input of every job's stack:
in its state (encrypted with the stack passphrase) and in the memory of every
Pulumi run. Anyone with the state backend and the passphrase could mint a
certificate for any federation host.

Now the controller asks this signer for the job's certificate before each
``up`` and hands the stack only the result: the job's own certificate and
key (which the stack writes into the job's TLS Secret, and keeps in its state
as a secret). The CA Secret is read here and nowhere else in the operator.

The signer re-uses the certificate the job already serves when it is still
right (:func:`reuse_problem`: same names, same requested lifetime, signed by
the current CA, not due for renewal, key matching), so an ``up`` that changes
something else leaves the TLS Secret as it is; otherwise it issues a new one.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from iflearner.certrenewal import backdate, certificate_times, renewal_due
from iflearner.controller.carotation import ISSUING_KEYS
from iflearner.controller.kubeapi import KubeApi, object_path
from iflearner.desired import CertificateRequest
from iflearner.tlsresources import issue_leaf

# How far a served certificate's lifetime may differ from the requested one
# (clock rounding) and still count as "the lifetime the job asks for".
LIFETIME_TOLERANCE = datetime.timedelta(seconds=2)


class SignerError(Exception):
    """The signer cannot issue (no CA Secret, or one without a usable certificate and key)."""


@dataclass(frozen=True)
class JobCertificate:
    """A job's certificate and private key (PEM), and why the signer chose it."""

    cert_pem: str
    key_pem: str
    reused: bool
    reason: str

    @property
    def secret_data(self) -> dict[str, str]:
        """The job's TLS Secret content (what the job's stack declares)."""
        return {"tls.crt": self.cert_pem, "tls.key": self.key_pem}

    def __repr__(self) -> str:  # never the key, whoever prints this
        return f"JobCertificate(reused={self.reused}, reason={self.reason!r})"


def _pem(data: Mapping[str, Any] | None, key: str) -> str | None:
    encoded = (data or {}).get(key)
    if not isinstance(encoded, str):
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, ValueError):
        return None


def _public_der(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo))


def requested_lifetime(request: CertificateRequest) -> datetime.timedelta:
    validity = (datetime.timedelta(seconds=request.validity_seconds) if request.validity_seconds
                else datetime.timedelta(hours=request.validity_hours))
    return validity + backdate(validity)


def reuse_problem(cert_pem: str | None, key_pem: str | None, request: CertificateRequest, ca_cert_pem: str,
                  now: datetime.datetime) -> str | None:
    """Why the served certificate cannot be kept (None: it can). Pure: reads only its arguments."""
    if not cert_pem or not key_pem:
        return "the job serves no certificate yet"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    except (ValueError, TypeError):
        return "the served certificate or key is not valid PEM"
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        return "the served key does not match the served certificate"
    if cert.issuer != ca.subject:
        return "the served certificate was not issued by the issuing CA"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "the served certificate was not issued by the issuing CA"
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    common = [a.value for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]
    if tuple(names) != tuple(request.dns_names) or common != [request.common_name]:
        return "the job's host changed"
    times = certificate_times(cert_pem)
    assert times is not None  # it loaded above
    clipped = times.not_after == ca.not_valid_after_utc
    if not clipped and abs(times.lifetime - requested_lifetime(request)) > LIFETIME_TOLERANCE:
        return "the requested certificate lifetime changed"
    if renewal_due(times, now, request.renewal_fraction):
        return f"the certificate (serial {times.serial}) is due for renewal"
    return None


class Signer:
    """Signs job certificates with the CA Secret in the operator namespace (read per request, never cached)."""

    def __init__(self, api: KubeApi, namespace: str, ca_secret_name: str) -> None:
        self.api = api
        self.namespace = namespace
        self.ca_secret_name = ca_secret_name

    def _secret_data(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        secret = self.api.get_or_none(object_path("/api/v1", "secrets", namespace, name))
        return (secret or {}).get("data") if secret is not None else None

    def certificate_for(self, request: CertificateRequest, namespace: str, tls_secret: str,
                        now: datetime.datetime, keys: tuple[str, str] = ISSUING_KEYS) -> JobCertificate:
        """The certificate the job's stack should write into its TLS Secret ``namespace/tls_secret``,
        signed by the CA under ``keys`` of the CA Secret (the retiring one during a rotation's
        overlap: :mod:`iflearner.controller.carotation`)."""
        ca = self._secret_data(self.namespace, self.ca_secret_name)
        ca_cert, ca_key = _pem(ca, keys[0]), _pem(ca, keys[1])
        if ca is None:
            raise SignerError(f"the CA Secret {self.namespace}/{self.ca_secret_name} does not exist: run the "
                              "bootstrap (`pulumi up`) that creates it")
        if not ca_cert or not ca_key:
            raise SignerError(f"the CA Secret {self.namespace}/{self.ca_secret_name} has no PEM {keys[0]} and "
                              f"{keys[1]}")
        served = self._secret_data(namespace, tls_secret)
        cert_pem, key_pem = _pem(served, "tls.crt"), _pem(served, "tls.key")
        problem = reuse_problem(cert_pem, key_pem, request, ca_cert, now)
        if problem is None and cert_pem and key_pem:
            return JobCertificate(cert_pem, key_pem, True, "the served certificate is kept")
        try:
            issued = issue_leaf(ca_cert, ca_key, request.common_name, list(request.dns_names),
                                request.validity_hours, request.validity_seconds)
        except (ValueError, TypeError) as error:
            raise SignerError(f"the CA Secret {self.namespace}/{self.ca_secret_name} cannot sign: "
                              f"{type(error).__name__}") from None
        return JobCertificate(issued["cert_pem"], issued["private_key_pem"], False, f"issued: {problem}")
