"""The operator the way users run it: a Pod from its image (built by the project's image builder),
deployed by the bootstrap's real `pulumi up` on the real node, with its ServiceAccount, RBAC and a
state volume; restarted, stopped and brought back. On the real node a job author cannot get root on
the host through a job, nor make the cluster's DNS answer for a name outside the federation."""

from __future__ import annotations

import copy
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families
from realnode_harness import RealCluster

from iflearner.bootstrap.cli_runner import BootstrapProject
from iflearner.images import ImageBuilder
from iflearner.images.build import ctr
from iflearner.images.catalog import PYTHON_BASE
from iflearner.images.push import push
from iflearner.images.spec import ImageSpec, RuntimeConfig
from iflearner.localcluster import registry
from iflearner.localcluster.nodeconfig import GATEWAY, POD_SUBNET, NodeLayout, NodeNetwork
from iflearner.localcluster.postgres import LocalPostgres, PostgresServer
from iflearner.toolchain import REPO_ROOT

GROUP, VERSION, PLURAL = "git.iflytek.com", "v1", "iflearnerjobs"
OPERATOR_NS = "iflearner-system"
OPERATOR_LABEL = "app.kubernetes.io/name=iflearner-operator"
ORIGINAL_IMAGE = "ghcr.io/iflytek/iflearner:v0.1.0"
EXAMPLES = ("server.yaml", "party-a.yaml", "party-b.yaml")
MERGE = "application/merge-patch+json"
JOB_DOMAINS = ["server.iflearner.com", "party.iflearner.com"]
RECORDS = ("kube-system", "iflearner-dns-records")


