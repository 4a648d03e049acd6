"""The signer: the only reader of the CA key keeps a job's certificate while it is right, else issues."""

from __future__ import annotations

import base64
import datetime

import pytest

from iflearner.controller.signer import JobCertificate, Signer, SignerError, reuse_problem
from iflearner.desired import CertificateRequest
from iflearner.tlsresources import issue_ca, issue_leaf

HOST = "job1.server.iflearner.com"
REQUEST = CertificateRequest(HOST, (HOST,), 24)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def ca():
    return issue_ca("iflearner-ca", 48)


@pytest.fixture(scope="module")
def leaf(ca):
    return issue_leaf(ca["cert_pem"], ca["private_key_pem"], HOST, [HOST], 24)


def test_a_matching_certificate_is_kept(ca, leaf):
    assert reuse_problem(leaf["cert_pem"], leaf["private_key_pem"], REQUEST, ca["cert_pem"], now()) is None


def test_a_certificate_of_another_ca_with_the_same_name_is_replaced(leaf):
    other = issue_ca("iflearner-ca", 48)  # same subject: only the signature tells them apart
    problem = reuse_problem(leaf["cert_pem"], leaf["private_key_pem"], REQUEST, other["cert_pem"], now())
    assert problem == "the served certificate was not issued by the issuing CA"


@pytest.mark.parametrize(("request_", "expected"), [
    (CertificateRequest("other.example.com", ("other.example.com",), 24), "the job's host changed"),
    (CertificateRequest(HOST, (HOST,), 48), "the requested certificate lifetime changed"),
    (CertificateRequest(HOST, (HOST,), 24, validity_seconds=600), "the requested certificate lifetime changed"),
])
def test_a_changed_request_is_reissued(ca, leaf, request_, expected):
    assert reuse_problem(leaf["cert_pem"], leaf["private_key_pem"], request_, ca["cert_pem"], now()) == expected


def test_a_certificate_due_for_renewal_is_replaced(ca, leaf):
    later = now() + datetime.timedelta(hours=17)  # 2/3 of 24 h (+ back-dating) have passed
    assert "is due for renewal" in reuse_problem(leaf["cert_pem"], leaf["private_key_pem"], REQUEST,
                                                 ca["cert_pem"], later)
    shorter = CertificateRequest(HOST, (HOST,), 24, renewal_fraction=0.9)
    assert reuse_problem(leaf["cert_pem"], leaf["private_key_pem"], shorter, ca["cert_pem"], later) is None


def test_a_key_that_is_not_the_certificates_is_replaced(ca, leaf):
    stranger = issue_leaf(ca["cert_pem"], ca["private_key_pem"], HOST, [HOST], 24)["private_key_pem"]
    assert reuse_problem(leaf["cert_pem"], stranger, REQUEST, ca["cert_pem"], now()) == \
        "the served key does not match the served certificate"
    assert reuse_problem(None, None, REQUEST, ca["cert_pem"], now()) == "the job serves no certificate yet"
    assert reuse_problem("junk", "junk", REQUEST, ca["cert_pem"], now()) == \
        "the served certificate or key is not valid PEM"


class SecretsApi:
    """Secrets by path, as the API server would answer GETs (and a log of what was read)."""

    def __init__(self):
        self.secrets = {}
        self.reads = []

    def put(self, namespace, name, pems):
        self.secrets[f"/api/v1/namespaces/{namespace}/secrets/{name}"] = {
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in pems.items()}}

    def get_or_none(self, path):
        self.reads.append(path)
        return self.secrets.get(path)


def test_the_signer_issues_keeps_and_reissues_after_a_ca_change(ca):
    api = SecretsApi()
    signer = Signer(api, "iflearner-system", "iflearner-ca")
    with pytest.raises(SignerError, match="iflearner-system/iflearner-ca does not exist: run the bootstrap"):
        signer.certificate_for(REQUEST, "default", "job-tls", now())
    api.put("iflearner-system", "iflearner-ca", {"tls.crt": ca["cert_pem"]})
    with pytest.raises(SignerError, match="has no PEM tls.crt and tls.key"):
        signer.certificate_for(REQUEST, "default", "job-tls", now())
    api.put("iflearner-system", "iflearner-ca", {"tls.crt": ca["cert_pem"], "tls.key": ca["private_key_pem"]})

    first = signer.certificate_for(REQUEST, "default", "job-tls", now())
    assert not first.reused and first.reason == "issued: the job serves no certificate yet"
    assert reuse_problem(first.cert_pem, first.key_pem, REQUEST, ca["cert_pem"], now()) is None
    assert ca["private_key_pem"] not in repr(first) and first.key_pem not in repr(first)

    api.put("default", "job-tls", first.secret_data)
    kept = signer.certificate_for(REQUEST, "default", "job-tls", now())
    assert kept.reused and kept.secret_data == first.secret_data

    rotated = issue_ca("iflearner-ca", 48)
    api.put("iflearner-system", "iflearner-ca", {"tls.crt": rotated["cert_pem"], "tls.key": rotated["private_key_pem"]})
    renewed = signer.certificate_for(REQUEST, "default", "job-tls", now())
    assert renewed.reason == "issued: the served certificate was not issued by the issuing CA"
    assert reuse_problem(renewed.cert_pem, renewed.key_pem, REQUEST, rotated["cert_pem"], now()) is None


def test_a_job_certificate_never_prints_its_key():
    assert repr(JobCertificate("CERT", "SECRET-KEY", True, "kept")) == "JobCertificate(reused=True, reason='kept')"
