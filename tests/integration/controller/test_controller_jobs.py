"""The controller converges IflearnerJobs on the real control plane with the real Pulumi engine:
the original examples run, spec changes and hand-made damage are repaired, deletion leaves nothing,
invalid jobs stall alone, resyncs of unchanged jobs start no Pulumi, and the metrics/probes answer."""

from __future__ import annotations

import copy
import subprocess
import time

import yaml
from controller_harness import (
    GROUP,
    PLURAL,
    VERSION,
    condition,
    create_job,
    example,
    get_job,
    gone,
    job_manifest,
    wait_for,
    wait_ready_running,
)
from kubernetes import client

from iflearner.desired import TRUST_VOLUMES
from iflearner.toolchain import REPO_ROOT

MERGE = "application/merge-patch+json"


def events_for(core: client.CoreV1Api, namespace: str, name: str) -> list[tuple[str, str]]:
    items = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return [(e.reason, e.type) for e in items if e.involved_object.kind == "IflearnerJob"]


def stack_file(state_dir, namespace: str, name: str):
    return state_dir / "state" / ".pulumi" / "stacks" / "iflearner-jobs" / f"{namespace}.{name}.json"


def test_original_examples_become_ready_and_running(controller, custom, core, networking, jobs_ns):
    for file in ("server.yaml", "party-a.yaml", "party-b.yaml"):
        create_job(custom, example(file, jobs_ns))
    names = ("iflearnerjob-server", "iflearnerjob-client1", "iflearnerjob-client2")
    jobs = {name: wait_ready_running(custom, jobs_ns, name, controller) for name in names}

    for name, job in jobs.items():
        status = job["status"]
        assert status["observedGeneration"] == job["metadata"]["generation"]
        assert {c["type"] for c in status["conditions"]} == {"Ready", "Reconciling", "Stalled"}
        assert all(c["observedGeneration"] == job["metadata"]["generation"] for c in status["conditions"])
        assert condition(job, "Stalled")["status"] == "False"
        assert condition(job, "Reconciling")["status"] == "False"
        assert status["lastOperation"]["kind"] == "up" and status["lastOperation"]["result"] == "Succeeded"
        assert status["lastOperation"]["failureCount"] == 0
        assert status["outputs"]["pod"] == name and status["outputs"]["service"] == name
        assert "BEGIN" not in yaml.safe_dump(status), "no certificate or key in status"
        assert "iflearner.git.iflytek.com/stack" in job["metadata"]["finalizers"]
        # Every object of the role exists.
        pod = core.read_namespaced_pod(name, jobs_ns)
        assert pod.metadata.labels["app"] == name and pod.status.phase == "Running"
        service = core.read_namespaced_service(name, jobs_ns)
        ports = {(p.name, p.port, p.target_port) for p in service.spec.ports}
        ingress = networking.read_namespaced_ingress(name, jobs_ns)
        assert ingress.spec.rules[0].host == job["spec"]["host"]
        secret = core.read_namespaced_secret(status["outputs"]["tlsSecret"], jobs_ns)
        assert secret.type == "kubernetes.io/tls"
        if name == "iflearnerjob-server":
            assert ports == {("grpc", 80, 50001), ("http", 82, 50002)}
            assert "trustConfigMap" not in status["outputs"]
        else:
            assert ports == {("grpc", 80, 50001)}
            trust = core.read_namespaced_config_map(status["outputs"]["trustConfigMap"], jobs_ns)
            assert set(trust.data) == {key for _, key in TRUST_VOLUMES}
            mounts = {m.mount_path for m in pod.spec.containers[0].volume_mounts}
            assert {"/etc/server-iflearner-secret.crt", "/etc/party-iflearner-secret.crt"} <= mounts
        assert ("Ready", "Normal") in events_for(core, jobs_ns, name)

    # kubectl shows role, host, phase and readiness.
    table = subprocess.run(["kubectl", "--kubeconfig", str(controller.argv[4]), "get", "iflearnerjobs", "-n",
                            jobs_ns], capture_output=True, text=True, check=True).stdout
    assert "job1.server.iflearner.com" in table and "Running" in table and "True" in table