def _wait(what: str, check: Any, timeout: float = 180, interval: float = 1.0, describe: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (ApiException, OSError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{describe()}" if describe else ""))
        time.sleep(interval)


@pytest.fixture(scope="module")
def pushed(real_cluster: RealCluster) -> dict[str, str]:
    """The operator image, and a stand-in for the original examples' image, pushed to the node's
    registry the way an installation gets its images (``images push``): the operator named by
    digest, the stand-in as ``iflytek/iflearner:v0.1.0``, which the node pulls for
    ``ghcr.io/iflytek/iflearner:v0.1.0`` (its registry mirrors ghcr.io).

    ghcr.io itself cannot be reached here: the stand-in ignores the original jobs' arguments and
    sleeps (the real training workload is the federation tests' business)."""
    from iflearner.images import project_spec

    builder = ImageBuilder(progress=lambda m: print(f"images: {m}"))
    started = time.monotonic()
    operator = builder.build(project_spec("iflearner-operator", builder))
    print(f"operator image {operator.reference}: {operator.archive.stat().st_size / 2**20:.0f} MiB archive, "
          f"built or found in {time.monotonic() - started:.1f}s")
    standin = builder.build(ImageSpec(
        name="original-example-standin", base=PYTHON_BASE, layers=(),
        config=RuntimeConfig(entrypoint=("/bin/sh", "-c", "echo stand-in for the original image: $*; "
                                         "exec sleep infinity", "standin"))))
    assert real_cluster.state is not None
    target = registry.push_target(registry.RegistryLayout(real_cluster.cluster.data_dir,
                                                          NodeNetwork(real_cluster.state.slot)))
    started = time.monotonic()
    reference = push(operator, target)
    push(standin, target, name="iflytek/iflearner", tag="v0.1.0")
    print(f"pushed to the node's registry in {time.monotonic() - started:.1f}s: {reference}")
    assert reference == f"{target.destination}/iflearner-operator@{operator.manifest_digest}"
    # Nothing of an earlier run may stand in for the pull.
    socket = NodeLayout(real_cluster.cluster.data_dir).containerd_socket
    for name in (ORIGINAL_IMAGE, reference):
        ctr(socket, "images", "rm", name)
    return {"operator": reference, "standin": standin.manifest_digest}


def _pulled(core: client.CoreV1Api, namespace: str, pod: str) -> list[str]:
    """The kubelet's pull events of a Pod ("Pulling image ..." messages)."""
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod}").items
    return [e.message for e in events if e.reason == "Pulling"]


@pytest.fixture(scope="module")
def pod_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL on the node's bridge address that the operator Pod can reach (outlives the bootstrap)."""
    server = LocalPostgres(tmp_path_factory.mktemp("pod-postgres"))
    try:
        yield server.up(address=GATEWAY, clients=(POD_SUBNET,))
    finally:
        server.down(remove_data=True)


@pytest.fixture(scope="module")
def bootstrapped(real_cluster: RealCluster, real_api: client.ApiClient, pushed: dict[str, str],
                 pod_postgres: PostgresServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootstrapProject]:
    root = tmp_path_factory.mktemp("operator-pod")
    state = real_cluster.cluster.data_dir / "operator-state"
    state.mkdir(exist_ok=True)
    os.chown(state, 65532, 65532)  # hostPath volumes ignore fsGroup
    config_file = root / "Pulumi.local-real.yaml"
    config_file.write_text(yaml.safe_dump({"config": {
        "iflearner:clusterRole": "all", "iflearner:operatorImage": pushed["operator"],
        "iflearner:operatorImagePullPolicy": "IfNotPresent", "iflearner:operatorReplicas": 1,
        "iflearner:stateHostPath": str(state), "iflearner:ingressAddress": "10.96.200.1",
        "iflearner:transport": "ingress", "iflearner:installIngressNginx": False,
        "iflearner:ingressController": "none",
        "iflearner:podSecurity": "baseline", "iflearner:jobDomains": JOB_DOMAINS,
    }}))
    assert real_cluster.state is not None
    project = BootstrapProject("local-real", real_cluster.state.kubeconfig, root / "bootstrap", "operator-pod-test",
                               config_file)
    started = time.monotonic()
    project.up()
    print(f"bootstrap up: {time.monotonic() - started:.1f}s")
    yield project
    custom = client.CustomObjectsApi(real_api)
    for job in custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
        meta = job["metadata"]
        custom.delete_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
    _wait("every job to be finalized by the operator",
          lambda: not custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"], 300)
    project.destroy()


def _operator_pod(core: client.CoreV1Api) -> client.V1Pod | None:
    pods = [p for p in core.list_namespaced_pod(OPERATOR_NS, label_selector=OPERATOR_LABEL).items
            if p.metadata.deletion_timestamp is None]
    return pods[0] if len(pods) == 1 else None


def _ready_pod(core: client.CoreV1Api, not_uid: str | None = None) -> client.V1Pod | None:
    pod = _operator_pod(core)
    if pod is None or pod.metadata.uid == not_uid or pod.status.phase != "Running":
        return None
    ready = next((c for c in pod.status.conditions or [] if c.type == "Ready"), None)
    return pod if ready is not None and ready.status == "True" else None


def _metrics(pod: client.V1Pod) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _job_ready(custom: client.CustomObjectsApi, namespace: str, name: str, generation: int | None = None) -> bool:
    job = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    status = job.get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
    if generation is not None and status.get("observedGeneration") != generation:
        return False
    return ready.get("status") == "True" and status.get("phase") == "Running"


def _example(name: str) -> dict[str, Any]:
    manifest = yaml.safe_load((REPO_ROOT / "examples" / name).read_text())
    manifest["metadata"]["namespace"] = "default"
    return manifest


def _memory_mib(pod: client.V1Pod) -> float | None:
    """The operator Pod's memory use as its cgroup counts it (cgroup v1, cgroupfs driver)."""
    for usage in Path("/sys/fs/cgroup/memory").rglob(f"*pod{pod.metadata.uid}/memory.usage_in_bytes"):
        return int(usage.read_text()) / 2**20
    return None


def test_operator_pod_reconciles_restarts_for_free_and_catches_up(bootstrapped, pushed, real_core, real_api):
    custom = client.CustomObjectsApi(real_api)
    apps = client.AppsV1Api(real_api)
    pod = _wait("the operator Pod to be Running and Ready (its /readyz)", lambda: _ready_pod(real_core), 240,
                describe=lambda: json.dumps([str(p.status) for p in real_core.list_namespaced_pod(OPERATOR_NS).items]))
    spec = pod.spec.containers[0]
    assert pod.spec.security_context.run_as_non_root and spec.security_context.read_only_root_filesystem
    # pulled from the registry by digest, as on any cluster (not imported, not `Never`)
    assert spec.image == pushed["operator"] and spec.image_pull_policy == "IfNotPresent"
    assert _pulled(real_core, OPERATOR_NS, pod.metadata.name) == [f'Pulling image "{pushed["operator"]}"']

    # the three original example jobs, unchanged, reach Ready through the operator Pod
    for name in EXAMPLES:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _example(name))
    names = [_example(n)["metadata"]["name"] for n in EXAMPLES]
    for name in names:
        _wait(f"{name} to be Ready", lambda n=name: _job_ready(custom, "default", n), 300,
              describe=lambda: real_core.read_namespaced_pod_log(pod.metadata.name, OPERATOR_NS, tail_lines=40))
    assert _metrics(pod)["iflearner_pulumi_runs_total"] >= len(names)
    # the original jobs' image, unchanged, pulled (by the Pods that started before it was there;
    # the others find it) through the node registry's mirror of ghcr.io: the image pushed there
    pulls = [m for name in names for m in _pulled(real_core, "default", name)]
    assert pulls and set(pulls) == {f'Pulling image "{ORIGINAL_IMAGE}"'}, pulls
    for name in names:
        image_id = real_core.read_namespaced_pod(name, "default").status.container_statuses[0].image_id
        assert image_id.endswith(pushed["standin"]), (name, image_id)
    memory = _memory_mib(pod)
    print(f"operator Pod memory with {len(names)} jobs: {memory} MiB")

    # a new Pod re-verifies every unchanged job without running Pulumi
    real_core.delete_namespaced_pod(pod.metadata.name, OPERATOR_NS)
    deleted_at = time.monotonic()
    pod = _wait("a new operator Pod to be Ready", lambda: _ready_pod(real_core, not_uid=pod.metadata.uid), 240)
    _wait("the new Pod to re-verify every job",
          lambda: _metrics(pod).get("iflearner_gated_reconciles_total", 0) >= len(names), 120)
    print(f"operator Pod restart to all {len(names)} jobs re-verified: {time.monotonic() - deleted_at:.1f}s")
    assert _metrics(pod).get("iflearner_pulumi_runs_total", 0) == 0, "a restart runs no Pulumi for unchanged jobs"

    # the state still decrypts: a spec change updates the job's stack
    job = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, names[0])
    container = copy.deepcopy(job["spec"]["template"]["spec"]["containers"][0])
    container["args"] = [*container["args"], "--epochs=3"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, names[0],
                                          {"spec": {"template": {"spec": {"containers": [container]}}}},
                                          _content_type=MERGE)
    _wait("the changed job to be Ready at generation 2", lambda: _job_ready(custom, "default", names[0], 2), 240)
    assert _metrics(pod)["iflearner_pulumi_runs_total"] == 1

    # a job created while no operator Pod runs converges once one is back
    apps.patch_namespaced_deployment_scale("iflearner-operator", OPERATOR_NS, {"spec": {"replicas": 0}})
    _wait("the operator Pod to be gone", lambda: not real_core.list_namespaced_pod(
        OPERATOR_NS, label_selector=OPERATOR_LABEL).items, 120)
    late = _example("server.yaml")
    late["metadata"]["name"] = "created-while-down"
    late["spec"]["host"] = "job2.server.iflearner.com"
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, late)
    apps.patch_namespaced_deployment_scale("iflearner-operator", OPERATOR_NS, {"spec": {"replicas": 1}})
    _wait("the late job to converge", lambda: _job_ready(custom, "default", "created-while-down"), 300)


