"""Locks and leadership with the controller process, the real API server and the real Pulumi engine.

- A leader whose Lease renewals are refused (a ValidatingAdmissionPolicy on the real API server denies
  them) has no live Pulumi process left by the moment another replica could take the Lease, even while
  a ``pulumi destroy`` was running (it waits on a Pod held by a finalizer).
- A lock of a run on another host (a person's ``pulumi`` against the same backend) is never removed,
  even by the leader: the job's condition names the holder and the job retries until the lock goes.
"""

from __future__ import annotations

import datetime
import json
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from controller_harness import (
    GROUP,
    PLURAL,
    VERSION,
    condition,
    create_job,
    get_job,
    job_manifest,
    wait_for,
    wait_ready_running,
)
from kubernetes import client
from kubernetes.client.rest import ApiException

from iflearner.desired import ClusterSettings
from iflearner.job import stack_name_of
from iflearner.stackrunner import PROJECT_NAME

MERGE = "application/merge-patch+json"
HOLD = "test.iflearner/hold"
# Fencing plan for 6 / 4 / 1: fence at 4.1 s, SIGTERM grace 0.6 s, all dead by 5.7 s, takeover from 6 s.
FAST_LEASE = ("--leader-elect", "--lease-duration", "6", "--renew-deadline", "4", "--retry-period", "1")


