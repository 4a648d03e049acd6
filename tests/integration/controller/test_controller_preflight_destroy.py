"""Deleting a job never deletes someone else's object that took one of its names after the job was applied:
``pulumi destroy`` deletes by name, so the controller holds the deletion (finalizer kept, Stalled with
NameConflict) until the name holds the job's own object again or nothing."""

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