def _pulumi_state_keys(url: str) -> str:
    import subprocess

    return subprocess.run(["psql", url.replace("?sslmode=disable", ""), "-tAc", "SELECT key FROM pulumi_state"],
                          capture_output=True, text=True, check=True).stdout


def test_operator_pod_on_the_postgres_backend(bootstrapped, pod_postgres, real_core, real_api):
    """The same checks with job stacks in a real PostgreSQL, its URL (with the password) only in a Secret."""
    custom = client.CustomObjectsApi(real_api)
    for job in custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
        custom.delete_namespaced_custom_object(GROUP, VERSION, job["metadata"]["namespace"], PLURAL,
                                               job["metadata"]["name"])
    _wait("the file backend's jobs to be finalized", lambda: not custom.list_cluster_custom_object(
        GROUP, VERSION, PLURAL)["items"], 300)
    real_core.create_namespaced_secret(OPERATOR_NS, client.V1Secret(
        metadata=client.V1ObjectMeta(name="operator-backend"), string_data={"IFLEARNER_BACKEND_URL": pod_postgres.url}))
    old = _ready_pod(real_core)
    bootstrapped.set_config("iflearner:stateBackendSecret", "operator-backend")
    bootstrapped.up()
    deployment = client.AppsV1Api(real_api).read_namespaced_deployment("iflearner-operator", OPERATOR_NS)
    container = deployment.spec.template.spec.containers[0]
    assert not any("postgres" in arg for arg in container.args), "the URL (with its password) is never an argument"
    assert container.env_from[0].secret_ref.name == "operator-backend"
    pod = _wait("the operator Pod on the postgres backend to be Ready",
                lambda: _ready_pod(real_core, not_uid=old.metadata.uid if old else None), 240)

    names = [_example(n)["metadata"]["name"] for n in ("server.yaml", "party-a.yaml")]
    for name in ("server.yaml", "party-a.yaml"):
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _example(name))
    for name in names:
        _wait(f"{name} to be Ready", lambda n=name: _job_ready(custom, "default", n), 300,
              describe=lambda: real_core.read_namespaced_pod_log(pod.metadata.name, OPERATOR_NS, tail_lines=40))
    keys = _pulumi_state_keys(pod_postgres.url)
    assert all(f"default.{name}" in keys for name in names), keys

    real_core.delete_namespaced_pod(pod.metadata.name, OPERATOR_NS)
    pod = _wait("a new operator Pod to be Ready", lambda: _ready_pod(real_core, not_uid=pod.metadata.uid), 240)
    _wait("the new Pod to re-verify every job",
          lambda: _metrics(pod).get("iflearner_gated_reconciles_total", 0) >= len(names), 120)
    assert _metrics(pod).get("iflearner_pulumi_runs_total", 0) == 0
    job = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, names[1])
    changed = copy.deepcopy(job["spec"]["template"]["spec"]["containers"][0])
    changed["args"] = [*changed["args"], "--epochs=3"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, names[1],
                                          {"spec": {"template": {"spec": {"containers": [changed]}}}},
                                          _content_type=MERGE)
    _wait("the changed job to be Ready at generation 2", lambda: _job_ready(custom, "default", names[1], 2), 240)
    assert _metrics(pod)["iflearner_pulumi_runs_total"] == 1


