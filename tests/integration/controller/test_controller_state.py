"""What one run leaves on the machine never breaks the next: operators with other backends and
passphrases, operators whose work directories were deleted, and `preview` beside them."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from controller_harness import (
    GROUP,
    PLURAL,
    VERSION,
    ControllerProcess,
    create_job,
    example,
    get_job,
    job_manifest,
    wait_for,
    wait_ready_running,
)
from kubernetes import client

from iflearner.localcluster.postgres import LocalPostgres
from iflearner.toolchain import REPO_ROOT

MERGE = "application/merge-patch+json"
JOB_LABEL = "iflearner.git.iflytek.com/job-name"


def _controller(kubeconfig: Path, state_dir: Path, backend: Path | str, passphrase: str, log: Path,
                *extra: str) -> ControllerProcess:
    if isinstance(backend, Path):
        backend.mkdir(parents=True, exist_ok=True)
    url = f"file://{backend}" if isinstance(backend, Path) else backend
    # The backend URL (it may hold a password) comes in through the environment, as in the Deployment.
    process = ControllerProcess(kubeconfig, state_dir, log, *extra,
                                env={"PULUMI_CONFIG_PASSPHRASE": passphrase, "IFLEARNER_BACKEND_URL": url})
    process.start().wait_ready()
    return process


def _forget_job(custom: client.CustomObjectsApi, core: client.CoreV1Api, networking: client.NetworkingV1Api,
                namespace: str, name: str) -> None:
    """The job and its objects vanish without the operator (as with a cluster that is gone)."""
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"finalizers": None}},
                                          _content_type=MERGE)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    selector = f"{JOB_LABEL}={name}"
    core.delete_collection_namespaced_pod(namespace, label_selector=selector, grace_period_seconds=0)
    for service in core.list_namespaced_service(namespace, label_selector=selector).items:
        core.delete_namespaced_service(service.metadata.name, namespace)
    core.delete_collection_namespaced_secret(namespace, label_selector=selector)
    core.delete_collection_namespaced_config_map(namespace, label_selector=selector)
    networking.delete_collection_namespaced_ingress(namespace, label_selector=selector)


def _preview(kubeconfig: Path, manifest: dict, backend: Path, passphrase: str, tmp_path: Path) -> dict:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(json.dumps(manifest))
    env = {**os.environ, "PULUMI_CONFIG_PASSPHRASE": passphrase}
    result = subprocess.run([sys.executable, "-m", "iflearner", "preview", str(job_file), "-o", "json",
                             "--kubeconfig", str(kubeconfig), "--backend-url", f"file://{backend}"],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_another_backend_and_passphrase_on_the_same_machine(kubeconfig, controller_prereqs, custom, core,
                                                           networking, jobs_ns, tmp_path):
    state_dir = tmp_path / "machine-state"  # one machine: both operators use the same work directory root
    manifest = example("server.yaml", jobs_ns)
    name = manifest["metadata"]["name"]

    first = _controller(kubeconfig, state_dir, tmp_path / "backend-one", "passphrase-one", tmp_path / "one.log")
    try:
        create_job(custom, manifest)
        wait_ready_running(custom, jobs_ns, name, first)
    finally:
        first.stop()
    _forget_job(custom, core, networking, jobs_ns, name)

    second = _controller(kubeconfig, state_dir, tmp_path / "backend-two", "passphrase-two", tmp_path / "two.log")
    try:
        create_job(custom, example("server.yaml", jobs_ns))
        job = wait_ready_running(custom, jobs_ns, name, second)
        assert job["status"]["lastOperation"]["failureCount"] == 0, job["status"]["lastOperation"]
        # preview works against either backend, each with its own passphrase
        mine = _preview(kubeconfig, manifest, tmp_path / "backend-two", "passphrase-two", tmp_path)
        assert mine["succeeded"] and not mine["changes"].get("create"), mine
        old = _preview(kubeconfig, manifest, tmp_path / "backend-one", "passphrase-one", tmp_path)
        assert old["succeeded"], old
        assert _preview(kubeconfig, manifest, tmp_path / "backend-two", "passphrase-two", tmp_path)["succeeded"]
    finally:
        second.stop()


def test_operator_with_fresh_work_directories_resumes_every_stack(kubeconfig, controller_prereqs, custom, core,
                                                                  jobs_ns, tmp_path):
    state_dir = tmp_path / "state"
    names = ("resume-a", "resume-b")
    first = _controller(kubeconfig, state_dir, tmp_path / "backend", "resume", tmp_path / "first.log")
    try:
        for name in names:
            manifest = example("server.yaml", jobs_ns)
            manifest["metadata"]["name"] = name
            manifest["spec"]["host"] = f"{name}.server.iflearner.com"
            create_job(custom, manifest)
        for name in names:
            wait_ready_running(custom, jobs_ns, name, first)
    finally:
        first.stop()
    shutil.rmtree(state_dir / "workspace")

    second = _controller(kubeconfig, state_dir, tmp_path / "backend", "resume", tmp_path / "second.log")
    try:
        for name in names:
            job = get_job(custom, jobs_ns, name)
            container = copy.deepcopy(job["spec"]["template"]["spec"]["containers"][0])
            container["args"] = [*container.get("args", []), "--epochs=3"]
            custom.patch_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name,
                                                  {"spec": {"template": {"spec": {"containers": [container]}}}},
                                                  _content_type=MERGE)
        for name in names:
            job = wait_ready_running(custom, jobs_ns, name, second, generation=2)
            assert job["status"]["lastOperation"]["failureCount"] == 0, job["status"]["lastOperation"]
            assert core.read_namespaced_pod(name, jobs_ns).spec.containers[0].args[-1] == "--epochs=3"
    finally:
        second.stop()


@pytest.fixture
def postgres(tmp_path):
    server = LocalPostgres(tmp_path / "postgres")
    try:
        yield server.up()
    finally:
        server.down(remove_data=True)


def test_postgres_backend_restart_is_free_and_updates_still_decrypt(kubeconfig, controller_prereqs, custom, core,
                                                                    jobs_ns, tmp_path, postgres):
    names = ("pg-server", "pg-party")
    first = _controller(kubeconfig, tmp_path / "state", postgres.url, "pg", tmp_path / "first.log")
    try:
        create_job(custom, job_manifest(names[0], jobs_ns))
        create_job(custom, job_manifest(names[1], jobs_ns, role="client"))
        for name in names:
            wait_ready_running(custom, jobs_ns, name, first)
    finally:
        first.stop()
    assert "pg-party" in subprocess.run(
        ["psql", postgres.url.replace("?sslmode=disable", ""), "-tAc", "SELECT key FROM pulumi_state"],
        capture_output=True, text=True, check=True).stdout, "the stacks live in PostgreSQL"

    # a fresh machine: new work directories, the same backend
    second = _controller(kubeconfig, tmp_path / "other-state", postgres.url, "pg", tmp_path / "second.log",
                         "--resync-period", "2")
    try:
        wait_for("a resync of both unchanged jobs", lambda: second.metric(
            "iflearner_gated_reconciles_total") >= 2 * len(names), 60, on_timeout=second.log)
        assert second.pulumi_runs() == 0, second.log()
        job = get_job(custom, jobs_ns, names[1])
        container = copy.deepcopy(job["spec"]["template"]["spec"]["containers"][0])
        container["args"] = [*container.get("args", []), "--epochs=3"]
        custom.patch_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, names[1],
                                              {"spec": {"template": {"spec": {"containers": [container]}}}},
                                              _content_type=MERGE)
        job = wait_ready_running(custom, jobs_ns, names[1], second, generation=2)
        assert job["status"]["lastOperation"]["result"] == "Succeeded", job["status"]["lastOperation"]
        assert second.pulumi_runs() == 1
    finally:
        second.stop()
