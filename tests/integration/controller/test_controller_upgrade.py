"""An operator upgrade from a real earlier state never restarts a training Pod.

The operator of commit ``ebb07cd`` (the last before the signer: its program revision 1 read the CA
Secret in every stack, and its Pods mount a service-account token) runs jobs; then the current
operator takes over its state, with the current CRD and program revision. Each job's stack is
migrated by exactly one `up`, nothing fails, every job is Ready, and every Pod is the Pod the old
operator made (its spec did not change: the upgrade keeps its token mount, see
``syncpass.legacy_token_mount``)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from controller_harness import (
    ControllerProcess,
    create_job,
    get_job,
    job_manifest,
    wait_for,
    wait_ready_running,
)

from iflearner.controller.gating import PROGRAM_REVISION
from iflearner.toolchain import REPO_ROOT

EARLIER = "ebb07cd"  # the last commit before the signer changed every stack
JOBS = (("upgrade-server", "server"), ("upgrade-client-a", "client"), ("upgrade-client-b", "client"))


def _tree_of(commit: str, root: Path) -> Path:
    """The repository as it was at ``commit`` (from this checkout's history)."""
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    return root


def _kubectl_apply(kubeconfig: Path, crd: Path) -> None:
    subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "apply", "--server-side", "--force-conflicts",
                    "-f", str(crd)], check=True, capture_output=True)


def test_an_upgrade_from_before_the_signer_migrates_each_stack_once_and_keeps_every_pod(
        start_controller, kubeconfig, controller_prereqs, state_dir, custom, core, jobs_ns, tmp_path):
    earlier = _tree_of(EARLIER, tmp_path / "earlier")
    assert PROGRAM_REVISION != "1", "this test upgrades from program revision 1"
    try:
        _kubectl_apply(kubeconfig, earlier / "crd" / "iflearnerjob.yaml")
        old = ControllerProcess(kubeconfig, state_dir, tmp_path / "earlier.log", "--workers", "2",
                                code=earlier).start()
        try:
            old.wait_ready()
            for name, role in JOBS:
                create_job(custom, job_manifest(name, jobs_ns, role=role))
            for name, _ in JOBS:
                wait_ready_running(custom, jobs_ns, name, old)
        finally:
            old.stop()
        pods = {name: core.read_namespaced_pod(name, jobs_ns).metadata.uid for name, _ in JOBS}
        fingerprints = {name: get_job(custom, jobs_ns, name)["status"]["applied"]["fingerprint"] for name, _ in JOBS}
    finally:
        _kubectl_apply(kubeconfig, REPO_ROOT / "crd" / "iflearnerjob.yaml")  # the upgrade's CRD, for every test

    # The current operator (stopped after the test's jobs are deleted: it finalizes them).
    new = start_controller("--workers", "2")

    def migrated() -> bool:
        jobs = {name: get_job(custom, jobs_ns, name) for name, _ in JOBS}
        return all(j["status"].get("applied", {}).get("fingerprint") not in (None, fingerprints[n])
                   for n, j in jobs.items())

    wait_for("every job's stack migrated by the current operator", migrated, 300, on_timeout=new.log)
    for name, _ in JOBS:
        wait_ready_running(custom, jobs_ns, name, new)
    assert new.metric("iflearner_pulumi_runs_total", operation="up", result="succeeded") == len(JOBS), new.log()
    assert new.metric("iflearner_pulumi_runs_total", operation="up", result="failed") == 0, new.log()
    assert {name: core.read_namespaced_pod(name, jobs_ns).metadata.uid for name, _ in JOBS} == pods
