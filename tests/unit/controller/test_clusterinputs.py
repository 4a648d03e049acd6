"""Digests of the CA Secret and the trust bundle: what they cover, and that no key is cached."""

from __future__ import annotations

import base64
import copy
import datetime

from iflearner.controller.carotation import IssuerChoice, choose_issuer
from iflearner.controller.clusterinputs import (
    CA_FACTS_KEY,
    ca_transform,
    changed,
    digest_of,
    stack_inputs,
    trust_transform,
)
from iflearner.controller.gating import fingerprint
from iflearner.desired import ClusterSettings, desired_resources
from iflearner.job import parse_job
from iflearner.tlsresources import issue_ca

SETTINGS = ClusterSettings()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _secret(cert: str, key: str) -> dict:
    return {"kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "iflearner-ca"},
            "data": {"tls.crt": _b64(cert), "tls.key": _b64(key)}}


def _trust(server: str, party: str) -> dict:
    return {"kind": "ConfigMap", "metadata": {"name": "iflearner-trust"},
            "data": {"server.crt": server, "party.crt": party}}


def _job(role: str):
    return parse_job({"apiVersion": "git.iflytek.com/v1", "kind": "IflearnerJob",
                      "metadata": {"name": f"j-{role}", "namespace": "default"},
                      "spec": {"role": role, "host": f"{role}.example.com",
                               "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}})


def test_ca_digest_covers_the_certificate_and_drops_the_key():
    cached = ca_transform(_secret("CERT-1", "SECRET-KEY"))
    assert "data" not in cached and "SECRET-KEY" not in repr(cached) and _b64("SECRET-KEY") not in repr(cached)
    assert digest_of(cached) == digest_of(ca_transform(_secret("CERT-1", "OTHER-KEY")))
    assert digest_of(cached) != digest_of(ca_transform(_secret("CERT-2", "SECRET-KEY")))
    assert digest_of(None) is None


def test_trust_digest_covers_both_bundles():
    one = trust_transform(_trust("S", "P"))
    assert "data" not in one
    assert digest_of(one) != digest_of(trust_transform(_trust("S", "P + peer CA")))
    assert digest_of(one) != digest_of(trust_transform(_trust("S + new CA", "P")))
    assert not changed(one, trust_transform(_trust("S", "P")))
    assert changed(one, trust_transform(_trust("S", "P2"))) and changed(None, one) and changed(one, None)


def _issuer(cert_pem: str) -> IssuerChoice:
    cas = ca_transform(_secret(cert_pem, "K"))[CA_FACTS_KEY]
    return choose_issuer(cas, [], datetime.timedelta(days=7), datetime.datetime.now(datetime.UTC))


def test_fingerprint_covers_what_each_role_reads():
    ca, ca2 = _issuer(issue_ca("one", 24)["cert_pem"]), _issuer(issue_ca("two", 24)["cert_pem"])
    trust, trust2 = trust_transform(_trust("S", "P")), trust_transform(_trust("S", "P2"))
    for role in ("server", "client"):
        desired = desired_resources(_job(role), SETTINGS)
        reads_trust = desired.trust_configmap is not None
        assert reads_trust == (role == "client")
        base = fingerprint(desired, SETTINGS, stack_inputs(ca, trust, reads_trust))
        assert base == fingerprint(desired, SETTINGS, stack_inputs(copy.deepcopy(ca), trust, reads_trust))
        assert base != fingerprint(desired, SETTINGS, stack_inputs(ca2, trust, reads_trust)), role
        after_trust = fingerprint(desired, SETTINGS, stack_inputs(ca, trust2, reads_trust))
        assert (after_trust != base) == reads_trust, role