def _stalled(custom: client.CustomObjectsApi, name: str) -> dict[str, Any] | None:
    job = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)
    found = [c for c in (job.get("status") or {}).get("conditions") or [] if c["type"] == "Stalled"]
    return job if found and found[0]["status"] == "True" else None


def _answer(name: str) -> str:
    """What the cluster's DNS says for ``name``, from this host: the addresses, or the error's kind."""
    from iflearner.localcluster.dnsprobe import query_a
    from iflearner.localcluster.nodeconfig import CLUSTER_DNS

    try:
        return ",".join(sorted(query_a(CLUSTER_DNS, name, timeout=2.0)))
    except ValueError as error:
        return f"error: {error}".replace(name, "<name>")
    except OSError as error:
        return f"no answer: {type(error).__name__}"


def test_a_job_gets_no_root_on_the_node_and_no_dns_outside_the_federation(bootstrapped, real_core, real_api):
    custom = client.CustomObjectsApi(real_api)
    assert real_core.read_namespace("default").metadata.labels["pod-security.kubernetes.io/enforce"] == "baseline"
    root = _example("server.yaml")
    root["metadata"]["name"] = "root-on-the-node"
    root["spec"]["host"] = "root.server.iflearner.com"
    root["spec"]["template"]["spec"]["hostPID"] = True
    root["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    dns = _example("party-a.yaml")
    dns["metadata"]["name"] = "dns-outside"
    dns["spec"]["host"] = "dns.a.party.iflearner.com"
    dns["spec"]["peers"] = [{"host": "example.org", "address": "10.1.2.3"}]
    before = _answer("example.org")
    for job in (root, dns):
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, job)
    stalled_root = _wait("the privileged job to stall", lambda: _stalled(custom, "root-on-the-node"), 120)
    stalled_dns = _wait("the job with a peer outside the domains to stall",
                        lambda: _stalled(custom, "dns-outside"), 120)
    assert [c["reason"] for c in stalled_root["status"]["conditions"] if c["type"] == "Stalled"] == ["PodSecurity"]
    assert [c["reason"] for c in stalled_dns["status"]["conditions"] if c["type"] == "Stalled"] == ["HostNotAllowed"]
    for name in ("root-on-the-node", "dns-outside"):
        with pytest.raises(ApiException) as missing:
            real_core.read_namespaced_pod(name, "default")
        assert missing.value.status == 404, f"{name}: no Pod"

    # Even a record that reached the records ConfigMaps some other way (an older operator, a hand
    # edit) is never served outside the job domains: CoreDNS loads it and answers as before.
    real_core.patch_namespaced_config_map(RECORDS[1], RECORDS[0], {"data": {
        "db.example.org": "$ORIGIN example.org.\n@ 60 IN SOA ns.dns. hostmaster.example.org. 1 7200 3600 "
                          "1209600 60\n@ 60 IN NS ns.dns.\n@ 60 IN A 10.1.2.3\n",
        "db.probe.server.iflearner.com": "$ORIGIN probe.server.iflearner.com.\n@ 60 IN SOA ns.dns. "
                                         "hostmaster.probe.server.iflearner.com. 1 7200 3600 1209600 60\n"
                                         "@ 60 IN NS ns.dns.\n@ 60 IN A 10.1.2.4\n"}})
    try:
        _wait("CoreDNS to load the records (the one inside the domains answers)",
              lambda: _answer("probe.server.iflearner.com") == "10.1.2.4", 180, interval=2.0)
        # Not the record's address: whatever the rest of the server block says (here, with no
        # upstream reachable, no answer), as before the record existed.
        after = _answer("example.org")
        assert "10.1.2.3" not in after, (before, after)
        print(f"example.org before the record: {before!r}; after: {after!r}")
        assert _answer("kubernetes.default.svc.cluster.local") == "10.96.0.1"
    finally:
        real_core.patch_namespaced_config_map(RECORDS[1], RECORDS[0], {"data": {
            "db.example.org": None, "db.probe.server.iflearner.com": None}})
        for name in ("root-on-the-node", "dns-outside"):
            custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, name)


