"""The state volume is lost while the operator is down (a node gone with its hostPath, a PVC made
again): the restarted operator lists the backend, finds the applied jobs without stacks, and
rebuilds each stack by adopting the job's objects as they are. Nothing is deleted or duplicated,
no Pod is replaced, and an Event says what happened. (Before, such jobs stayed without a stack
until their next change: the backend no longer knew them.)"""

from __future__ import annotations

import shutil

from controller_harness import create_job, job_manifest, wait_for, wait_ready_running

from iflearner.job import stack_name_of

JOBS = ("lost-a", "lost-b")
SECRET = "pg-secret-7f3a"


def _stack_file(state_dir, namespace: str, name: str):
    return state_dir / "state" / ".pulumi" / "stacks" / "iflearner-jobs" / f"{stack_name_of(namespace, name)}.json"


def test_lost_stacks_are_rebuilt_from_the_jobs_objects(start_controller, custom, core, jobs_ns, state_dir):
    controller = start_controller("--workers", "2")
    for name in JOBS:
        create_job(custom, job_manifest(name, jobs_ns))
    for name in JOBS:
        wait_ready_running(custom, jobs_ns, name, controller)
    pods = {name: core.read_namespaced_pod(name, jobs_ns).metadata.uid for name in JOBS}
    objects = sorted(f"{o.kind}/{o.metadata.name}" for o in [
        *core.list_namespaced_secret(jobs_ns).items, *core.list_namespaced_service(jobs_ns).items,
        *core.list_namespaced_config_map(jobs_ns).items, *core.list_namespaced_pod(jobs_ns).items]
        if (o.metadata.labels or {}).get("app.kubernetes.io/managed-by"))
    controller.stop()

    # The volume is gone: the backend's whole directory, stacks, history and locks.
    shutil.rmtree(state_dir / "state" / ".pulumi")
    assert not any(_stack_file(state_dir, jobs_ns, name).exists() for name in JOBS)

    restarted = start_controller("--workers", "2")
    wait_for("both stacks rebuilt", lambda: all(_stack_file(state_dir, jobs_ns, n).exists() for n in JOBS), 120,
             on_timeout=restarted.log)
    for name in JOBS:
        wait_ready_running(custom, jobs_ns, name, restarted)
    wait_for("one up per lost stack", lambda: restarted.pulumi_runs() >= len(JOBS), 60)
    assert restarted.pulumi_runs() == len(JOBS), restarted.log()
    assert {name: core.read_namespaced_pod(name, jobs_ns).metadata.uid for name in JOBS} == pods
    after = sorted(f"{o.kind}/{o.metadata.name}" for o in [
        *core.list_namespaced_secret(jobs_ns).items, *core.list_namespaced_service(jobs_ns).items,
        *core.list_namespaced_config_map(jobs_ns).items, *core.list_namespaced_pod(jobs_ns).items]
        if (o.metadata.labels or {}).get("app.kubernetes.io/managed-by"))
    assert after == objects, "nothing deleted or duplicated"
    events = core.list_namespaced_event(jobs_ns, field_selector="reason=StackRebuilt").items
    assert sorted(e.involved_object.name for e in events) == sorted(JOBS), [e.message for e in events]
    assert "nothing replaced" in events[0].message


def test_an_unreachable_backend_rebuilds_nothing_and_a_job_that_must_change_says_why(
        start_controller, custom, core, jobs_ns):
    """A backend that answers nothing (here a PostgreSQL URL where nothing listens) is no proof of
    loss: the running job is left as it is (no Pulumi run, the same Pod), and a job whose spec
    changes waits, its Ready condition saying that the backend cannot be reached."""
    controller = start_controller("--workers", "2")
    create_job(custom, job_manifest("unreached", jobs_ns))
    wait_ready_running(custom, jobs_ns, "unreached", controller)
    pod = core.read_namespaced_pod("unreached", jobs_ns).metadata.uid
    controller.stop()

    # With a password in the URL (as a stateBackendSecret may hold it): never in a status or a log.
    cut_off = start_controller("--workers", "2", "--backend-url",
                               f"postgres://iflearner:{SECRET}@127.0.0.1:9/none?sslmode=disable")
    wait_for("the inventory to fail", lambda: cut_off.metric("iflearner_stack_inventories_total", result="failed")
             >= 1, 120, on_timeout=cut_off.log)
    assert cut_off.pulumi_runs() == 0, cut_off.log()
    assert core.read_namespaced_pod("unreached", jobs_ns).metadata.uid == pod

    custom.patch_namespaced_custom_object("git.iflytek.com", "v1", jobs_ns, "iflearnerjobs", "unreached",
                                          {"spec": {"template": {"metadata": {"annotations": {"x": "1"}}}}})

    def says_why() -> dict | None:
        job = custom.get_namespaced_custom_object("git.iflytek.com", "v1", jobs_ns, "iflearnerjobs", "unreached")
        ready = next((c for c in (job.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})
        return ready if ready.get("status") == "False" and "127.0.0.1:9" in ready.get("message", "") else None

    ready = wait_for("the job to say its backend cannot be reached", says_why, 120, on_timeout=cut_off.log)
    print(f"Ready: {ready['reason']}: {ready['message'][:300]}")
    job = custom.get_namespaced_custom_object("git.iflytek.com", "v1", jobs_ns, "iflearnerjobs", "unreached")
    assert SECRET not in str(job["status"]), job["status"]
    assert SECRET not in cut_off.log(tail=100000)
    assert core.read_namespaced_pod("unreached", jobs_ns).metadata.uid == pod, "nothing recreated"
    cut_off.stop()
    start_controller("--workers", "2")  # the real backend again: the job's deletion at the end needs it
