"""The bootstrap project with the real Pulumi CLI on the local control plane:
`up` wires CoreDNS, the CA, the trust bundle, the operator's RBAC; a real
CoreDNS answers for job records and zones; `destroy` restores CoreDNS and
leaves nothing behind."""

from __future__ import annotations

import base64
import dataclasses
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
import yaml
from cryptography import x509
from kubernetes import client
from kubernetes.client.rest import ApiException
from signed import signed_program

from iflearner import toolchain
from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.bootstrap.corefile import BEGIN_MARK, RECORDS_DIR
from iflearner.desired import (
    BOOTSTRAP_DNS_RECORD_SHARDS,
    ClusterSettings,
    desired_resources,
    dns_configmap_names,
    dns_shard_of,
    zone_file_key,
)
from iflearner.job import load_job_file, stack_name
from iflearner.localcluster import LocalCluster, processes
from iflearner.localcluster.kubeadm_addons import STOCK_COREFILE
from iflearner.toolchain import REPO_ROOT

ZONE, ZONE_ADDRESS, INGRESS_ADDRESS = "a.party.iflearner.com", "10.20.0.1", "10.96.200.1"


@pytest.fixture(scope="module")
def bootstrap_cluster(tmp_path_factory) -> Iterator[tuple[Path, BootstrapProject]]:
    """A cluster of its own: bootstrap owns cluster-wide objects (CRD, CoreDNS)."""
    root = tmp_path_factory.mktemp("bootstrap")
    cluster = LocalCluster(root / "cluster")
    state = cluster.up(progress=print)
    config_file = root / "Pulumi.test.yaml"
    config_file.write_text(yaml.safe_dump({"config": {
        "iflearner:clusterRole": "all", "iflearner:operatorReplicas": 0,
        "iflearner:ingressAddress": INGRESS_ADDRESS,
        "iflearner:zones": [{"zone": ZONE, "address": ZONE_ADDRESS}],
    }}))
    project = BootstrapProject("test", state.kubeconfig, root / "state", "bootstrap-test", config_file)
    try:
        yield state.kubeconfig, project
    finally:
        cluster.down()


def _api(kubeconfig: Path) -> client.ApiClient:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kubeconfig))


def _corefile(core: client.CoreV1Api) -> str:
    return core.read_namespaced_config_map("coredns", "kube-system").data["Corefile"]


