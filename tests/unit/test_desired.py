"""Unit tests for desired_resources: the per-role contract of the original operator."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from iflearner.desired import (
    ClusterSettings,
    DesiredResources,
    DnsRecord,
    desired_resources,
    dns_configmap_names,
    job_names,
    owned_object_refs,
)
from iflearner.job import IflearnerJob, load_job_file, parse_job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SETTINGS = ClusterSettings()


def example(filename: str) -> IflearnerJob:
    return load_job_file(EXAMPLES / filename)


def make_job(
    name: str = "job",
    namespace: str = "ns",
    role: str = "client",
    template: dict[str, Any] | None = None,
    **spec: Any,
) -> IflearnerJob:
    manifest = {
        "apiVersion": "git.iflytek.com/v1",
        "kind": "IflearnerJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "role": role,
            "host": "job1.a.party.iflearner.com",
            "template": template or {"spec": {"containers": [{"name": "c", "image": "img"}]}},
            **spec,
        },
    }
    return parse_job(manifest)


@pytest.fixture
def server() -> DesiredResources:
    return desired_resources(example("server.yaml"), SETTINGS)


@pytest.fixture
def client() -> DesiredResources:
    return desired_resources(example("party-a.yaml"), SETTINGS)


def test_server_service_ports(server: DesiredResources) -> None:
    service = server.service
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    assert service["metadata"]["name"] == "iflearnerjob-server"
    assert service["metadata"]["namespace"] == "default"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {"app": "iflearnerjob-server"}
    assert service["spec"]["ports"] == [
        {"name": "grpc", "port": 80, "targetPort": 50001, "protocol": "TCP"},
        {"name": "http", "port": 82, "targetPort": 50002, "protocol": "TCP"},
    ]


def test_client_service_has_only_grpc(client: DesiredResources) -> None:
    grpc = {"name": "grpc", "port": 80, "targetPort": 50001, "protocol": "TCP"}
    assert client.service["spec"]["ports"] == [grpc]


def test_server_ingress(server: DesiredResources) -> None:
    ingress = server.ingress
    assert (ingress["apiVersion"], ingress["kind"]) == ("networking.k8s.io/v1", "Ingress")
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/backend-protocol": "GRPC",
        "nginx.ingress.kubernetes.io/ssl-redirect": "true",
        "nginx.ingress.kubernetes.io/proxy-body-size": "1024m",
    }
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["job1.server.iflearner.com"], "secretName": "iflearnerjob-server-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "job1.server.iflearner.com"
    assert rule["http"]["paths"] == [{
        "path": "/",
        "pathType": "Prefix",
        "backend": {"service": {"name": "iflearnerjob-server", "port": {"number": 80}}},
    }]


def test_ingress_class_override_and_setting() -> None:
    assert desired_resources(make_job(ingressClassName="internal"), SETTINGS).ingress["spec"][
        "ingressClassName"
    ] == "internal"
    custom = ClusterSettings(ingress_class_name="public")
    assert desired_resources(make_job(), custom).ingress["spec"]["ingressClassName"] == "public"


def test_server_pod(server: DesiredResources) -> None:
    pod = server.pod
    assert (pod["kind"], pod["metadata"]["name"], pod["metadata"]["namespace"]) == (
        "Pod", "iflearnerjob-server", "default",
    )
    assert pod["metadata"]["labels"]["app"] == "iflearnerjob-server"
    assert pod["metadata"]["labels"]["iflearner.git.iflytek.com/role"] == "server"
    assert "volumes" not in pod["spec"]
    assert "volumeMounts" not in pod["spec"]["containers"][0]
    assert server.trust_configmap is None


def test_client_pod_mounts_both_trust_files_at_the_original_paths(client: DesiredResources) -> None:
    spec = client.pod["spec"]
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path, key in (
        ("/etc/server-iflearner-secret.crt", "server-iflearner-secret.crt"),
        ("/etc/party-iflearner-secret.crt", "party-iflearner-secret.crt"),
    ):
        mount = mounts[path]
        assert mount["subPath"] == key
        assert mount["readOnly"] is True
        config_map = volumes[mount["name"]]["configMap"]
        assert config_map["name"] == client.names.trust_configmap == "iflearnerjob-client1-trust"
        assert config_map["items"] == [{"key": key, "path": key}]
    assert set(volumes) == {"server-iflearner-crt", "party-iflearner-crt"}
    assert client.trust_configmap is not None
    assert client.trust_configmap["kind"] == "ConfigMap"
    assert client.trust_configmap["metadata"]["name"] == "iflearnerjob-client1-trust"
    assert "data" not in client.trust_configmap


def test_client_mounts_go_to_the_first_container_only() -> None:
    template = {"spec": {"containers": [{"name": "main", "image": "a"}, {"name": "side", "image": "b"}],
                         "volumes": [{"name": "scratch", "emptyDir": {}}]}}
    pod = desired_resources(make_job(template=template), SETTINGS).pod
    main, side = pod["spec"]["containers"]
    assert len(main["volumeMounts"]) == 2
    assert "volumeMounts" not in side
    volumes = [v["name"] for v in pod["spec"]["volumes"]]
    assert volumes == ["scratch", "server-iflearner-crt", "party-iflearner-crt"]


def test_template_labels_annotations_and_scheduler_survive() -> None:
    template = {
        "metadata": {"labels": {"team": "ml", "app": "theirs"}, "annotations": {"note": "keep me"}},
        "spec": {"schedulerName": "volcano", "containers": [{"name": "c", "image": "img"}]},
    }
    pod = desired_resources(make_job(template=template, role="server"), SETTINGS).pod
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert pod["metadata"]["labels"]["app"] == "job"  # the Service selects on it
    assert pod["metadata"]["annotations"] == {"note": "keep me"}
    assert pod["spec"]["schedulerName"] == "volcano"


def test_input_is_not_mutated() -> None:
    job = example("party-a.yaml")
    before = copy.deepcopy(job.template)
    desired = desired_resources(job, SETTINGS)
    assert job.template == before
    desired.pod["spec"]["containers"][0]["args"].append("--mutated")
    assert job.template == before
    assert desired_resources(job, SETTINGS) == desired_resources(job, SETTINGS)


def test_every_object_carries_the_job_labels(client: DesiredResources) -> None:
    assert client.labels == {
        "app.kubernetes.io/managed-by": "iflearner-operator",
        "iflearner.git.iflytek.com/job-name": "iflearnerjob-client1",
        "iflearner.git.iflytek.com/job-namespace": "default",
        "iflearner.git.iflytek.com/role": "client",
    }
    for manifest in (client.tls_secret, client.trust_configmap, client.service, client.ingress, client.pod):
        assert manifest is not None
        assert client.labels.items() <= manifest["metadata"]["labels"].items()


def test_tls_secret_and_certificate(server: DesiredResources) -> None:
    metadata = {"name": "iflearnerjob-server-tls", "namespace": "default", "labels": dict(server.labels)}
    assert server.tls_secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "kubernetes.io/tls",
    }
    assert server.certificate.common_name == "job1.server.iflearner.com"
    assert server.certificate.dns_names == ("job1.server.iflearner.com",)
    assert server.certificate.validity_hours == 24 * 365


def test_owned_object_refs(client: DesiredResources, server: DesiredResources) -> None:
    assert owned_object_refs(client) == [
        ("v1", "Secret", "default", "iflearnerjob-client1-tls"),
        ("v1", "ConfigMap", "default", "iflearnerjob-client1-trust"),
        ("v1", "Service", "default", "iflearnerjob-client1"),
        ("networking.k8s.io/v1", "Ingress", "default", "iflearnerjob-client1"),
        ("v1", "Pod", "default", "iflearnerjob-client1"),
    ]
    assert [kind for _, kind, _, _ in owned_object_refs(server)] == ["Secret", "Service", "Ingress", "Pod"]


@pytest.mark.parametrize("name", ["my.job.v1", "job-" + "x" * 59 + ".v1", "1job", "a" * 60 + "." + "b" * 60])
def test_illegal_service_names_get_a_derived_legal_name(name: str) -> None:
    desired = desired_resources(make_job(name=name), SETTINGS)
    names = desired.names
    assert names.base != name
    assert DNS_1035.match(names.base) and len(names.base) <= 63
    assert re.search(r"-[0-9a-f]{8}$", names.base)
    assert names.pod == names.service == names.ingress == names.base
    assert desired.pod["metadata"]["labels"]["app"] == names.base
    assert desired.service["spec"]["selector"] == {"app": names.base}
    job_label = desired.labels["iflearner.git.iflytek.com/job-name"]
    assert len(job_label) <= 63
    assert re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", job_label)


def test_derived_names_differ_between_similar_jobs() -> None:
    assert job_names(make_job(name="a.b")).base != job_names(make_job(name="a-b")).base
    long_a, long_b = "x" * 63 + ".y.one", "x" * 63 + ".y.two"
    assert job_names(make_job(name=long_a)).base != job_names(make_job(name=long_b)).base


def test_legal_names_are_kept() -> None:
    names = job_names(make_job(name="iflearnerjob-server-0b2c"))
    assert names.base == names.pod == names.service == "iflearnerjob-server-0b2c"
    assert names.tls_secret == "iflearnerjob-server-0b2c-tls"
    assert names.trust_configmap == "iflearnerjob-server-0b2c-trust"


def test_same_name_in_two_namespaces() -> None:
    from iflearner.job import stack_name

    first, second = make_job(namespace="team-a"), make_job(namespace="team-b")
    a, b = job_names(first), job_names(second)
    assert (a.base, a.pod, a.service, a.ingress, a.tls_secret, a.trust_configmap) == (
        b.base, b.pod, b.service, b.ingress, b.tls_secret, b.trust_configmap,
    )
    assert a.field_manager != b.field_manager
    assert a.dns_key != b.dns_key
    assert stack_name(first) != stack_name(second)
    assert (a.dns_key, a.field_manager) == ("db.team-a.job", "iflearner-team-a.job")
    assert desired_resources(first, SETTINGS).pod["metadata"]["namespace"] == "team-a"


def test_long_field_manager_and_dns_key_fit() -> None:
    name = ".".join(["n" * 63] * 3) + ".abc"
    names = job_names(make_job(name=name, namespace="z" * 63))
    assert len(names.field_manager) <= 128
    assert len(names.dns_key) <= 253
    assert re.match(r"^[-._a-zA-Z0-9]+$", names.dns_key)
    other = job_names(make_job(name=name[:-1] + "d", namespace="z" * 63))
    assert other.field_manager != names.field_manager and other.dns_key != names.dns_key


def test_dns_records_and_zone_files() -> None:
    peers = [{"host": "job1.b.party.iflearner.com", "address": "172.31.164.54"}]
    desired = desired_resources(make_job(peers=peers), ClusterSettings(ingress_address="172.31.164.53"))
    assert desired.dns_records == (
        DnsRecord("job1.a.party.iflearner.com", "172.31.164.53"),
        DnsRecord("job1.b.party.iflearner.com", "172.31.164.54"),
    )
    assert list(desired.dns_zone_files) == ["db.job1.a.party.iflearner.com", "db.job1.b.party.iflearner.com"]
    zone = desired.dns_zone_files["db.job1.b.party.iflearner.com"].splitlines()
    assert zone[0] == "$ORIGIN job1.b.party.iflearner.com."
    assert zone[1] == "$TTL 60"
    soa = r"^@ IN SOA ns\.iflearner\.local\. hostmaster\.iflearner\.local\. \d+ 7200 3600 1209600 60$"
    assert re.match(soa, zone[2])
    assert "@ IN NS ns.iflearner.local." in zone
    assert "@ IN A 172.31.164.54" in zone


def test_zone_serial_changes_with_the_address() -> None:
    """CoreDNS reloads a zone only when its SOA serial changes."""
    def serial(address: str) -> str:
        settings = ClusterSettings(ingress_address=address)
        zone = desired_resources(make_job(), settings).dns_zone_files["db.job1.a.party.iflearner.com"]
        return zone.splitlines()[2].split()[5]

    assert serial("10.0.0.1") != serial("10.0.0.2")
    assert serial("10.0.0.1") == serial("10.0.0.1")


def test_no_own_record_without_ingress_address(server: DesiredResources) -> None:
    assert server.dns_records == ()
    assert server.dns_zone_files == {}


def test_records_are_sharded_by_a_stable_hash_of_their_key() -> None:
    peers = [{"host": "job1.b.party.iflearner.com", "address": "172.31.164.54"},
             {"host": "job1.server.iflearner.com", "address": "172.31.164.55"}]
    settings = ClusterSettings(ingress_address="172.31.164.53", dns_record_shards=8)
    desired = desired_resources(make_job(peers=peers), settings)
    # Fixed values: a changed hash would move every cluster's records at the next update.
    assert [(s.index, s.configmap, list(s.files)) for s in desired.dns_shards] == [
        (2, "iflearner-dns-records-2", ["db.job1.b.party.iflearner.com"]),
        (3, "iflearner-dns-records-3", ["db.job1.a.party.iflearner.com"]),
        (5, "iflearner-dns-records-5", ["db.job1.server.iflearner.com"]),
    ]
    assert {k: v for s in desired.dns_shards for k, v in s.files.items()} == desired.dns_zone_files


def test_one_shard_is_the_records_configmap_of_before_and_shard_zero_comes_last() -> None:
    one = desired_resources(make_job(), ClusterSettings(ingress_address="10.0.0.1"))
    assert [(s.index, s.configmap) for s in one.dns_shards] == [(0, "iflearner-dns-records")]
    hosts = [f"h{i}.example.com" for i in range(40)]
    peers = [{"host": h, "address": "10.0.0.2"} for h in hosts]
    many = desired_resources(make_job(peers=peers), ClusterSettings(ingress_address="10.0.0.1", dns_record_shards=4))
    order = [s.index for s in many.dns_shards]
    assert order == [1, 2, 3, 0], "a record leaving shard 0 is added to its new shard first"
    assert dns_configmap_names(ClusterSettings(dns_record_shards=3)) == (
        "iflearner-dns-records", "iflearner-dns-records-1", "iflearner-dns-records-2")


@pytest.mark.parametrize("shards", [0, -1, 65])
def test_a_shard_count_out_of_range_says_what_to_fix(shards: int) -> None:
    with pytest.raises(ValueError, match="dnsRecordShards must be between 1 and 64"):
        ClusterSettings(dns_record_shards=shards)