def test_template_change_replaces_pod_and_hand_deletions_are_repaired(controller, custom, core, networking,
                                                                      jobs_ns):
    name = "repair-me"
    create_job(custom, job_manifest(name, jobs_ns))
    wait_ready_running(custom, jobs_ns, name, controller)
    first_uid = core.read_namespaced_pod(name, jobs_ns).metadata.uid

    job = get_job(custom, jobs_ns, name)
    container = copy.deepcopy(job["spec"]["template"]["spec"]["containers"][0])
    container["args"] = ["python", "aggregate_server.py", "-n=2", "--epochs=3"]
    custom.patch_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name,
                                          {"spec": {"template": {"spec": {"containers": [container]}}}},
                                          _content_type=MERGE)
    job = wait_ready_running(custom, jobs_ns, name, controller, generation=2)
    pod = core.read_namespaced_pod(name, jobs_ns)
    assert pod.metadata.uid != first_uid, "the Pod was replaced"
    assert pod.spec.containers[0].args[-1] == "--epochs=3"
    # The replacement deletes the old Pod first, so the first up succeeds.
    assert job["status"]["lastOperation"]["failureCount"] == 0, job["status"]["lastOperation"]
    failures = core.list_namespaced_event(jobs_ns, field_selector="reason=StackUpdateFailed").items
    assert not failures, [e.message for e in failures]

    core.delete_namespaced_service(name, jobs_ns)
    wait_for("the deleted Service to come back", lambda: core.read_namespaced_service(name, jobs_ns), 90,
             on_timeout=controller.log)
    networking.delete_namespaced_ingress(name, jobs_ns)
    ingress = wait_for("the deleted Ingress to come back",
                       lambda: networking.read_namespaced_ingress(name, jobs_ns), 90, on_timeout=controller.log)
    assert ingress.spec.rules[0].host == job["spec"]["host"]
    wait_ready_running(custom, jobs_ns, name, controller)




def test_hand_edit_of_an_owned_object_is_reverted(controller, custom, networking, jobs_ns):
    name = "revert-me"
    create_job(custom, job_manifest(name, jobs_ns))
    job = wait_ready_running(custom, jobs_ns, name, controller)
    ingress = networking.read_namespaced_ingress(name, jobs_ns)
    assert str(job["status"]["applied"]["objects"][f"Ingress/{name}"]).startswith(ingress.metadata.uid)
    networking.patch_namespaced_ingress(name, jobs_ns, {"spec": {"rules": [{"host": "evil.example.com"}]}})
    wait_for("the edited Ingress to be restored",
             lambda: networking.read_namespaced_ingress(name, jobs_ns).spec.rules[0].host == job["spec"]["host"],
             60, on_timeout=controller.log)
    wait_ready_running(custom, jobs_ns, name, controller)


def test_a_status_edited_elsewhere_is_repaired_from_the_cluster(controller, custom, jobs_ns):
    """A hand edit of the status (or a former leader's late write) is read back and rewritten from
    what the controller observes, at once and without a Pulumi run."""
    name = "status-repair"
    create_job(custom, job_manifest(name, jobs_ns))
    job = wait_ready_running(custom, jobs_ns, name, controller)
    time.sleep(2)  # the follow-up reconciles of the job's own events
    runs = controller.pulumi_runs()
    ready = condition(job, "Ready")
    forged = {"phase": "Failed", "message": "forged by hand",
              "conditions": [{**ready, "status": "False", "reason": "Forged", "message": "forged by hand"}]}
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, jobs_ns, PLURAL, name, {"status": forged})
    started = time.monotonic()
    repaired = wait_for("the forged status to be repaired",
                        lambda: (lambda j: j if j["status"]["phase"] == "Running"
                                 and condition(j, "Ready")["status"] == "True" else None)(
                            get_job(custom, jobs_ns, name)), 30, on_timeout=controller.log)
    print(f"status repaired {time.monotonic() - started:.2f}s after the forged write")
    assert repaired["status"]["message"] != "forged by hand"
    assert condition(repaired, "Ready")["reason"] != "Forged"
    assert controller.pulumi_runs() == runs, "repairing a status runs no Pulumi"


