"""Certificates as Pulumi resources, issued with ``cryptography``.

The pulumi-tls provider cannot be built here (the Go module proxy serves
neither pulumi-tls' provider module nor terraform-provider-tls), so the
certificate authority and the job certificates are Pulumi dynamic resources.
They run in the real Pulumi engine like any provider: created once, kept in
the stack's state (private keys as encrypted secrets), replaced when an input
changes, and removed on destroy. Key material lives only in state and in the
Kubernetes Secrets the programs write.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

from iflearner.certrenewal import DEFAULT_RENEWAL_FRACTION, backdate, certificate_times, renewal_due

_SECRET_OUTPUTS = ["private_key_pem"]


def _new_key_pem() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key, pem


def _validity(validity: datetime.timedelta) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now - backdate(validity), now + validity


def issue_ca(common_name: str, validity_hours: int, permitted_domains: Sequence[str] = ()) -> dict[str, str]:
    """A self-signed CA certificate and its key, as PEM. With ``permitted_domains``, X.509 name
    constraints: every certificate it signs must name hosts under them (clients check), so even
    its key cannot issue for any other name."""
    key, key_pem = _new_key_pem()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(datetime.timedelta(hours=validity_hours))
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if permitted_domains:
        builder = builder.add_extension(x509.NameConstraints(
            permitted_subtrees=[x509.DNSName(d) for d in permitted_domains], excluded_subtrees=None), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    return {"cert_pem": cert.public_bytes(serialization.Encoding.PEM).decode(), "private_key_pem": key_pem}


def issue_leaf(
    ca_cert_pem: str, ca_key_pem: str, common_name: str, dns_names: Sequence[str], validity_hours: int,
    validity_seconds: int | None = None,
) -> dict[str, str]:
    """A server certificate for ``dns_names`` signed by the CA, and its key.

    ``validity_seconds``, when given, overrides ``validity_hours`` (short
    lifetimes, for tests of renewal).
    """
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    key, key_pem = _new_key_pem()
    validity = (datetime.timedelta(seconds=validity_seconds) if validity_seconds
                else datetime.timedelta(hours=validity_hours))
    not_before, not_after = _validity(validity)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return {"cert_pem": cert.public_bytes(serialization.Encoding.PEM).decode(), "private_key_pem": key_pem}


def _replace_on_any_change(olds: dict[str, Any], news: dict[str, Any], keys: Sequence[str]) -> DiffResult:
    changed = [k for k in keys if olds.get(k) != news.get(k)]
    return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)


class _CaProvider(ResourceProvider):
    # permitted_domains is not among them: a CA is never replaced for its name constraints (every
    # job certificate and trust bundle would change at once); the next rotation's CA has them.
    _inputs = ("common_name", "validity_hours")

    def create(self, props: dict[str, Any]) -> CreateResult:
        issued = issue_ca(props["common_name"], int(props["validity_hours"]), props.get("permitted_domains") or ())
        return CreateResult(id_=props["common_name"], outs={**props, **issued})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return _replace_on_any_change(olds, news, self._inputs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


class _LeafProvider(ResourceProvider):
    # renewal_fraction is not among them: changing it moves the renewal time,
    # not the certificate.
    _inputs = ("ca_cert_pem", "ca_key_pem", "common_name", "dns_names", "validity_hours", "validity_seconds")

    def create(self, props: dict[str, Any]) -> CreateResult:
        seconds = props.get("validity_seconds")
        issued = issue_leaf(
            props["ca_cert_pem"], props["ca_key_pem"], props["common_name"],
            list(props["dns_names"]), int(props["validity_hours"]), int(seconds) if seconds else None,
        )
        outs = {k: v for k, v in props.items() if k != "ca_key_pem"}
        return CreateResult(id_=props["common_name"], outs={**outs, **issued})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # The CA key is not kept in outputs; a new CA shows in its certificate.
        result = _replace_on_any_change(olds, news, [k for k in self._inputs if k != "ca_key_pem"])
        if result.changes:
            return result
        # Renewal: the certificate in state has reached its renewal point (the
        # same rule the controller used to start this run), so it is replaced
        # although no input changed.
        times = certificate_times(str(olds.get("cert_pem") or ""))
        fraction = float(news.get("renewal_fraction") or DEFAULT_RENEWAL_FRACTION)
        if times is not None and renewal_due(times, datetime.datetime.now(datetime.UTC), fraction):
            return DiffResult(changes=True, replaces=["cert_pem"], delete_before_replace=False)
        return result

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)


class CertificateAuthority(Resource):
    """A self-signed CA: outputs ``cert_pem`` and the secret ``private_key_pem``."""

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]

    def __init__(
        self, name: str, common_name: pulumi.Input[str], validity_hours: pulumi.Input[int],
        permitted_domains: Sequence[str] = (), opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_SECRET_OUTPUTS))
        props: dict[str, Any] = {"common_name": common_name, "validity_hours": validity_hours,
                                 "cert_pem": None, "private_key_pem": None}
        if permitted_domains:
            # Only when set: CAs made before name constraints keep their inputs as they were.
            props["permitted_domains"] = list(permitted_domains)
        super().__init__(_CaProvider(), name, props, opts)


class SignedCertificate(Resource):
    """A key and a certificate for ``dns_names`` signed by a CA."""

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]

    def __init__(
        self, name: str, *, ca_cert_pem: pulumi.Input[str], ca_key_pem: pulumi.Input[str],
        common_name: pulumi.Input[str], dns_names: pulumi.Input[Sequence[str]],
        validity_hours: pulumi.Input[int], validity_seconds: pulumi.Input[int] | None = None,
        renewal_fraction: pulumi.Input[float] = DEFAULT_RENEWAL_FRACTION,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=_SECRET_OUTPUTS))
        props: dict[str, Any] = {
            "ca_cert_pem": ca_cert_pem, "ca_key_pem": pulumi.Output.secret(ca_key_pem),
            "common_name": common_name, "dns_names": dns_names, "validity_hours": validity_hours,
            "renewal_fraction": renewal_fraction, "cert_pem": None, "private_key_pem": None,
        }
        if validity_seconds:
            # Only when set: stacks written before it existed keep their certificate.
            props["validity_seconds"] = validity_seconds
        super().__init__(_LeafProvider(), name, props, opts)
