"""Every name and key derived from a job fits the limit of the place it goes, or the job is refused with
the field named: the CoreDNS zone key (a ConfigMap key, 253), the certificate's common name (X.509, 64),
Event names (253), object names and label values (63)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from iflearner.controller.events import event_name
from iflearner.desired import ClusterSettings, desired_resources, job_names, zone_file_key
from iflearner.job import MAX_HOST, InvalidJobError, parse_job
from iflearner.tlsresources import issue_ca, issue_leaf

CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
SETTINGS = ClusterSettings(ingress_address="10.0.0.1")


def host_of_length(length: int) -> str:
    """A valid FQDN of exactly ``length`` characters (labels of 63, then the rest)."""
    labels, left = [], length
    while left > 0:
        size = min(63, left if not labels or left <= 63 else 63)
        if left - size == 1:  # a trailing label needs a dot and one character at least
            size -= 1
        labels.append("a" * size)
        left -= size + 1
    host = ".".join(labels)
    assert len(host) == length and "." in host
    return host


def manifest(host: str, name: str = "job", peers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"role": "server", "host": host,
                            "template": {"spec": {"containers": [{"name": "c", "image": "img"}]}}}
    if peers is not None:
        spec["peers"] = peers
    return {"apiVersion": "git.iflytek.com/v1", "kind": "IflearnerJob",
            "metadata": {"name": name, "namespace": "ns", "uid": "u-1"}, "spec": spec}


@pytest.mark.parametrize("length", [251, 253])
def test_a_host_too_long_for_its_zone_key_is_refused_naming_the_field(length: int) -> None:
    with pytest.raises(InvalidJobError) as caught:
        parse_job(manifest(host_of_length(length)))
    (problem,) = caught.value.problems
    assert problem.field == "spec.host"
    assert f"at most {MAX_HOST} characters" in problem.message and "db.<host>" in problem.message


def test_a_peer_host_too_long_is_refused_naming_the_peer() -> None:
    peers = [{"host": host_of_length(252), "address": "10.1.1.1"}]
    with pytest.raises(InvalidJobError) as caught:
        parse_job(manifest("job.server.iflearner.com", peers=peers))
    assert [p.field for p in caught.value.problems] == ["spec.peers[0].host"]


def test_the_longest_host_accepted_gives_legal_zone_keys() -> None:
    host = host_of_length(MAX_HOST)
    peer = host_of_length(MAX_HOST - 2) + ".b"
    desired = desired_resources(parse_job(manifest(host, peers=[{"host": peer, "address": "10.1.1.1"}])),
                                SETTINGS)
    assert set(desired.dns_zone_files) == {zone_file_key(host), zone_file_key(peer)}
    for key in desired.dns_zone_files:
        assert len(key) <= 253 and CONFIGMAP_KEY.fullmatch(key)


def test_a_long_host_gets_a_certificate_with_the_host_in_its_subject_alt_name() -> None:
    host = host_of_length(200)
    desired = desired_resources(parse_job(manifest(host)), SETTINGS)
    request = desired.certificate
    assert len(request.common_name) <= 64 and request.dns_names == (host,)
    # Before the bound the common name was the host, and signing failed on every retry.
    ca = issue_ca("test CA", 1)
    leaf = issue_leaf(ca["cert_pem"], ca["private_key_pem"], request.common_name, list(request.dns_names), 1)
    assert "BEGIN CERTIFICATE" in leaf["cert_pem"]


def test_short_hosts_keep_their_common_name() -> None:
    desired = desired_resources(parse_job(manifest("job1.server.iflearner.com")), SETTINGS)
    assert desired.certificate.common_name == "job1.server.iflearner.com"


def test_the_longest_job_name_gives_bounded_object_names_and_event_names() -> None:
    name = ("a" * 62 + ".") * 4 + "b"
    assert len(name) == 253
    job = parse_job(manifest("job.server.iflearner.com", name=name))
    names = job_names(job)
    for value in (names.pod, names.service, names.ingress, names.gateway, names.route):
        assert len(value) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", value)
    for value in (names.tls_secret, names.trust_configmap):
        assert len(value) <= 253 and DNS_SUBDOMAIN.fullmatch(value)
    desired = desired_resources(job, SETTINGS)
    for label_value in desired.labels.values():
        assert len(label_value) <= 63
    event = event_name(name, 0x187a1b2c3d4e5f60)
    assert len(event) <= 253 and DNS_SUBDOMAIN.fullmatch(event)
    assert event_name("short", 255) == "short.ff"


@pytest.mark.parametrize(("where", "value"), [("volumeMounts", "bad"), ("volumeMounts", ["bad"]),
                                              ("volumes", "bad"), ("volumes", {"name": "v"})])
def test_volume_lists_of_the_wrong_type_are_refused_not_mangled(where: str, value: object) -> None:
    job = manifest("job.a.party.iflearner.com")
    job["spec"]["role"] = "client"  # a client's Pod gets the trust files added to these lists
    if where == "volumes":
        job["spec"]["template"]["spec"]["volumes"] = value
        field = "spec.template.spec.volumes"
    else:
        job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = value
        field = "spec.template.spec.containers[0].volumeMounts"
    with pytest.raises(InvalidJobError) as caught:
        parse_job(job)
    assert [p.field for p in caught.value.problems] == [field]
    assert "must be a list of" in caught.value.problems[0].message
