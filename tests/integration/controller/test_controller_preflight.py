"""Preflight on the real API server with the real Pulumi engine: a job never adopts (or, when deleted,
destroys) an object it does not own, and a Pod the API server would refuse stalls the job with the API
server's own message, before any Pulumi run and without retries."""

from __future__ import annotations

import time

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

MERGE = "application/merge-patch+json"


def stack_file(state_dir, namespace: str, name: str):
    return state_dir / "state" / ".pulumi" / "stacks" / "iflearner-jobs" / f"{namespace}.{name}.json"


def wait_stalled(custom, namespace: str, name: str, reason: str, controller, generation: int = 1):
    def stalled():
        job = get_job(custom, namespace, name)
        found = condition(job, "Stalled")
        ok = (found.get("status") == "True" and found.get("reason") == reason
              and found.get("observedGeneration") == generation)
        return job if ok else None

    return wait_for(f"{namespace}/{name} to be Stalled with {reason}", stalled, 60, on_timeout=controller.log)


def reasons_of_events(core: client.CoreV1Api, namespace: str, name: str) -> list[str]:
    items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [e.reason for e in items if e.involved_object.kind == "IflearnerJob"]


def users_service(name: str) -> client.V1Service:
    return client.V1Service(metadata=client.V1ObjectMeta(name=name, labels={"owner": "a-person"}),
                            spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=8080)],
                                                      selector={"app": "mine"}))


def test_a_users_own_objects_are_neither_adopted_nor_deleted(controller, custom, core, jobs_ns, state_dir):
    name = "taken"
    service = core.create_namespaced_service(jobs_ns, users_service(name))
    secret = core.create_namespaced_secret(jobs_ns, client.V1Secret(
        metadata=client.V1ObjectMeta(name=f"{name}-tls"), string_data={"password": "the user's"}))
    runs = controller.pulumi_runs()

    create_job(custom, job_manifest(name, jobs_ns))
    job = wait_stalled(custom, jobs_ns, name, "NameConflict", controller)
    message = condition(job, "Stalled")["message"]
    assert f"Service {jobs_ns}/{name} already exists and is not this job's" in message
    assert f"Secret {jobs_ns}/{name}-tls already exists" in message
    assert condition(job, "Ready")["status"] == "False"
    assert job["status"]["message"].startswith("name conflict: metadata.name: ")
    time.sleep(6)  # a resync later: no Pulumi run, no stack, one Event
    assert controller.pulumi_runs() == runs, "no Pulumi run while a name is taken"
    assert not stack_file(state_dir, jobs_ns, name).exists()
    assert reasons_of_events(core, jobs_ns, name).count("NameConflict") == 1

    # Deleting the job leaves the user's objects exactly as they were.
    custom.delete_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name)
    wait_for("the job to be gone", lambda: get_job(custom, jobs_ns, name) is None, 30, on_timeout=controller.log)
    after = core.read_namespaced_service(name, jobs_ns)
    assert (after.metadata.uid, after.metadata.resource_version) == (service.metadata.uid,
                                                                      service.metadata.resource_version)
    assert after.spec.selector == {"app": "mine"}
    secret_after = core.read_namespaced_secret(f"{name}-tls", jobs_ns)
    assert (secret_after.metadata.uid, secret_after.metadata.resource_version) == (
        secret.metadata.uid, secret.metadata.resource_version)
    assert secret_after.type == "Opaque"


def test_a_conflict_clears_when_the_name_is_freed(controller, custom, core, jobs_ns):
    name = "freed"
    core.create_namespaced_config_map(jobs_ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=f"{name}-trust"), data={"mine": "yes"}))
    create_job(custom, job_manifest(name, jobs_ns, role="client"))
    job = wait_stalled(custom, jobs_ns, name, "NameConflict", controller)
    assert f"ConfigMap {jobs_ns}/{name}-trust" in condition(job, "Stalled")["message"]
    core.delete_namespaced_config_map(f"{name}-trust", jobs_ns)
    # No spec change: the next resync (5 s here) finds the name free and applies the job.
    job = wait_ready_running(custom, jobs_ns, name, controller, timeout=120)
    assert condition(job, "Stalled")["status"] == "False"
    trust = core.read_namespaced_config_map(f"{name}-trust", jobs_ns)
    assert trust.metadata.labels["iflearner.git.iflytek.com/job-uid"] == job["metadata"]["uid"]


def test_a_pod_the_api_server_refuses_stalls_with_its_message_and_no_pulumi_run(controller, custom, core,
                                                                                jobs_ns, state_dir):
    name = "bad-pod"
    manifest = job_manifest(name, jobs_ns)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["ports"] = "50001"  # a string where the API server wants a list of ports
    container["name"] = "Not_A_DNS_Label"
    runs = controller.pulumi_runs()
    create_job(custom, manifest)
    job = wait_stalled(custom, jobs_ns, name, "InvalidPodTemplate", controller)
    message = condition(job, "Stalled")["message"]
    assert 'spec.template.spec.containers[name="Not_A_DNS_Label"].ports: expected list' in message, message
    time.sleep(6)  # more than a resync period: still no Pulumi run, one Event, no retries
    assert controller.pulumi_runs() == runs
    assert not stack_file(state_dir, jobs_ns, name).exists()
    assert reasons_of_events(core, jobs_ns, name).count("InvalidPodTemplate") == 1
    assert "lastOperation" not in get_job(custom, jobs_ns, name)["status"]

    # Fix the type: now the API server names the invalid container name (a 422 with its field).
    container["ports"] = [{"containerPort": 50001}]
    custom.patch_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name,
                                          {"spec": {"template": {"spec": {"containers": [container]}}}},
                                          _content_type=MERGE)
    job = wait_stalled(custom, jobs_ns, name, "InvalidPodTemplate", controller, generation=2)
    assert "spec.template.spec.containers[0].name: Invalid value: \"Not_A_DNS_Label\"" in condition(
        job, "Stalled")["message"]
    assert controller.pulumi_runs() == runs

    # Duplicate ports: a plain create accepts them, the stack's server-side apply does not.
    container["name"] = "server"
    container["ports"] = [{"containerPort": 50001}, {"containerPort": 50001}]
    custom.patch_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name,
                                          {"spec": {"template": {"spec": {"containers": [container]}}}},
                                          _content_type=MERGE)
    job = wait_stalled(custom, jobs_ns, name, "InvalidPodTemplate", controller, generation=3)
    assert 'spec.template.spec.containers[name="server"].ports: duplicate entries' in condition(
        job, "Stalled")["message"]
    assert controller.pulumi_runs() == runs

    container["ports"] = [{"containerPort": 50001}]
    custom.patch_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name,
                                          {"spec": {"template": {"spec": {"containers": [container]}}}},
                                          _content_type=MERGE)
    job = wait_ready_running(custom, jobs_ns, name, controller, generation=4)
    assert job["status"]["lastOperation"]["failureCount"] == 0
    # A later template change validates under a probe name (the job's own Pod holds the name) and applies.
    container["args"] = ["python", "aggregate_server.py", "-n=2", "--epochs=3"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name,
                                          {"spec": {"template": {"spec": {"containers": [container]}}}},
                                          _content_type=MERGE)
    job = wait_ready_running(custom, jobs_ns, name, controller, generation=5)
    assert core.read_namespaced_pod(name, jobs_ns).spec.containers[0].args[-1] == "--epochs=3"
