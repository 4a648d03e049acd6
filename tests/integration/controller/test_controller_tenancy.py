"""Tenancy (issue 18) on the real control plane with the real Pulumi engine: a person who may only
create IflearnerJobs in one namespace (impersonated, with nothing else) gets a federated-learning job
and nothing more. A Pod the cluster's Pod Security level forbids, a service account not allowed, a
host or peer outside the federation's domains, a peer record pointing at the host or the metadata
endpoint, a host another namespace holds: each is refused before any Pulumi run, with the policy's
reason and the field in the job's Stalled condition, no Pod and no DNS record made, and no other
job disturbed, while a baseline-compliant job becomes Ready. A deleted job whose stack state is lost
is cleaned up from the cluster itself, and nothing secret lands in a job's state unencrypted.

(What the bootstrap declares for tenancy, the namespace labels, the name-constrained CA, the scoped
CoreDNS block and Traefik's RBAC, is checked in tests/integration/test_gateway_bootstrap.py.)"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controller_harness import (
    GROUP,
    PLURAL,
    VERSION,
    ControllerProcess,
    condition,
    create_job,
    get_job,
    gone,
    job_manifest,
    wait_for,
    wait_ready_running,
)
from kubernetes import client, config

from iflearner.desired import LABEL_JOB_UID, ClusterSettings

AUTHOR = "job-author@example.org"
DOMAINS = ["server.iflearner.com", "party.iflearner.com"]
INGRESS = "10.96.200.1"  # the jobs' own DNS records point here
RECORDS = ClusterSettings().dns_configmap_name


@pytest.fixture(scope="module")
def tenancy_controller(kubeconfig: Path, controller_prereqs: dict[str, str], state_dir: Path,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """The controller with the settings a bootstrap with tenancy config records."""
    root = tmp_path_factory.mktemp("tenancy")
    settings = root / "cluster-settings.yaml"
    settings.write_text(yaml.safe_dump({
        "ingressAddress": INGRESS, "podSecurity": "baseline", "jobDomains": DOMAINS,
        "refusedPeerNetworks": ["10.96.0.0/16"], "allowedPeerNetworks": [f"{INGRESS}/32"]}))
    process = ControllerProcess(kubeconfig, state_dir, root / "controller.log", "--cluster-settings", str(settings),
                                "--resync-period", "5", "--workers", "4").start()
    process.wait_ready()
    yield process
    process.stop()


def _author_api(kubeconfig: Path, core: client.CoreV1Api, namespace: str) -> client.CustomObjectsApi:
    """The API as a person allowed only create/get/list/watch/delete on IflearnerJobs in ``namespace``."""
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="job-author"),
        rules=[client.V1PolicyRule(api_groups=[GROUP], resources=[PLURAL],
                                   verbs=["create", "get", "list", "watch", "delete"])]))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="job-author"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="job-author"),
        subjects=[client.RbacV1Subject(kind="User", name=AUTHOR, api_group="rbac.authorization.k8s.io")]))
    api = config.new_client_from_config(config_file=str(kubeconfig))
    api.set_default_header("Impersonate-User", AUTHOR)
    return client.CustomObjectsApi(api)


def _stalled(custom: client.CustomObjectsApi, namespace: str, name: str, reason: str,
             controller: ControllerProcess) -> dict[str, Any]:
    def stalled() -> dict[str, Any] | None:
        job = get_job(custom, namespace, name)
        found = condition(job, "Stalled")
        return job if found.get("status") == "True" and found.get("reason") == reason else None

    return wait_for(f"{namespace}/{name} Stalled with reason {reason}", stalled, 120, interval=0.5,
                    on_timeout=lambda: yaml.safe_dump((get_job(custom, namespace, name) or {}).get("status"))
                    + controller.log())


def _records(core: client.CoreV1Api) -> dict[str, str]:
    return core.read_namespaced_config_map(RECORDS, ClusterSettings().dns_namespace).data or {}


def _pod(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def test_a_job_author_gets_a_job_and_nothing_more(tenancy_controller, kubeconfig, custom, core, jobs_ns):
    author = _author_api(kubeconfig, core, jobs_ns)
    with pytest.raises(client.ApiException) as refused:
        # The author's own rights: no Pods (what the operator declares must not lend them its own).
        client.CoreV1Api(author.api_client).list_namespaced_pod(jobs_ns)
    assert refused.value.status == 403

    good = job_manifest("good", jobs_ns)
    root = job_manifest("root", jobs_ns)
    _pod(root).update(hostPID=True, volumes=[{"name": "host", "hostPath": {"path": "/"}}])
    _pod(root)["containers"][0]["securityContext"] = {"privileged": True}
    account = job_manifest("account", jobs_ns)
    _pod(account)["serviceAccountName"] = "deployer"
    foreign = job_manifest("foreign", jobs_ns, host="s3.amazonaws.com")
    zone = job_manifest("zone", jobs_ns, host="zone.server.iflearner.com")
    zone["spec"]["peers"] = [{"host": "amazonaws.com", "address": "10.1.2.3"}]
    metadata = job_manifest("metadata", jobs_ns, host="metadata.server.iflearner.com")
    metadata["spec"]["peers"] = [{"host": "peer.party.iflearner.com", "address": "169.254.169.254"}]
    for manifest in (good, root, account, foreign, zone, metadata):
        create_job(author, manifest)

    ready = wait_ready_running(custom, jobs_ns, "good", tenancy_controller)
    refusals = {"root": ("PodSecurity", ["spec.template.spec.hostPID", "spec.template.spec.volumes[0].hostPath",
                                         "spec.template.spec.containers[0].securityContext.privileged"]),
                "account": ("ServiceAccountNotAllowed", ["spec.template.spec.serviceAccountName"]),
                "foreign": ("HostNotAllowed", ["spec.host"]),
                "zone": ("HostNotAllowed", ["spec.peers[0].host"]),
                "metadata": ("PeerAddressNotAllowed", ["spec.peers[0].address"])}
    for name, (reason, fields) in refusals.items():
        job = _stalled(custom, jobs_ns, name, reason, tenancy_controller)
        message = condition(job, "Stalled")["message"]
        for field in fields:
            assert field in message, (name, message)
        assert condition(job, "Ready")["status"] == "False"
        assert "lastOperation" not in job["status"], f"{name}: no Pulumi run"
        assert gone(lambda name=name: core.read_namespaced_pod(name, jobs_ns)), f"{name}: no Pod"
        assert gone(lambda name=name: core.read_namespaced_secret(f"{name}-tls", jobs_ns)), f"{name}: no certificate"
    records = _records(core)
    for host in ("s3.amazonaws.com", "amazonaws.com", "peer.party.iflearner.com", "zone.server.iflearner.com"):
        assert f"db.{host}" not in records, f"no DNS record for {host}"
    assert "db.good.server.iflearner.com" in records

    # The good job: Ready, its Pod without an API token, untouched by the others.
    pod = core.read_namespaced_pod("good", jobs_ns)
    assert pod.spec.automount_service_account_token is False
    assert not any(v.projected for v in pod.spec.volumes or []), "no service account token volume"
    again = get_job(custom, jobs_ns, "good")
    assert condition(again, "Ready")["status"] == "True"
    assert core.read_namespaced_pod("good", jobs_ns).metadata.uid == pod.metadata.uid
    assert again["status"]["lastOperation"] == ready["status"]["lastOperation"], "no run caused by the others"


def test_a_host_belongs_to_the_namespace_that_applied_it_first(tenancy_controller, kubeconfig, custom, core,
                                                               jobs_ns, request):
    holder = job_manifest("holder", jobs_ns, host="shared.server.iflearner.com")
    create_job(custom, holder)
    wait_ready_running(custom, jobs_ns, "holder", tenancy_controller)
    # iflearner-flow's jobs of one namespace may share a host.
    create_job(custom, job_manifest("sibling", jobs_ns, host="shared.server.iflearner.com", role="client"))
    wait_ready_running(custom, jobs_ns, "sibling", tenancy_controller)

    other = f"{jobs_ns}-b"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    request.addfinalizer(lambda: _delete_namespace_jobs(custom, core, other))
    author = _author_api(kubeconfig, core, other)
    create_job(author, job_manifest("intruder", other, host="shared.server.iflearner.com"))
    job = _stalled(custom, other, "intruder", "HostConflict", tenancy_controller)
    assert f"served by job {jobs_ns}/holder" in condition(job, "Stalled")["message"]
    assert gone(lambda: core.read_namespaced_secret("intruder-tls", other)), "no certificate for a held host"
    assert condition(get_job(custom, jobs_ns, "holder"), "Ready")["status"] == "True"

    # Once the namespace that held it lets go, the host is free: the waiting job proceeds by itself.
    for name in ("holder", "sibling"):
        custom.delete_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name)
    wait_ready_running(custom, other, "intruder", tenancy_controller, timeout=120)


def _delete_namespace_jobs(custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str) -> None:
    for job in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job["metadata"]["name"])
    wait_for(f"the jobs of {namespace} to be gone",
             lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"], 120)
    core.delete_namespace(namespace)


def _stack_files(state_dir: Path, namespace: str, name: str) -> list[Path]:
    stacks = state_dir / "state" / ".pulumi" / "stacks" / "iflearner-jobs"
    return [p for p in stacks.glob(f"{namespace}.{name}.json*")]


def test_nothing_secret_is_in_a_jobs_state_unencrypted(tenancy_controller, kubeconfig, custom, jobs_ns, state_dir):
    create_job(custom, job_manifest("sealed", jobs_ns, role="client", host="sealed.party.iflearner.com"))
    wait_ready_running(custom, jobs_ns, "sealed", tenancy_controller)
    [state] = [p for p in _stack_files(state_dir, jobs_ns, "sealed") if p.suffix == ".json"]
    text = state.read_text()
    assert "PRIVATE KEY" not in text, "the job's key is a secret of the state"
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    for key in ("client-key-data", "token", "password"):
        if user.get(key):
            assert user[key] not in text, f"the kubeconfig's {key} is in the state"
            if key == "client-key-data":
                assert base64.b64decode(user[key]).decode().strip().splitlines()[1] not in text
    provider = next(r for r in json.loads(text)["checkpoint"]["latest"]["resources"]
                    if r["type"] == "pulumi:providers:kubernetes")
    assert "ciphertext" in json.dumps(provider["inputs"].get("kubeconfig")), "the kubeconfig is encrypted"


def test_deleting_a_job_whose_stack_state_is_lost_deletes_its_objects_by_label(tenancy_controller, custom, core,
                                                                                jobs_ns, state_dir):
    manifest = job_manifest("orphan", jobs_ns, role="client", host="orphan.party.iflearner.com")
    create_job(custom, manifest)
    job = wait_ready_running(custom, jobs_ns, "orphan", tenancy_controller)
    uid = job["metadata"]["uid"]
    assert "db.orphan.party.iflearner.com" in _records(core)
    # The backend loses the stack (a changed URL, a lost volume): its files are gone.
    files = _stack_files(state_dir, jobs_ns, "orphan")
    assert files
    for path in files:
        path.unlink()

    custom.delete_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, "orphan")
    wait_for("the job to be gone", lambda: get_job(custom, jobs_ns, "orphan") is None, 120,
             on_timeout=tenancy_controller.log)
    selector = f"{LABEL_JOB_UID}={uid}"
    for kind, listing in (("Pod", core.list_namespaced_pod), ("Service", core.list_namespaced_service),
                          ("Secret", core.list_namespaced_secret), ("ConfigMap", core.list_namespaced_config_map)):
        left = [o.metadata.name for o in listing(jobs_ns, label_selector=selector).items
                if not o.metadata.deletion_timestamp]
        assert left == [], f"{kind} left behind: {left}"
    assert "db.orphan.party.iflearner.com" not in _records(core), "its DNS record is deleted too"
    warnings = [e for e in core.list_namespaced_event(jobs_ns, field_selector="involvedObject.name=orphan").items
                if e.reason == "StackStateMissing"]
    assert warnings and warnings[0].type == "Warning", "a Warning Event says the state was missing"
    assert "Pod/orphan" in warnings[0].message


def test_the_original_examples_meet_the_policy(tenancy_controller, custom, jobs_ns):
    from controller_harness import example

    for file in ("server.yaml", "party-a.yaml", "party-b.yaml"):
        create_job(custom, copy.deepcopy(example(file, jobs_ns)))
    for name in ("iflearnerjob-server", "iflearnerjob-client1", "iflearnerjob-client2"):
        wait_ready_running(custom, jobs_ns, name, tenancy_controller)