def test_resync_of_unchanged_jobs_starts_no_pulumi(controller, custom, jobs_ns):
    for index in range(3):
        create_job(custom, job_manifest(f"steady-{index}", jobs_ns))
    for index in range(3):
        wait_ready_running(custom, jobs_ns, f"steady-{index}", controller)
    # Let the follow-up reconciles that the stacks' own events trigger settle.
    time.sleep(2)
    runs = controller.pulumi_runs()
    reconciles = controller.metric("iflearner_reconciles_total")
    versions = {j: get_job(custom, jobs_ns, j)["metadata"]["resourceVersion"] for j in
                (f"steady-{i}" for i in range(3))}
    time.sleep(12)  # more than two resync periods (5 s)
    assert controller.metric("iflearner_reconciles_total") >= reconciles + 6, "resyncs reconciled the jobs"
    assert controller.pulumi_runs() == runs, "a resync of unchanged jobs runs no Pulumi"
    for job, version in versions.items():
        assert get_job(custom, jobs_ns, job)["metadata"]["resourceVersion"] == version, "no status rewrite"


def test_deleting_a_job_removes_every_object_and_its_stack(controller, custom, core, networking, jobs_ns,
                                                           state_dir):
    name = "short-lived"
    create_job(custom, job_manifest(name, jobs_ns, role="client"))
    job = wait_ready_running(custom, jobs_ns, name, controller)
    outputs = job["status"]["outputs"]
    assert stack_file(state_dir, jobs_ns, name).exists()

    custom.delete_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, name)
    wait_for("the job to be gone", lambda: get_job(custom, jobs_ns, name) is None, 90, on_timeout=controller.log)
    reads = {
        "Pod": lambda: core.read_namespaced_pod(outputs["pod"], jobs_ns),
        "Service": lambda: core.read_namespaced_service(outputs["service"], jobs_ns),
        "Ingress": lambda: networking.read_namespaced_ingress(outputs["ingress"], jobs_ns),
        "Secret": lambda: core.read_namespaced_secret(outputs["tlsSecret"], jobs_ns),
        "ConfigMap": lambda: core.read_namespaced_config_map(outputs["trustConfigMap"], jobs_ns),
    }
    for kind, read in reads.items():
        wait_for(f"the job's {kind} to be deleted", lambda read=read: gone(read), 60)
    assert not stack_file(state_dir, jobs_ns, name).exists(), "the stack is removed"
    labelled = core.list_namespaced_pod(jobs_ns, label_selector=f"iflearner.git.iflytek.com/job-name={name}")
    assert labelled.items == [] or all(p.metadata.deletion_timestamp for p in labelled.items)


def create_job_past_cel_rule(custom, kubeconfig, namespace: str, name: str) -> None:
    """Create a job whose only fault is one the CRD's CEL rule catches (a peer equal to the job's own
    host), by applying the CRD without that rule for a moment: an older CRD would let it through."""
    crd_path = REPO_ROOT / "crd" / "iflearnerjob.yaml"
    relaxed = yaml.safe_load(crd_path.read_text())
    del relaxed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    kubectl = ["kubectl", "--kubeconfig", str(kubeconfig)]
    bad = job_manifest(name, namespace)
    bad["spec"]["peers"] = [{"host": bad["spec"]["host"], "address": "10.1.2.3"}]
    subprocess.run([*kubectl, "apply", "-f", "-"], input=yaml.safe_dump(relaxed), text=True, check=True,
                   capture_output=True)
    try:
        wait_for("the relaxed CRD to accept the job", lambda: create_job(custom, bad), 30)
    finally:
        subprocess.run([*kubectl, "apply", "-f", str(crd_path)], check=True, capture_output=True)