class RealCoreDns:
    """The CoreDNS binary on loopback with the cluster's Corefile and records."""

    def __init__(self, core: client.CoreV1Api, kubeconfig: Path, workdir: Path) -> None:
        self.core, self.kubeconfig, self.workdir = core, kubeconfig, workdir
        # Distinct ports chosen at once: one at a time they can repeat.
        self.port, metrics_port, health_port, ready_port = processes.free_ports(4)
        self.records = workdir / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        corefile = _corefile(core)
        # Only what differs between a Pod and this machine is adapted: ports,
        # the records mount path and the API server's kubeconfig.
        corefile = corefile.replace(".:53 {", f".:{self.port} {{", 1)
        corefile = corefile.replace(RECORDS_DIR, str(self.records))
        corefile = re.sub(r"prometheus :9153", f"prometheus 127.0.0.1:{metrics_port}", corefile)
        corefile = corefile.replace("health {", f"health 127.0.0.1:{health_port} {{")
        corefile = re.sub(r"^(\s*)ready$", rf"\1ready 127.0.0.1:{ready_port}", corefile, flags=re.M)
        corefile = corefile.replace("pods insecure", f"pods insecure\n       kubeconfig {kubeconfig} iflearner-local")
        corefile = re.sub(r"^\s*loop$", "", corefile, flags=re.M)
        (workdir / "Corefile").write_text(corefile)
        self.sync_records()
        self.proc = subprocess.Popen([str(toolchain.tool("coredns")), "-conf", str(workdir / "Corefile")],
                                     stdout=(workdir / "coredns.log").open("wb"), stderr=subprocess.STDOUT)

    def sync_records(self) -> None:
        """What the kubelet does for the records volumes the bootstrap put in the CoreDNS Deployment:
        each shard's ConfigMap as a directory under the records directory."""
        deployment = client.AppsV1Api(self.core.api_client).read_namespaced_deployment("coredns", "kube-system")
        spec = deployment.spec.template.spec
        sources = {v.name: v.config_map.name for v in spec.volumes or [] if v.config_map}
        mounts = [(m.mount_path, sources[m.name]) for m in spec.containers[0].volume_mounts or []
                  if m.mount_path.startswith(RECORDS_DIR + "/")]
        shutil.rmtree(self.records, ignore_errors=True)
        self.records.mkdir(parents=True)
        for path, configmap in mounts:
            target = self.records / Path(path).relative_to(RECORDS_DIR)
            target.mkdir(parents=True)
            for key, value in (self.core.read_namespaced_config_map(configmap, "kube-system").data or {}).items():
                (target / key).write_text(value)

    def query(self, name: str) -> list[str]:
        answer = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=self.port, timeout=2)
        if answer.rcode() != dns.rcode.NOERROR:
            return []
        return [item.address for rrset in answer.answer for item in rrset if rrset.rdtype == 1]

    def wait_answer(self, name: str, expected: list[str], timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while time.monotonic() < deadline:
            try:
                got = self.query(name)
            except (dns.exception.Timeout, OSError):
                got = []
            if got == expected:
                return got
            time.sleep(0.5)
        return got

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _ca_objects(core: client.CoreV1Api) -> tuple[dict[str, str], dict[str, str]]:
    secret = core.read_namespaced_secret("iflearner-ca", "iflearner-system")
    trust = core.read_namespaced_config_map("iflearner-trust", "iflearner-system")
    return {k: base64.b64decode(v).decode() for k, v in secret.data.items()}, dict(trust.data)


def assert_ca_rotation_begins_and_finishes(project: BootstrapProject, core: client.CoreV1Api) -> None:
    """The README's rotation, as `pulumi config` and `pulumi up`: the retiring CA stays in the Secret
    (for the operator's signer) and in both bundles until the rotation is finished."""
    old, _ = _ca_objects(core)
    project.set_config("iflearner:caRetiringGeneration", "0")
    project.set_config("iflearner:caGeneration", "1")
    project.up()
    during, bundles = _ca_objects(core)
    assert set(during) == {"tls.crt", "tls.key", "retiring.crt", "retiring.key"}
    assert during["retiring.crt"] == old["tls.crt"] and during["retiring.key"] == old["tls.key"]
    new_ca = x509.load_pem_x509_certificate(during["tls.crt"].encode())
    assert new_ca.subject.rfc4514_string() == "CN=iflearner all cluster CA g1"
    for bundle in bundles.values():
        assert bundle.index(during["tls.crt"].strip()) < bundle.index(old["tls.crt"].strip())

    project.remove_config("iflearner:caRetiringGeneration")
    project.up()
    after, bundles = _ca_objects(core)
    assert set(after) == {"tls.crt", "tls.key"}, "the retiring CA leaves the Secret when the rotation finishes"
    assert after["tls.crt"] == during["tls.crt"]
    assert all(b.strip() == during["tls.crt"].strip() for b in bundles.values())


def test_bootstrap_up_wires_dns_and_destroy_restores(bootstrap_cluster, tmp_path):
    kubeconfig, project = bootstrap_cluster
    api = _api(kubeconfig)
    core = client.CoreV1Api(api)
    original = _corefile(core)
    assert original == STOCK_COREFILE

    project.up()
    corefile = _corefile(core)
    for plugin in ("errors", "health {", "ready", "kubernetes cluster.local", "forward .", "cache 30", "reload"):
        assert plugin in corefile
    assert BEGIN_MARK in corefile and f"template IN A {ZONE}" in corefile
    deployment = client.AppsV1Api(api).read_namespaced_deployment("coredns", "kube-system")
    shards = list(dns_configmap_names(ClusterSettings(dns_record_shards=BOOTSTRAP_DNS_RECORD_SHARDS)))
    assert len(shards) == 8
    sources = {v.name: v.config_map.name for v in deployment.spec.template.spec.volumes if v.config_map}
    mounted = {m.mount_path: sources.get(m.name) for m in deployment.spec.template.spec.containers[0].volume_mounts}
    assert {f"{RECORDS_DIR}/{i}": name for i, name in enumerate(shards)}.items() <= mounted.items()
    ca = core.read_namespaced_secret("iflearner-ca", "iflearner-system")
    assert ca.type == "kubernetes.io/tls"
    trust = core.read_namespaced_config_map("iflearner-trust", "iflearner-system")
    assert "PRIVATE KEY" not in "".join(trust.data.values()) and "BEGIN CERTIFICATE" in trust.data["server.crt"]
    assert "BEGIN CERTIFICATE" in project.outputs()["caCertificate"]
    again = project.preview()
    assert re.search(r"\b\d+ unchanged\b", again), again[-1500:]
    assert not re.search(r"\bto (create|update|delete|replace)\b", again), again[-1500:]

    # A job's record through the real CoreDNS, from the cluster's Corefile.
    settings = ClusterSettings(ingress_address=INGRESS_ADDRESS, dns_record_shards=BOOTSTRAP_DNS_RECORD_SHARDS)
    job = dataclasses.replace(load_job_file(REPO_ROOT / "examples" / "server.yaml"), namespace="default")
    from iflearner.stackrunner import RunnerSettings, StackRunner

    runner = StackRunner(RunnerSettings.local(tmp_path / "jobs", "jobs"))
    desired = desired_resources(job, settings)
    assert runner.up(stack_name(job), signed_program(desired, settings, kubeconfig)).succeeded
    key = zone_file_key("job1.server.iflearner.com")
    holding = [name for name in shards if key in (core.read_namespaced_config_map(name, "kube-system").data or {})]
    assert holding == [shards[dns_shard_of(key, len(shards))]], holding
    coredns = RealCoreDns(core, kubeconfig, tmp_path / "coredns")
    try:
        assert coredns.wait_answer("job1.server.iflearner.com.", [INGRESS_ADDRESS]) == [INGRESS_ADDRESS]
        assert coredns.wait_answer(f"job7.{ZONE}.", [ZONE_ADDRESS]) == [ZONE_ADDRESS]
        assert runner.destroy(stack_name(job)).succeeded
        coredns.sync_records()
        assert coredns.wait_answer("job1.server.iflearner.com.", []) == []
        assert coredns.query(f"job7.{ZONE}.") == [ZONE_ADDRESS]
    finally:
        coredns.stop()

    assert_ca_rotation_begins_and_finishes(project, core)

    # While a job exists, destroy refuses before touching anything (its stack would be orphaned).
    custom = client.CustomObjectsApi(api)
    manifest = yaml.safe_load((REPO_ROOT / "examples" / "party-a.yaml").read_text())
    custom.create_namespaced_custom_object("git.iflytek.com", "v1", "default", "iflearnerjobs", manifest)
    with pytest.raises(RuntimeError, match=r"refusing to destroy the bootstrap while 1 IflearnerJob\(s\) exist "
                                           r"\(default/iflearnerjob-client1\)"):
        project.destroy()
    assert core.read_namespaced_secret("iflearner-ca", "iflearner-system").type == "kubernetes.io/tls"
    assert BEGIN_MARK in _corefile(core)
    client.ApiextensionsV1Api(api).read_custom_resource_definition("iflearnerjobs.git.iflytek.com")
    custom.delete_namespaced_custom_object("git.iflytek.com", "v1", "default", "iflearnerjobs",
                                           manifest["metadata"]["name"])

    project.destroy()
    assert _corefile(core) == original
    deployment = client.AppsV1Api(api).read_namespaced_deployment("coredns", "kube-system")
    assert not any(v.name.startswith("iflearner-dns-records") for v in deployment.spec.template.spec.volumes or [])
    for read in (lambda: core.read_namespace("iflearner-system"),
                 lambda: core.read_namespaced_config_map("iflearner-dns-records", "kube-system"),
                 lambda: client.RbacAuthorizationV1Api(api).read_namespaced_role("iflearner-operator-jobs", "default"),
                 lambda: client.ApiextensionsV1Api(api).read_custom_resource_definition(
                     "iflearnerjobs.git.iflytek.com")):
        with pytest.raises(ApiException) as gone:
            read()
        assert gone.value.status == 404