def _served_serial(core: client.CoreV1Api, secret: str) -> str:
    from iflearner.controller.renewal import summarize_tls_secret

    summary = summarize_tls_secret(core.read_namespaced_secret(secret, "default").data)
    assert summary is not None
    return summary["serial"]


def _block_secret_writes(admission: client.AdmissionregistrationV1Api, secret: str) -> None:
    """A ValidatingAdmissionPolicy refusing every write of one Secret: a renewal that cannot land."""
    admission.create_validating_admission_policy({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "block-renewal"},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"],
                     "operations": ["CREATE", "UPDATE", "DELETE"]}]},
                 "validations": [{"expression": f"request.name != '{secret}'",
                                  "message": "renewal blocked by the monitoring test"}]}})
    admission.create_validating_admission_policy_binding({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "block-renewal"},
        "spec": {"policyName": "block-renewal", "validationActions": ["Deny"]}})


def test_prometheus_scrapes_the_operator_pod_and_a_blocked_renewal_pages(bootstrapped, real_core, real_api,
                                                                          tmp_path):
    """A real Prometheus scraping the operator Pod, with the project's rules: a job whose certificate
    renewal an admission policy blocks raises IflearnerCertificateRenewalOverdue; once the block is
    lifted the operator renews on its own and every alert of the job resolves. Certificates live
    90 s here (renewal due at 2/3, the alert halfway from there to expiry)."""
    from prometheus_harness import Prometheus

    from iflearner.desired import base_name

    custom = client.CustomObjectsApi(real_api)
    apps = client.AppsV1Api(real_api)
    admission = client.AdmissionregistrationV1Api(real_api)
    for job in custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
        custom.delete_namespaced_custom_object(GROUP, VERSION, job["metadata"]["namespace"], PLURAL,
                                               job["metadata"]["name"])
    _wait("earlier jobs to be finalized", lambda: not custom.list_cluster_custom_object(
        GROUP, VERSION, PLURAL)["items"], 300)
    old = _ready_pod(real_core)
    deployment = apps.read_namespaced_deployment("iflearner-operator", OPERATOR_NS)
    container = deployment.spec.template.spec.containers[0]
    apps.patch_namespaced_deployment("iflearner-operator", OPERATOR_NS, {"spec": {"template": {"spec": {
        "containers": [{"name": container.name, "args": [*container.args, "--certificate-validity-seconds=90"]}]}}}})
    pod = _wait("the operator Pod with 90 s certificates to be Ready",
                lambda: _ready_pod(real_core, not_uid=old.metadata.uid if old else None), 240)
    _wait("the old operator Pod to be gone", lambda: len(real_core.list_namespaced_pod(
        OPERATOR_NS, label_selector=OPERATOR_LABEL).items) == 1, 120)

    with Prometheus(tmp_path / "prometheus") as prometheus:
        prometheus.set_targets({pod.metadata.name: f"{pod.status.pod_ip}:8080"})
        _wait("Prometheus to scrape the operator Pod", lambda: [
            t for t in prometheus.api("targets")["activeTargets"] if t["health"] == "up"], 60,
            describe=prometheus.log)
        rules = [r["name"] for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        assert "IflearnerCertificateRenewalOverdue" in rules and len(rules) == 7, rules
        assert prometheus.query('iflearner_leader{lease="iflearner-operator-leader"} == 1')

        job = _example("server.yaml")
        job["metadata"]["name"] = "short-lived"
        job["spec"]["host"] = "short.server.iflearner.com"
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, job)
        _wait("the short-lived job to be Ready", lambda: _job_ready(custom, "default", "short-lived"), 240)
        secret = f"{base_name('default', 'short-lived')}-tls"
        _block_secret_writes(admission, secret)
        try:
            _wait("the admission policy to refuse writes of the job's TLS Secret",
                  lambda: _write_refused(real_core, secret), 30)
            first = _served_serial(real_core, secret)
            seen: set[str] = set()

            def overdue() -> bool:
                seen.update(prometheus.firing(name="short-lived"))
                return "IflearnerCertificateRenewalOverdue" in seen

            _wait("IflearnerCertificateRenewalOverdue to fire", overdue, 150, interval=0.5,
                  describe=lambda: json.dumps(prometheus.api("alerts")))
            assert first == _served_serial(real_core, secret), "blocked: still the first certificate"
            _wait("the failed renewals to be exported", lambda: prometheus.query(
                'iflearner_job_failed_operations{name="short-lived",operation="up"} > 0'), 60)
        finally:
            admission.delete_validating_admission_policy_binding("block-renewal")
            admission.delete_validating_admission_policy("block-renewal")
        _wait("the operator to renew the certificate", lambda: _served_serial(real_core, secret) != first, 180)
        _wait("every alert of the job to resolve", lambda: not prometheus.firing(name="short-lived"), 60,
              describe=lambda: json.dumps(prometheus.api("alerts")))
        print(f"alerts seen: {sorted(seen)}, all resolved; renewal from {first} to {_served_serial(real_core, secret)}")


def _write_refused(core: client.CoreV1Api, secret: str) -> bool:
    """Whether a (dry-run) write of the Secret is refused by the admission policy."""
    try:
        core.patch_namespaced_secret(secret, "default", {"metadata": {"labels": {"probe": "1"}}}, dry_run="All")
    except ApiException as error:
        return "renewal blocked" in (error.body or "")
    return False
