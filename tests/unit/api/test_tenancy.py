"""The tenancy policy, pure: Pod Security levels, service accounts, job domains, peer addresses,
host ownership between namespaces."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from iflearner.api import tenancy
from iflearner.api.podsecurity import Level, violations
from iflearner.desired import ClusterSettings
from iflearner.job import parse_job
from iflearner.toolchain import REPO_ROOT

EXAMPLES = [REPO_ROOT / "examples" / n for n in ("server.yaml", "party-a.yaml", "party-b.yaml")] + \
    [REPO_ROOT / "examples" / "federation" / n for n in ("server.yaml", "party-a.yaml", "party-b.yaml")]
FEDERATION = ClusterSettings(job_domains=("server.iflearner.com", "a.party.iflearner.com", "b.party.iflearner.com"))


def manifest(namespace: str = "team-a", name: str = "job1", **spec: Any) -> dict[str, Any]:
    job = yaml.safe_load((REPO_ROOT / "examples" / "server.yaml").read_text())
    job["metadata"] = {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}"}
    job["spec"].update(spec)
    return job


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_original_and_federation_examples_meet_baseline_and_the_federation_domains(path):
    job = parse_job(yaml.safe_load(path.read_text()))
    assert tenancy.refusal(job, FEDERATION.tenancy_policy()) is None


def test_a_privileged_host_pid_pod_is_refused_naming_each_field():
    job = manifest()
    spec = pod_spec(job)
    spec.update(hostPID=True, hostNetwork=True, volumes=[{"name": "root", "hostPath": {"path": "/"}}])
    spec["containers"][0]["securityContext"] = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}}
    spec["containers"][0]["ports"] = [{"containerPort": 50001, "hostPort": 50001}]
    refused = tenancy.refusal(parse_job(job), ClusterSettings().tenancy_policy())
    assert refused is not None and refused.reason == "PodSecurity"
    fields = {p.field for p in refused.problems}
    assert fields == {"spec.template.spec.hostPID", "spec.template.spec.hostNetwork",
                      "spec.template.spec.volumes[0].hostPath",
                      "spec.template.spec.containers[0].securityContext.privileged",
                      "spec.template.spec.containers[0].securityContext.capabilities.add",
                      "spec.template.spec.containers[0].ports[0].hostPort"}
    assert "SYS_ADMIN" in next(p.message for p in refused.problems if p.field.endswith("capabilities.add"))
    assert tenancy.refusal(parse_job(job), ClusterSettings(pod_security="privileged").tenancy_policy()) is None


def test_restricted_asks_for_non_root_no_escalation_dropped_capabilities_and_seccomp():
    job = manifest()
    assert {p.field.rsplit(".", 1)[1] for p in violations(job["spec"]["template"], Level.RESTRICTED)} == {
        "allowPrivilegeEscalation", "runAsNonRoot", "type", "drop"}
    pod_spec(job)["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    pod_spec(job)["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False,
                                                         "capabilities": {"drop": ["ALL"]}}
    assert violations(job["spec"]["template"], Level.RESTRICTED) == ()


def test_service_accounts_are_limited_to_the_allow_list():
    job = manifest()
    pod_spec(job)["serviceAccountName"] = "deployer"
    refused = tenancy.refusal(parse_job(job), ClusterSettings().tenancy_policy())
    assert refused is not None and refused.reason == "ServiceAccountNotAllowed"
    assert refused.problems[0].field == "spec.template.spec.serviceAccountName"
    assert "'default'" in refused.problems[0].message
    allowed = ClusterSettings(job_service_accounts=("default", "deployer")).tenancy_policy()
    assert tenancy.refusal(parse_job(job), allowed) is None


def test_hosts_and_peer_hosts_must_lie_under_the_job_domains():
    job = manifest(host="job1.server.iflearner.com.evil.org",
                   peers=[{"host": "amazonaws.com", "address": "10.1.2.3"},
                          {"host": "job1.a.party.iflearner.com", "address": "10.1.2.4"}])
    refused = tenancy.refusal(parse_job(job), FEDERATION.tenancy_policy())
    assert refused is not None and refused.reason == "HostNotAllowed"
    assert [p.field for p in refused.problems] == ["spec.host", "spec.peers[0].host"]
    # A cluster bootstrapped before job domains: any host, as before.
    assert tenancy.refusal(parse_job(job), ClusterSettings().tenancy_policy()) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "0.0.0.0", "224.0.0.1", "10.96.0.10"])
def test_peer_addresses_on_this_machine_link_local_or_in_the_cluster_ranges_are_refused(address):
    settings = ClusterSettings(refused_peer_networks=("10.96.0.0/12", "10.244.0.0/16"))
    job = manifest(peers=[{"host": "job1.a.party.iflearner.com", "address": address}])
    refused = tenancy.refusal(parse_job(job), settings.tenancy_policy())
    assert refused is not None and refused.reason == "PeerAddressNotAllowed"
    assert refused.problems[0].field == "spec.peers[0].address"
    ok = manifest(peers=[{"host": "job1.a.party.iflearner.com", "address": "172.31.164.53"}])
    assert tenancy.refusal(parse_job(ok), settings.tenancy_policy()) is None


def test_an_allowed_network_lets_a_local_multi_cluster_setup_point_peers_at_its_gateways():
    settings = ClusterSettings(refused_peer_networks=("10.96.0.0/12",), allowed_peer_networks=("10.96.200.0/24",))
    job = manifest(peers=[{"host": "job1.a.party.iflearner.com", "address": "10.96.200.1"}])
    assert tenancy.refusal(parse_job(job), settings.tenancy_policy()) is None


def test_a_host_belongs_to_the_namespace_whose_job_claimed_it_first():
    holder = manifest("team-a", "job1")
    holder["metadata"]["creationTimestamp"] = "2026-12-01T00:00:00Z"
    same_ns = manifest("team-a", "job2")
    same_ns["metadata"]["creationTimestamp"] = "2026-12-02T00:00:00Z"
    intruder = manifest("team-b", "job1", peers=[{"host": "job9.server.iflearner.com", "address": "10.1.2.3"}])
    intruder["metadata"]["creationTimestamp"] = "2026-12-03T00:00:00Z"
    claims = [tenancy.claim_of(j) for j in (holder, same_ns, intruder)]
    policy = ClusterSettings().tenancy_policy()

    refused = tenancy.refusal(parse_job(intruder), policy, "2026-12-03T00:00:00Z", claims)
    assert refused is not None and refused.reason == "HostConflict"
    assert [p.field for p in refused.problems] == ["spec.host"]
    assert "team-a/job1" in refused.problems[0].message
    # Jobs of one namespace share a host; the first claimant keeps it.
    assert tenancy.refusal(parse_job(same_ns), policy, "2026-12-02T00:00:00Z", claims) is None
    assert tenancy.refusal(parse_job(holder), policy, "2026-12-01T00:00:00Z", claims) is None
    # A peer host is a claim too: a job of another namespace cannot serve a host another publishes.
    later = manifest("team-c", "job1", host="job9.server.iflearner.com")
    assert tenancy.refusal(parse_job(later), policy, "2026-12-04T00:00:00Z", claims).reason == "HostConflict"


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("pod_security", "root", "podSecurity must be one of"),
    ("job_domains", ("com",), "jobDomains: 'com'"),
    ("refused_peer_networks", ("10.96.0.0/33",), "refusedPeerNetworks: '10.96.0.0/33'"),
])
def test_bad_policy_settings_say_what_to_fix(setting, value, expected):
    with pytest.raises(ValueError, match=expected):
        ClusterSettings(**{setting: value})


def test_settings_from_yaml_lists_become_tuples():
    settings = ClusterSettings(job_domains=["server.iflearner.com"])  # type: ignore[arg-type]
    assert settings.job_domains == ("server.iflearner.com",)
    assert copy.deepcopy(settings) == settings


def test_a_namespace_cannot_publish_more_records_than_its_ceiling():
    policy = ClusterSettings(dns_records_per_namespace=3).tenancy_policy()
    first = manifest("team-a", "job1", host="job1.server.iflearner.com",
                     peers=[{"host": "job1.a.party.iflearner.com", "address": "10.1.2.3"}])
    first["metadata"]["creationTimestamp"] = "2026-12-01T00:00:00Z"
    second = manifest("team-a", "job2", host="job2.server.iflearner.com",
                      peers=[{"host": "job1.a.party.iflearner.com", "address": "10.1.2.3"},  # shared: counted once
                             {"host": "job1.b.party.iflearner.com", "address": "10.1.2.4"}])
    second["metadata"]["creationTimestamp"] = "2026-12-02T00:00:00Z"
    elsewhere = manifest("team-b", "job3", host="job3.server.iflearner.com")
    claims = [tenancy.claim_of(j) for j in (first, second, elsewhere)]
    assert tenancy.refusal(parse_job(first), policy, "2026-12-01T00:00:00Z", claims) is None
    refused = tenancy.refusal(parse_job(second), policy, "2026-12-02T00:00:00Z", claims)
    assert refused is not None and refused.reason == "DnsRecordLimit"
    assert "4 DNS records, over its limit of 3" in refused.problems[0].message
    assert tenancy.refusal(parse_job(elsewhere), policy, "2026-12-03T00:00:00Z", claims) is None
