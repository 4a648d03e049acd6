"""Certificates for the local control plane: a CA, the API server's serving
certificate, an admin client certificate and the service-account key pair; and,
apart, etcd's own CA, its serving certificate and the API server's client
certificate for it (as kubeadm does: a certificate of the cluster CA, the
admin's or a kubelet's, must not open etcd).

Generated once per data directory with ``cryptography``; the keys stay in that
directory (mode 0600) and never leave the machine.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
SERVICE_IP = "10.96.0.1"


@dataclass(frozen=True)
class Pki:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    usage: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _serving_ips(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def _issue_serving(pki: Pki, extra_ips: tuple[str, ...]) -> None:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    serving_key = _key()
    ips = ["127.0.0.1", SERVICE_IP, *extra_ips]
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)),
    ]
    serving = _issue(
        _name("kube-apiserver"), serving_key, ca.subject, ca_key,  # type: ignore[arg-type]
        usage=[ExtendedKeyUsageOID.SERVER_AUTH], sans=sans,
    )
    _write_key(pki.serving_key, serving_key)
    pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))


def client_cert(pki: Pki, name: str, common_name: str, organization: str | None = None) -> tuple[Path, Path]:
    """A client certificate of the cluster CA (e.g. the kubelet's
    ``system:node:<node>`` in ``system:nodes``), made once; (cert, key)."""
    cert_path, key_path = pki.directory / f"{name}.crt", pki.directory / f"{name}.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = _key()
    cert = _issue(_name(common_name, organization), key, ca.subject, ca_key,  # type: ignore[arg-type]
                  usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def serving_cert(pki: Pki, name: str, ips: tuple[str, ...]) -> tuple[Path, Path]:
    """A server certificate of the cluster CA for ``ips`` (e.g. the node registry's), reissued
    when an earlier one names other addresses; (cert, key)."""
    cert_path, key_path = pki.directory / f"{name}.crt", pki.directory / f"{name}.key"
    if cert_path.exists() and key_path.exists() and _serving_ips(cert_path) == set(ips):
        return cert_path, key_path
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = _key()
    cert = _issue(_name(name), key, ca.subject, ca_key,  # type: ignore[arg-type]
                  usage=[ExtendedKeyUsageOID.SERVER_AUTH],
                  sans=[x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips])
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def ensure_pki(directory: Path, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Create the local cluster's certificates unless they already exist. The
    API server's certificate also names ``extra_ips`` (the real node's bridge
    address); it is reissued when an earlier one lacks them."""
    pki = Pki(directory)
    if pki.sa_pub.exists():
        if not set(extra_ips) <= _serving_ips(pki.serving_cert):
            _issue_serving(pki, extra_ips)
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key = _key()
    ca_name = _name("iflearner-local-cluster-ca")
    ca = _issue(ca_name, ca_key, ca_name, ca_key, is_ca=True)
    _write_key(pki.ca_key, ca_key)
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    _issue_serving(pki, extra_ips)

    admin_key = _key()
    admin = _issue(
        _name("iflearner-local-admin", "system:masters"), admin_key, ca_name, ca_key,
        usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    _write_key(pki.admin_key, admin_key)
    pki.admin_cert.write_bytes(admin.public_bytes(serialization.Encoding.PEM))

    sa_key = _key()
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


@dataclass(frozen=True)
class EtcdPki:
    """etcd's CA, whose only client certificate is the API server's."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def apiserver_client_cert(self) -> Path:
        return self.directory / "apiserver-etcd-client.crt"

    @property
    def apiserver_client_key(self) -> Path:
        return self.directory / "apiserver-etcd-client.key"


def ensure_etcd_pki(pki: Pki) -> EtcdPki:
    """etcd's certificates under the cluster's PKI directory, made once. The serving certificate
    also serves the (single-member) peer listener, so it can authenticate as a client too."""
    etcd = EtcdPki(pki.directory / "etcd")
    if etcd.apiserver_client_key.exists():
        return etcd
    etcd.directory.mkdir(parents=True, exist_ok=True)
    etcd.directory.chmod(0o700)
    ca_key = _key()
    ca_name = _name("iflearner-local-etcd-ca")
    ca = _issue(ca_name, ca_key, ca_name, ca_key, is_ca=True)
    etcd.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_key = _key()
    server = _issue(_name("etcd"), server_key, ca_name, ca_key,
                    usage=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                    sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    _write_key(etcd.server_key, server_key)
    etcd.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    client_key = _key()
    client = _issue(_name("kube-apiserver-etcd-client"), client_key, ca_name, ca_key,
                    usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    etcd.apiserver_client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    _write_key(etcd.apiserver_client_key, client_key)  # last: its presence means all are made
    return etcd
