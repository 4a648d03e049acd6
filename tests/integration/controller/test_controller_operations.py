"""Operating the controller: a SIGKILL in the middle of `pulumi up`, two replicas with leader election,
readiness that waits for the caches, and the bootstrap stack's least-privilege RBAC being enough."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import yaml
from controller_harness import (
    GROUP,
    PLURAL,
    VERSION,
    ControllerProcess,
    create_job,
    get_job,
    job_manifest,
    wait_for,
    wait_ready_running,
)
from kubernetes import client, utils

from iflearner.desired import ClusterSettings

MERGE = "application/merge-patch+json"
FAST_LEASE = ("--leader-elect", "--lease-duration", "6", "--renew-deadline", "4", "--retry-period", "1")


def lock_files(state_dir: Path) -> list[Path]:
    return list((state_dir / "state" / ".pulumi" / "locks").rglob("*.json"))


def test_sigkill_during_up_then_restart_converges(start_controller, custom, core, jobs_ns, state_dir):
    first = start_controller()
    name = "crash-test"
    create_job(custom, job_manifest(name, jobs_ns, role="client"))
    # Kill the controller and its Pulumi processes while the stack is locked by the running update.
    wait_for("the up to hold its stack lock", lambda: lock_files(state_dir), 60, interval=0.02,
             on_timeout=first.log)
    first.kill_group()
    assert lock_files(state_dir), "the killed update left its lock behind"
    job = get_job(custom, jobs_ns, name)
    assert job["status"]["lastOperation"]["result"] == "InProgress"

    second = start_controller()
    job = wait_ready_running(custom, jobs_ns, name, second, timeout=180)
    assert job["status"]["lastOperation"]["result"] == "Succeeded"
    assert not lock_files(state_dir), "the stale lock was cleared"
    assert second.metric("iflearner_pulumi_runs_total", operation="up", result="succeeded") >= 1
    pods = core.list_namespaced_pod(jobs_ns).items
    assert [p.metadata.name for p in pods if not p.metadata.deletion_timestamp] == [name]


def leaders(*processes: ControllerProcess) -> list[ControllerProcess]:
    return [p for p in processes if p.alive() and p.metric("iflearner_leader") == 1]


def lease(api_client: client.ApiClient, name: str) -> client.V1Lease:
    return client.CoordinationV1Api(api_client).read_namespaced_lease(name, ClusterSettings().operator_namespace)


def test_only_the_leader_reconciles_and_failover_is_within_the_lease_time(start_controller, custom, api_client,
                                                                           jobs_ns):
    lease_args = (*FAST_LEASE, "--leader-election-name", f"leader-{jobs_ns}")
    a, b = start_controller(*lease_args), start_controller(*lease_args)
    wait_for("one leader", lambda: len(leaders(a, b)) == 1, 30)
    leader, follower = (a, b) if leaders(a, b) == [a] else (b, a)
    assert lease(api_client, f"leader-{jobs_ns}").spec.holder_identity.endswith(f"_{leader.pid}")

    name = "elected"
    create_job(custom, job_manifest(name, jobs_ns))
    wait_ready_running(custom, jobs_ns, name, leader)
    assert leader.metric("iflearner_reconciles_total") > 0
    assert follower.metric("iflearner_reconciles_total") == 0, "the standby reconciles nothing"
    assert follower.pulumi_runs() == 0
    assert follower.get("/readyz")[0] == 200, "a standby with synced caches is ready"
    assert leaders(a, b) == [leader]

    # The leader dies (with its Pulumi processes): the standby takes over within the lease time.
    leader.kill_group()
    died = time.monotonic()
    wait_for("the standby to take over", lambda: leaders(follower) == [follower], 20)
    took = time.monotonic() - died
    assert took <= 6 + 1.2 + 3, f"failover took {took:.1f}s"
    job = get_job(custom, jobs_ns, name)
    container = copy.deepcopy(job["spec"]["template"]["spec"]["containers"][0])
    container["args"] = [*container["args"][:-1], "--epochs=2"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name,
                                          {"spec": {"template": {"spec": {"containers": [container]}}}},
                                          _content_type=MERGE)
    wait_ready_running(custom, jobs_ns, name, follower, generation=2)

    # A clean shutdown releases the lease: the next candidate takes over at its next retry.
    third = start_controller(*lease_args)
    stopped = time.monotonic()
    assert follower.stop() == 0
    assert lease(api_client, f"leader-{jobs_ns}").spec.holder_identity in ("", None) or leaders(third)
    wait_for("the third replica to lead", lambda: leaders(third) == [third], 10)
    assert time.monotonic() - stopped < 6, "a released lease is taken without waiting for it to expire"

    # Losing the lease (someone else holds it) stops reconciling and exits non-zero.
    coordination = client.CoordinationV1Api(api_client)
    current = lease(api_client, f"leader-{jobs_ns}")
    current.spec.holder_identity = "intruder"
    current.spec.lease_duration_seconds = 60
    coordination.replace_namespaced_lease(f"leader-{jobs_ns}", ClusterSettings().operator_namespace, current)
    wait_for("the deposed leader to exit", lambda: not third.alive(), 15, on_timeout=third.log)
    assert third.process.returncode == 1
    start_controller()  # without election, to finish the namespace's jobs at teardown


def _renamed(objects: list[dict], suffix: str) -> list[dict]:
    renamed = [copy.deepcopy(obj) for obj in objects]  # one copy each: the manifests share their subjects
    for obj in renamed:
        obj["metadata"]["name"] += suffix
        for subject in obj.get("subjects") or []:
            subject["name"] += suffix
        if "roleRef" in obj:
            obj["roleRef"]["name"] += suffix
    return renamed


def test_readyz_waits_for_synced_caches_and_bootstrap_rbac_is_enough(kubeconfig, controller_prereqs, api_client,
                                                                     core, custom, jobs_ns, state_dir,
                                                                     tmp_path):
    """A controller with the bootstrap stack's ServiceAccount is not ready while its RBAC is missing, turns
    ready once it exists, and runs a job with no more rights than that RBAC grants."""
    from iflearner.bootstrap.operator import rbac

    settings = ClusterSettings()
    objects = _renamed(rbac(settings, (jobs_ns,)), f"-{jobs_ns}")  # granted in the job namespace only
    account, grants = objects[0], objects[1:]
    assert account["kind"] == "ServiceAccount"
    utils.create_from_dict(api_client, account)
    token = core.create_namespaced_service_account_token(
        account["metadata"]["name"], settings.operator_namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=["https://kubernetes.default.svc.cluster.local"], expiration_seconds=3600))).status.token
    admin = yaml.safe_load(kubeconfig.read_text())
    admin["users"] = [{"name": "operator", "user": {"token": token}}]
    for context in admin["contexts"]:
        context["context"]["user"] = "operator"
    restricted = tmp_path / "operator.kubeconfig"
    restricted.write_text(yaml.safe_dump(admin))

    process = ControllerProcess(restricted, state_dir, tmp_path / "restricted.log", "--namespace", jobs_ns).start()
    try:
        wait_for("the health endpoint", lambda: process.get("/healthz")[0] == 200, 30, on_timeout=process.log)
        time.sleep(3)
        code, text = process.get("/readyz")
        assert code == 503 and "caches not synced" in text, text
        assert process.get("/healthz")[0] == 200, "alive while waiting for permissions"

        for obj in grants:
            utils.create_from_dict(api_client, obj)
        wait_for("/readyz after the RBAC exists", lambda: process.get("/readyz")[0] == 200, 90,
                 on_timeout=process.log)
        create_job(custom, job_manifest("least-privilege", jobs_ns, role="client"))
        wait_ready_running(custom, jobs_ns, "least-privilege", process, timeout=120)
        custom.delete_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, "least-privilege")
        wait_for("the job to be gone", lambda: get_job(custom, jobs_ns, "least-privilege") is None, 60,
                 on_timeout=process.log)
    finally:
        process.stop()
        rbac_api = client.RbacAuthorizationV1Api(api_client)
        for obj in grants:
            name, namespace = obj["metadata"]["name"], obj["metadata"].get("namespace")
            if obj["kind"] == "ClusterRole":
                rbac_api.delete_cluster_role(name)
            elif obj["kind"] == "ClusterRoleBinding":
                rbac_api.delete_cluster_role_binding(name)
            elif obj["kind"] == "Role":
                rbac_api.delete_namespaced_role(name, namespace)
            else:
                rbac_api.delete_namespaced_role_binding(name, namespace)
        core.delete_namespaced_service_account(account["metadata"]["name"], settings.operator_namespace)