def pulumi_processes(root: int) -> list[tuple[int, str]]:
    """Processes named pulumi* (the CLI, its language host and providers) among ``root``'s descendants."""
    from iflearner.pulumiruns import tree

    found = []
    for info in tree(root)[1:]:
        try:
            stat = Path(f"/proc/{info.pid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.find("(") + 1: stat.rindex(")")]
        if name.startswith("pulumi") and info.state not in ("Z", "X"):
            found.append((info.pid, name))
    return found


def lock_files(state_dir: Path) -> list[Path]:
    return list((state_dir / "state" / ".pulumi" / "locks").rglob("*.json"))


def deny_lease_updates(api_client: client.ApiClient, lease_name: str) -> list[tuple[str, str]]:
    admission = client.AdmissionregistrationV1Api(api_client)
    name = f"deny-{lease_name}"
    admission.create_validating_admission_policy(client.V1ValidatingAdmissionPolicy(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ValidatingAdmissionPolicySpec(
            failure_policy="Fail",
            match_constraints=client.V1MatchResources(resource_rules=[client.V1NamedRuleWithOperations(
                api_groups=["coordination.k8s.io"], api_versions=["v1"], operations=["UPDATE"],
                resources=["leases"])]),
            validations=[client.V1Validation(expression=f"object.metadata.name != '{lease_name}'",
                                             message="lease renewals refused by the fencing test")])))
    admission.create_validating_admission_policy_binding(client.V1ValidatingAdmissionPolicyBinding(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ValidatingAdmissionPolicyBindingSpec(policy_name=name, validation_actions=["Deny"])))
    return [("policy", name), ("binding", name)]


class SilentServer:
    """A TCP server that accepts connections and never answers: a webhook the API server waits on."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.sock.close()
        for connection in self.accepted:
            connection.close()


def hang_lease_updates(api_client: client.ApiClient, lease_name: str, server: SilentServer,
                       ca_bundle: str) -> None:
    """Lease renewals hang for 30 s (a webhook that never answers), then fail: a partitioned API server."""
    admission = client.AdmissionregistrationV1Api(api_client)
    admission.create_validating_webhook_configuration(client.V1ValidatingWebhookConfiguration(
        metadata=client.V1ObjectMeta(name=f"deny-{lease_name}"),
        webhooks=[client.V1ValidatingWebhook(
            name="hang.fencing.test.iflearner", admission_review_versions=["v1"], side_effects="None",
            failure_policy="Fail", timeout_seconds=30,
            client_config=client.AdmissionregistrationV1WebhookClientConfig(
                url=f"https://127.0.0.1:{server.port}/", ca_bundle=ca_bundle),
            rules=[client.V1RuleWithOperations(api_groups=["coordination.k8s.io"], api_versions=["v1"],
                                               operations=["UPDATE"], resources=["leases"])],
            match_conditions=[client.V1MatchCondition(
                name="this-lease", expression=f"object.metadata.name == '{lease_name}'")])]))


def allow_lease_updates(api_client: client.ApiClient, lease_name: str) -> None:
    admission = client.AdmissionregistrationV1Api(api_client)
    for delete in (admission.delete_validating_admission_policy_binding,
                   admission.delete_validating_admission_policy,
                   admission.delete_validating_webhook_configuration):
        try:
            delete(f"deny-{lease_name}")
        except ApiException:
            pass


def renewals_refused(coordination: client.CoordinationV1Api, lease_name: str) -> bool:
    namespace = ClusterSettings().operator_namespace
    lease = coordination.read_namespaced_lease(lease_name, namespace)
    try:
        coordination.replace_namespaced_lease(lease_name, namespace, lease, dry_run="All")
    except ApiException as error:
        return error.status in (400, 403, 422)
    return False


@pytest.mark.parametrize("failure", ["refused", "hanging"])
def test_a_leader_whose_renewals_fail_has_no_pulumi_run_left_when_the_lease_could_pass(
        failure, start_controller, custom, core, api_client, jobs_ns, state_dir, kubeconfig):
    """``refused``: the API server answers 'no' at once. ``hanging``: it does not answer for 30 s (the
    renewal call blocks, as with a partition); the fence must not wait for that call."""
    lease_name = f"fence-{jobs_ns}"
    server = SilentServer()
    leader = start_controller(*FAST_LEASE, "--leader-election-name", lease_name)
    wait_for("the leader", lambda: leader.metric("iflearner_leader") == 1, 30, on_timeout=leader.log)
    name = "fenced"
    create_job(custom, job_manifest(name, jobs_ns, role="client"))
    wait_ready_running(custom, jobs_ns, name, leader)

    # A long run: destroying the job waits for its Pod, which a finalizer holds.
    core.patch_namespaced_pod(name, jobs_ns, {"metadata": {"finalizers": [HOLD]}})
    custom.delete_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name)
    coordination = client.CoordinationV1Api(api_client)
    try:
        wait_for("pulumi destroy to be running", lambda: pulumi_processes(leader.pid) and lock_files(state_dir),
                 60, interval=0.1, on_timeout=leader.log)
        if failure == "refused":
            deny_lease_updates(api_client, lease_name)
            wait_for("the API server to refuse renewals", lambda: renewals_refused(coordination, lease_name), 30,
                     interval=0.1)
        else:
            cluster = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
            hang_lease_updates(api_client, lease_name, server, cluster["certificate-authority-data"])
            wait_for("a renewal to hang in the webhook", lambda: server.accepted, 30, interval=0.05,
                     on_timeout=leader.log)
        refused_at = datetime.datetime.now(datetime.UTC)
        running = pulumi_processes(leader.pid)
        assert running, "the destroy was still running when renewals began to fail"
        gone_at: list[datetime.datetime] = []

        def watch() -> None:  # for the report: when the last Pulumi process went
            while pulumi_processes(leader.pid):
                time.sleep(0.02)
            gone_at.append(datetime.datetime.now(datetime.UTC))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        # The earliest moment another replica may take the lease: its last renewal + its duration.
        namespace = ClusterSettings().operator_namespace

        def takeover_time() -> datetime.datetime:
            spec = coordination.read_namespaced_lease(lease_name, namespace).spec
            return spec.renew_time + datetime.timedelta(seconds=spec.lease_duration_seconds)

        while True:
            earliest = takeover_time()
            now = datetime.datetime.now(datetime.UTC)
            if now >= earliest and takeover_time() == earliest:
                break
            time.sleep(min(0.05, max(0.0, (earliest - now).total_seconds())))
        left = pulumi_processes(leader.pid) if leader.alive() else []
        assert left == [], f"Pulumi processes alive when the lease could pass on: {left}\n{leader.log()}"
        watcher.join(5)
        renewed = earliest - datetime.timedelta(seconds=6)
        refused_after = (refused_at - renewed).total_seconds()
        gone_after = (gone_at[0] - renewed).total_seconds()
        print(f"\nfencing timeline (s after the last renewal): renewals failing from {refused_after:.2f}, "
              f"last Pulumi process gone {gone_after:.2f}, takeover possible 6.00; processes before: {running}")
        wait_for("the deposed leader to exit", lambda: not leader.alive(), 30, on_timeout=leader.log)
        assert leader.process.returncode == 1
        assert "fenced: every Pulumi run of this replica is stopped" in leader.log(400)
    finally:
        allow_lease_updates(api_client, lease_name)
        server.close()
        try:
            core.patch_namespaced_pod(name, jobs_ns, {"metadata": {"finalizers": None}})
        except ApiException:
            pass
    # A new leader finishes the destroy; the lock the fenced run may have left is from a dead process here.
    successor = start_controller(*FAST_LEASE, "--leader-election-name", lease_name)
    wait_for("the job to be gone", lambda: get_job(custom, jobs_ns, name) is None, 120, on_timeout=successor.log)
    assert lock_files(state_dir) == []


def test_a_lock_of_a_run_on_another_host_is_waited_on_and_named_in_the_job_status(
        start_controller, custom, jobs_ns, state_dir):
    controller = start_controller("--leader-elect", "--leader-election-name", f"locks-{jobs_ns}")
    wait_for("the leader", lambda: controller.metric("iflearner_leader") == 1, 30, on_timeout=controller.log)
    name = "foreign-lock"
    create_job(custom, job_manifest(name, jobs_ns, role="client"))
    wait_ready_running(custom, jobs_ns, name, controller)

    # Someone runs `pulumi up` on this job's stack from a laptop, against the same backend.
    stack = stack_name_of(jobs_ns, name)
    lock = state_dir / "state" / ".pulumi" / "locks" / "organization" / PROJECT_NAME / stack / f"{uuid.uuid4()}.json"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": 4242, "username": "alice", "hostname": "alice-laptop",
                                "timestamp": datetime.datetime.now(datetime.UTC).isoformat()}))
    job = get_job(custom, jobs_ns, name)
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [*container["args"][:-1], "--epochs=3"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name,
                                          {"spec": {"template": {"spec": {"containers": [container]}}}},
                                          _content_type=MERGE)

    def refused() -> dict | None:
        job = get_job(custom, jobs_ns, name)
        error = ((job or {}).get("status") or {}).get("lastOperation", {}).get("error") or ""
        return job if "alice@alice-laptop (pid 4242)" in error else None

    job = wait_for("the job to report the foreign lock", refused, 90, on_timeout=controller.log)
    ready = condition(job, "Ready")
    message = ready.get("message", "")
    assert "locked by a run that may still be alive: alice@alice-laptop (pid 4242)" in message, message
    assert ready.get("reason") == "StackLocked", ready
    assert job["status"]["lastOperation"]["reason"] == "StackLocked", job["status"]["lastOperation"]
    # Retries keep waiting; the lock stays.
    wait_for("a second attempt", lambda: (get_job(custom, jobs_ns, name) or {}).get("status", {})
             .get("lastOperation", {}).get("failureCount", 0) >= 2, 60, on_timeout=controller.log)
    assert lock.exists(), "the leader removed the lock of a run on another host"
    # The person's run ends: the job converges on its own.
    lock.unlink()
    wait_ready_running(custom, jobs_ns, name, controller, generation=2)
