"""The bootstrap's tenancy config, the name-constrained CA, and the namespaces it labels."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from iflearner.bootstrap.tenancy import (
    TenancyConfigError,
    labelled_namespaces,
    namespace_labels,
    tenancy_settings,
)
from iflearner.desired import ClusterSettings
from iflearner.tlsresources import issue_ca, issue_leaf


def _config(**values: object) -> tuple:
    return (lambda key: values.get(key)), (lambda key: values.get(key))


def test_config_becomes_the_operators_settings():
    values = tenancy_settings(*_config(podSecurity="restricted", jobDomains=["server.iflearner.com"],
                                       jobServiceAccounts=["default", "trainer"],
                                       refusedPeerNetworks=["10.96.0.0/16"], allowedPeerNetworks=["10.96.200.0/24"]))
    settings = ClusterSettings(**values)
    assert settings.pod_security == "restricted"
    assert settings.job_domains == ("server.iflearner.com",)
    assert settings.job_service_accounts == ("default", "trainer")
    assert tenancy_settings(*_config()) == {}  # unset: the defaults (baseline, [default], any host)


def test_a_string_where_a_list_belongs_says_how_to_set_it():
    with pytest.raises(TenancyConfigError, match=r"iflearner:jobDomains must be a list.*--path"):
        tenancy_settings(*_config(jobDomains="server.iflearner.com"))


def test_job_namespaces_get_the_pod_security_labels_but_not_the_operators_own():
    assert namespace_labels("baseline") == {"pod-security.kubernetes.io/enforce": "baseline",
                                            "pod-security.kubernetes.io/enforce-version": "latest",
                                            "gateway.iflearner.git.iflytek.com/served": "true"}
    assert labelled_namespaces(("default", "ml", "iflearner-system"), "iflearner-system") == ["default", "ml"]
    assert labelled_namespaces(("*",), "iflearner-system") == []


def _verify(ca_pem: str, leaf_pem: str, host: str) -> None:
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    verifier = (PolicyBuilder().store(Store([ca])).time(datetime.datetime.now(datetime.UTC))
                .build_server_verifier(x509.DNSName(host)))
    verifier.verify(leaf, [])


def test_a_name_constrained_ca_cannot_issue_outside_the_job_domains():
    ca = issue_ca("test CA", 24, ["server.iflearner.com"])
    inside = issue_leaf(ca["cert_pem"], ca["private_key_pem"], "job1.server.iflearner.com",
                        ["job1.server.iflearner.com"], 1)
    _verify(ca["cert_pem"], inside["cert_pem"], "job1.server.iflearner.com")
    # Signed with the CA's own key, and still refused by every client that checks the chain.
    outside = issue_leaf(ca["cert_pem"], ca["private_key_pem"], "s3.amazonaws.com", ["s3.amazonaws.com"], 1)
    with pytest.raises(VerificationError, match="(?i)name constraint|subtree"):
        _verify(ca["cert_pem"], outside["cert_pem"], "s3.amazonaws.com")
    unconstrained = issue_ca("old CA", 24)
    other = issue_leaf(unconstrained["cert_pem"], unconstrained["private_key_pem"], "x.example.org",
                       ["x.example.org"], 1)
    _verify(unconstrained["cert_pem"], other["cert_pem"], "x.example.org")