def test_invalid_job_is_stalled_and_others_proceed(controller, custom, core, jobs_ns, kubeconfig, state_dir):
    """A job the CRD accepts but the controller refuses (here: a peer equal to the job's own host, which
    an older CRD without its CEL rule lets through) stalls with the field named, runs no Pulumi, and does
    not hold up other jobs; fixing it makes it converge; deleting it finishes at once."""
    create_job_past_cel_rule(custom, kubeconfig, jobs_ns, "bad-peers")
    create_job(custom, job_manifest("good-neighbour", jobs_ns))

    def stalled():
        job = get_job(custom, jobs_ns, "bad-peers")
        return job if condition(job, "Stalled").get("status") == "True" else None

    job = wait_for("the invalid job to be Stalled", stalled, 60, on_timeout=controller.log)
    stalled_condition = condition(job, "Stalled")
    assert stalled_condition["reason"] == "InvalidSpec"
    assert "spec.peers[0].host" in stalled_condition["message"]
    assert stalled_condition["observedGeneration"] == 1
    assert condition(job, "Ready")["status"] == "False"
    assert job["status"]["message"].startswith("invalid spec: spec.peers[0].host")
    wait_ready_running(custom, jobs_ns, "good-neighbour", controller)
    assert not stack_file(state_dir, jobs_ns, "bad-peers").exists(), "no Pulumi run for an invalid job"
    time.sleep(6)  # a resync later: still one event, still no stack
    assert events_for(core, jobs_ns, "bad-peers").count(("InvalidSpec", "Warning")) == 1
    assert not stack_file(state_dir, jobs_ns, "bad-peers").exists()

    # Deleting a job whose stack never existed finishes at once.
    started = time.monotonic()
    custom.delete_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, "bad-peers")
    wait_for("the invalid job to be gone", lambda: get_job(custom, jobs_ns, "bad-peers") is None, 30)
    assert time.monotonic() - started < 15


def test_fixing_an_invalid_spec_makes_the_job_converge(controller, custom, jobs_ns, kubeconfig):
    create_job_past_cel_rule(custom, kubeconfig, jobs_ns, "fix-me")
    wait_for("Stalled", lambda: condition(get_job(custom, jobs_ns, "fix-me"), "Stalled").get("status") == "True",
             60, on_timeout=controller.log)
    custom.patch_namespaced_custom_object(GROUP, VERSION, jobs_ns, PLURAL, "fix-me", {"spec": {"peers": None}},
                                          _content_type=MERGE)
    job = wait_ready_running(custom, jobs_ns, "fix-me", controller, generation=2)
    assert condition(job, "Stalled")["status"] == "False"


def test_metrics_and_probes(controller):
    code, _ = controller.get("/healthz")
    assert code == 200
    code, text = controller.get("/readyz")
    assert code == 200 and "caches synced" in text
    _, text = controller.get("/metrics")
    for name in ("iflearner_reconciles_total", "iflearner_reconcile_errors_total",
                 "iflearner_reconcile_duration_seconds_bucket", "iflearner_workqueue_depth",
                 'iflearner_pulumi_runs_total{operation="up",result="succeeded"}',
                 'iflearner_pulumi_runs_total{operation="destroy",result="succeeded"}',
                 "iflearner_pulumi_run_duration_seconds_bucket", 'iflearner_jobs{phase="Running"}',
                 'iflearner_leader{lease="iflearner-operator-leader"} 1.0'):
        assert name in text, name
    assert controller.metric("iflearner_pulumi_runs_total", operation="up", result="succeeded") > 0
    assert controller.metric("iflearner_reconciles_total", result="success") > 0
    assert controller.get("/nope")[0] == 404
