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
