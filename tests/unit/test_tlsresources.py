from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from iflearner.tlsresources import issue_ca, issue_leaf


def test_leaf_is_signed_by_ca_for_the_host_only():
    ca = issue_ca("test CA", 24)
    leaf = issue_leaf(ca["cert_pem"], ca["private_key_pem"], "job1.server.iflearner.com",
                      ["job1.server.iflearner.com"], 48)
    ca_cert = x509.load_pem_x509_certificate(ca["cert_pem"].encode())
    cert = x509.load_pem_x509_certificate(leaf["cert_pem"].encode())
    cert.verify_directly_issued_by(ca_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["job1.server.iflearner.com"]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The leaf never outlives its CA.
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca_cert.public_key(), ec.EllipticCurvePublicKey)
    assert leaf["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
