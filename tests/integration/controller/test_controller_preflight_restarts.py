"""Ownership across operator restarts and upgrades, with controllers started and stopped by the test:

- deleting a job never deletes someone else's object that took one of its names after the job was
  applied: ``pulumi destroy`` deletes by name, so the controller holds the deletion (finalizer kept,
  Stalled with NameConflict) until the name holds the job's own object again or nothing;
- objects an older operator made (no job-uid label) stay the job's own: they are updated, not refused."""

from __future__ import annotations

import time

from controller_harness import (
    GROUP,
    PLURAL,
    VERSION,
    condition,
    create_job,
    get_job,
    gone,
    job_manifest,
    wait_for,
    wait_ready_running,
)
from kubernetes import client

from iflearner.desired import LABEL_JOB_UID


def test_deleting_a_job_spares_an_object_that_took_one_of_its_names(start_controller, custom, core, jobs_ns):
    first = start_controller()
    name = "replaced"
    create_job(custom, job_manifest(name, jobs_ns))
    wait_ready_running(custom, jobs_ns, name, first)
    first.stop()

    # While no operator runs, the job's Service is deleted and a person creates their own under its name.
    core.delete_namespaced_service(name, jobs_ns)
    wait_for("the job's Service to be gone", lambda: gone(lambda: core.read_namespaced_service(name, jobs_ns)), 30)
    users = core.create_namespaced_service(jobs_ns, client.V1Service(
        metadata=client.V1ObjectMeta(name=name, labels={"owner": "a-person"}),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=8080)], selector={"app": "mine"})))
    custom.delete_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name)

    second = start_controller()

    def held() -> dict | None:
        job = get_job(custom, jobs_ns, name)
        stalled = condition(job, "Stalled")
        return job if stalled.get("status") == "True" and stalled.get("reason") == "NameConflict" else None

    job = wait_for("the deletion to wait on the name conflict", held, 60, on_timeout=second.log)
    assert f"Service {jobs_ns}/{name} is not this job's" in condition(job, "Stalled")["message"]
    assert "iflearner.git.iflytek.com/stack" in job["metadata"]["finalizers"]
    time.sleep(3)
    service = core.read_namespaced_service(name, jobs_ns)
    assert (service.metadata.uid, service.spec.selector) == (users.metadata.uid, {"app": "mine"})
    assert second.metric("iflearner_pulumi_runs_total", operation="destroy") == 0

    # Once the person removes their Service, the deletion goes ahead (looked at again every 30 s).
    core.delete_namespaced_service(name, jobs_ns)
    wait_for("the job to be gone", lambda: get_job(custom, jobs_ns, name) is None, 90, on_timeout=second.log)
    wait_for("the job's Pod to be deleted", lambda: gone(lambda: core.read_namespaced_pod(name, jobs_ns)), 60)


def test_objects_made_before_the_uid_label_stay_the_jobs_own(start_controller, custom, core, networking, jobs_ns):
    first = start_controller()
    name = "upgraded"
    create_job(custom, job_manifest(name, jobs_ns, role="client"))
    job = wait_ready_running(custom, jobs_ns, name, first)
    first.stop()
    # What an operator before the label left behind: the same objects without the job-uid label.
    unlabel = {"metadata": {"labels": {LABEL_JOB_UID: None}}}
    core.patch_namespaced_service(name, jobs_ns, unlabel)
    core.patch_namespaced_secret(f"{name}-tls", jobs_ns, unlabel)
    core.patch_namespaced_config_map(f"{name}-trust", jobs_ns, unlabel)
    networking.patch_namespaced_ingress(name, jobs_ns, unlabel)
    core.patch_namespaced_pod(name, jobs_ns, unlabel)
    pod_uid = core.read_namespaced_pod(name, jobs_ns).metadata.uid

    # The restarted operator sees its objects changed and runs up (with a refresh) over them: they are
    # recognised as the job's by its other labels and status.applied, updated and labelled again.
    second = start_controller()
    uid = job["metadata"]["uid"]

    def labelled() -> bool:
        return all(labels.get(LABEL_JOB_UID) == uid for labels in (
            core.read_namespaced_service(name, jobs_ns).metadata.labels,
            core.read_namespaced_secret(f"{name}-tls", jobs_ns).metadata.labels,
            core.read_namespaced_config_map(f"{name}-trust", jobs_ns).metadata.labels,
            networking.read_namespaced_ingress(name, jobs_ns).metadata.labels,
            core.read_namespaced_pod(name, jobs_ns).metadata.labels))

    wait_for("the job's old objects to be labelled again", labelled, 90, on_timeout=second.log)
    job = wait_ready_running(custom, jobs_ns, name, second, generation=1)
    assert condition(job, "Stalled")["status"] == "False"
    assert job["status"]["lastOperation"]["failureCount"] == 0
    assert core.read_namespaced_pod(name, jobs_ns).metadata.uid == pod_uid, "updated in place, not replaced"
