"""The tenancy policy, pure: Pod Security levels, service accounts, job domains, peer addresses,
host ownership between namespaces."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

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


def applied(job: dict[str, Any], created: str, records: dict[str, str] | None = None) -> dict[str, Any]:
    """``job`` as the cache shows it once applied (status.applied records what it holds)."""
    job = copy.deepcopy(job)
    job["metadata"]["creationTimestamp"] = created
    job["status"] = {"applied": {"fingerprint": "f", "objects": {}, "host": job["spec"]["host"],
                                 "records": records or {}}}
    return job


INGRESS = "10.96.200.1"
POLICY = ClusterSettings(ingress_address=INGRESS).tenancy_policy()


def test_a_host_belongs_to_the_namespace_that_applied_it_first():
    holder = applied(manifest("team-a", "job1"), "2026-12-01T00:00:00Z", {"job1.server.iflearner.com": INGRESS})
    cluster = tenancy.ClusterJobs.of([holder], ("", ""))
    intruder = manifest("team-b", "job1", peers=[{"host": "job9.server.iflearner.com", "address": "10.1.2.3"}])
    refused = tenancy.refusal(parse_job(intruder), POLICY, "2026-12-03T00:00:00Z", cluster)
    assert refused is not None and refused.reason == "HostConflict"
    assert [p.field for p in refused.problems] == ["spec.host"]
    assert "served by job team-a/job1" in refused.problems[0].message
    # Jobs of one namespace share a host (iflearner-flow's server and client jobs do).
    assert tenancy.refusal(parse_job(manifest("team-a", "job2")), POLICY, "2026-12-02T00:00:00Z", cluster) is None


def test_an_old_job_edited_to_name_a_running_jobs_host_cannot_take_it():
    victim = applied(manifest("team-a", "job1", host="victim.server.iflearner.com"), "2026-12-05T00:00:00Z",
                     {"victim.server.iflearner.com": INGRESS})
    # Created long before the victim, then edited: its spec claims nothing until it is applied.
    attacker = manifest("team-b", "old", host="old.server.iflearner.com",
                        peers=[{"host": "victim.server.iflearner.com", "address": "10.9.9.9"}])
    attacker["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    cluster = tenancy.ClusterJobs.of([victim, attacker], ("team-b", "old"))
    refused = tenancy.refusal(parse_job(attacker), POLICY, "2020-01-01T00:00:00Z", cluster, applied=False)
    assert refused is not None and refused.reason == "HostConflict"
    assert [p.field for p in refused.problems] == ["spec.peers[0].host"]
    # The victim is not disturbed by a spec that was never applied.
    victim_view = tenancy.ClusterJobs.of([victim, attacker], ("team-a", "job1"))
    assert tenancy.refusal(parse_job(victim), POLICY, "2026-12-05T00:00:00Z", victim_view, applied=True) is None


def test_two_namespaces_may_publish_the_same_record_for_a_peer_but_not_another_address():
    first = applied(manifest("team-a", "job1", host="a1.server.iflearner.com"), "2026-12-01T00:00:00Z",
                    {"a1.server.iflearner.com": INGRESS, "peer.party.iflearner.com": "172.31.164.54"})
    cluster = tenancy.ClusterJobs.of([first], ("", ""))
    same = manifest("team-b", "job1", host="b1.server.iflearner.com",
                    peers=[{"host": "peer.party.iflearner.com", "address": "172.31.164.54"}])
    assert tenancy.refusal(parse_job(same), POLICY, "2026-12-02T00:00:00Z", cluster) is None
    other = manifest("team-b", "job2", host="b2.server.iflearner.com",
                     peers=[{"host": "peer.party.iflearner.com", "address": "172.31.164.99"}])
    refused = tenancy.refusal(parse_job(other), POLICY, "2026-12-02T00:00:00Z", cluster)
    assert refused is not None and refused.reason == "HostConflict"
    assert "resolves to 172.31.164.54 for job team-a/job1" in refused.problems[0].message


def test_of_two_applied_claimants_only_the_newer_is_told():
    older = applied(manifest("team-a", "job1"), "2026-12-01T00:00:00Z")
    newer = applied(manifest("team-b", "job1"), "2026-12-02T00:00:00Z")
    both = [older, newer]
    assert tenancy.refusal(parse_job(older), POLICY, "2026-12-01T00:00:00Z",
                           tenancy.ClusterJobs.of(both, ("team-a", "job1")), applied=True) is None
    told = tenancy.refusal(parse_job(newer), POLICY, "2026-12-02T00:00:00Z",
                           tenancy.ClusterJobs.of(both, ("team-b", "job1")), applied=True)
    assert told is not None and told.reason == "HostConflict"


def test_a_peer_may_lie_under_the_peer_domains_but_a_host_may_not():
    settings = ClusterSettings(job_domains=("a.party.iflearner.com",), peer_domains=("b.party.iflearner.com",))
    peer = manifest(host="job1.a.party.iflearner.com", peers=[{"host": "job1.b.party.iflearner.com",
                                                               "address": "172.31.164.54"}])
    assert tenancy.refusal(parse_job(peer), settings.tenancy_policy()) is None
    host = manifest(host="job1.b.party.iflearner.com")
    refused = tenancy.refusal(parse_job(host), settings.tenancy_policy())
    assert refused is not None and [p.field for p in refused.problems] == ["spec.host"]


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
    jobs = [first, second, elsewhere]
    assert tenancy.refusal(parse_job(first), policy, "2026-12-01T00:00:00Z",
                           tenancy.ClusterJobs.of(jobs, ("team-a", "job1"))) is None
    refused = tenancy.refusal(parse_job(second), policy, "2026-12-02T00:00:00Z",
                              tenancy.ClusterJobs.of(jobs, ("team-a", "job2")))
    assert refused is not None and refused.reason == "DnsRecordLimit"
    assert "4 DNS records, over its limit of 3" in refused.problems[0].message
    assert tenancy.refusal(parse_job(elsewhere), policy, "2026-12-03T00:00:00Z",
                           tenancy.ClusterJobs.of(jobs, ("team-b", "job3"))) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)
POD_FIELDS = ("securityContext", "volumes", "hostPID", "initContainers", "serviceAccountName", "hostUsers")
CONTAINER_FIELDS = ("securityContext", "ports", "livenessProbe", "lifecycle")


@settings(max_examples=300, deadline=None)
@given(pod=st.dictionaries(st.sampled_from(POD_FIELDS), json_values, max_size=4),
       container=st.dictionaries(st.sampled_from(CONTAINER_FIELDS), json_values, max_size=3),
       level=st.sampled_from(list(Level)))
def test_any_template_gets_a_verdict_never_a_crash(pod, container, level):
    job = manifest()
    pod_spec(job).update(pod)
    pod_spec(job)["containers"][0].update(container)
    template = job["spec"]["template"]
    for problem in violations(template, level):
        assert problem.field.startswith("spec.template.") and problem.message


def test_the_kubernetes_1_36_baseline_details():
    job = manifest()
    pod_spec(job)["securityContext"] = {"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}],
                                        "seLinuxOptions": {"type": None}}
    pod_spec(job)["containers"][0]["livenessProbe"] = {"httpGet": {"host": "169.254.169.254", "port": 80}}
    job["spec"]["template"]["metadata"] = {"annotations": {
        "container.apparmor.security.beta.kubernetes.io/s": "localhost/custom"}}
    assert [p.field for p in violations(job["spec"]["template"], Level.BASELINE)] == [
        "spec.template.spec.containers[0].livenessProbe.httpGet.host"]
