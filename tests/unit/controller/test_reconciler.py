"""The reconciler's decisions, against in-memory fakes of the API, the caches and the runner.

The real thing (apiserver, Pulumi engine) is covered by tests/integration/controller.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import json

import pytest
from kubernetes.client.exceptions import ApiException

from iflearner.controller.events import EventRecorder
from iflearner.controller.metrics import Metrics
from iflearner.controller.reconciler import FINALIZER, Reconciler
from iflearner.controller.signer import JobCertificate, SignerError
from iflearner.controller.status import condition
from iflearner.desired import ClusterSettings, desired_resources, owned_object_refs
from iflearner.job import parse_job
from iflearner.stackrunner import StackResult

JOB = {
    "apiVersion": "git.iflytek.com/v1", "kind": "IflearnerJob",
    "metadata": {"name": "iflearnerjob-server", "namespace": "default", "uid": "job-uid",
                 "generation": 1, "resourceVersion": "1"},
    "spec": {"role": "server", "host": "job1.server.iflearner.com",
             "template": {"spec": {"containers": [{"name": "s", "image": "img:1"}]}}},
}
KEY = "default/iflearnerjob-server"


def apply_merge_patch(target, patch):
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = apply_merge_patch(result.get(key), value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class FakeCache:
    def __init__(self):
        self.store = {}

    def get(self, namespace, name):
        return self.store.get(f"{namespace}/{name}")

    def list(self, namespace=None):
        return list(self.store.values())

    def keys(self):
        return list(self.store)


class World:
    """The API server, the caches (kept in step, as informers would be) and a runner."""

    def __init__(self):
        self.versions = itertools.count(2)
        self.jobs = FakeCache()
        self.owned = {kind: FakeCache() for kind in ("Pod", "Service", "Secret", "ConfigMap", "Ingress")}
        self.objects = {}  # (kind, ns, name) -> object
        self.events = []
        self.ups = []
        self.destroys = []
        self.up_error = None
        self.destroy_error = None
        self.stack_exists = False
        self.status_writes = 0
        self.dry_runs = []  # Pods the API server was asked to validate
        self.pod_rejection = None  # (code, Status body) the dry-run answers with
        self.signer_error = None  # what the signer says when it cannot issue
        self.signed = []  # (namespace, TLS Secret) the signer was asked for

    # -- API -----------------------------------------------------------------------------------
    def _job(self, path):
        name = path.split("/iflearnerjobs/")[1].split("/")[0]
        return self.jobs.get("default", name)

    def request(self, method, path, body=None, content_type=None, **_):
        if "/events" in path:
            self.events.append((body["reason"], body["type"]))
            return body
        if method == "PATCH" and "/pods/" in path and (_.get("query") or {}).get("dryRun") == "All":
            self.dry_runs.append(json.loads(body))
            if self.pod_rejection is not None:
                code, status_body = self.pod_rejection
                error = ApiException(status=code)
                error.body = json.dumps(status_body)
                raise error
            return body
        if "/iflearnerjobs/" in path:
            job = self._job(path)
            if job is None:
                raise ApiException(status=404)
            if method == "GET":
                return copy.deepcopy(job)
            if path.endswith("/status"):
                self.status_writes += 1
                updated = apply_merge_patch(job, {"status": body["status"]})
            else:
                rv = body["metadata"].pop("resourceVersion", None)
                if rv is not None and rv != job["metadata"]["resourceVersion"]:
                    raise ApiException(status=409)
                updated = apply_merge_patch(job, body)
                if updated["metadata"].get("deletionTimestamp") and not updated["metadata"].get("finalizers"):
                    del self.jobs.store[KEY]
                    return updated
            updated["metadata"]["resourceVersion"] = str(next(self.versions))
            self.jobs.store[KEY] = updated
            return copy.deepcopy(updated)
        raise AssertionError(f"unexpected request {method} {path}")

    def get_or_none(self, path):
        if "/iflearnerjobs/" in path:
            return copy.deepcopy(self._job(path))
        for (kind, ns, name), obj in self.objects.items():
            plural = {"Pod": "pods", "Service": "services", "Secret": "secrets", "ConfigMap": "configmaps",
                      "Ingress": "ingresses"}[kind]
            if path.endswith(f"/namespaces/{ns}/{plural}/{name}"):
                return obj
        return None

    # -- signer --------------------------------------------------------------------------------
    def certificate_for(self, request, namespace, tls_secret, now, keys=("tls.crt", "tls.key")):
        self.signed.append((namespace, tls_secret))
        if self.signer_error:
            raise SignerError(self.signer_error)
        return JobCertificate("CERT", "KEY", False, "issued: the job serves no certificate yet")

    # -- runner --------------------------------------------------------------------------------
    def up(self, stack, program, refresh=False):
        self.ups.append(stack)
        if self.up_error:
            return StackResult("up", stack, False, error=self.up_error, seconds=0.1)
        self.stack_exists = True
        job = parse_job(self.jobs.get("default", "iflearnerjob-server"))
        desired = desired_resources(job, ClusterSettings())
        for _, kind, ns, name in owned_object_refs(desired):
            if (kind, ns, name) not in self.objects:
                rv = str(next(self.versions))
                obj = {"metadata": {"name": name, "namespace": ns, "uid": f"{kind}-uid-{rv}",
                                    "resourceVersion": rv, "labels": dict(desired.labels)}}
                if kind == "Pod":
                    obj["spec"] = dict(desired.pod["spec"])  # as the API server stores it
                    obj["status"] = {"phase": "Pending"}
                self.objects[(kind, ns, name)] = obj
                self.owned[kind].store[f"{ns}/{name}"] = obj
        return StackResult("up", stack, True, changes={"create": 6}, seconds=0.1)

    def destroy(self, stack):
        self.destroys.append(stack)
        if self.destroy_error:
            return StackResult("destroy", stack, False, error=self.destroy_error)
        for (kind, ns, name) in list(self.objects):
            del self.objects[(kind, ns, name)]
            self.owned[kind].store.pop(f"{ns}/{name}", None)
        self.stack_exists = False
        return StackResult("destroy", stack, True)

    # -- helpers -------------------------------------------------------------------------------
    def delete_object(self, kind, name):
        del self.objects[(kind, "default", name)]
        del self.owned[kind].store[f"default/{name}"]

    def set_pod_phase(self, phase):
        pod = self.objects[("Pod", "default", "iflearnerjob-server")]
        pod["status"] = {"phase": phase}
        pod["metadata"]["resourceVersion"] = str(next(self.versions))

    def job(self):
        return self.jobs.get("default", "iflearnerjob-server")

    def edit_spec(self, mutate):
        job = copy.deepcopy(self.job())
        mutate(job)
        job["metadata"]["generation"] += 1
        job["metadata"]["resourceVersion"] = str(next(self.versions))
        self.jobs.store[KEY] = job


class Clock:
    def __init__(self):
        self.now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += datetime.timedelta(seconds=seconds)


@pytest.fixture
def world():
    w = World()
    w.jobs.store[KEY] = copy.deepcopy(JOB)
    return w


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def reconciler(world, clock):
    metrics = Metrics()
    return Reconciler(world, world.jobs, world.owned, world, ClusterSettings(), None,
                      EventRecorder(world), metrics, clock=clock, cache_wait=0.2, signer=world)


def status(world):
    return world.job().get("status") or {}


def cond(world, kind):
    found = condition(status(world), kind)
    return found["status"], found["reason"]


def test_first_reconcile_adds_finalizer_runs_up_and_reports(world, reconciler):
    result = reconciler.reconcile(KEY)
    assert result.requeue_after is None
    assert world.job()["metadata"]["finalizers"] == [FINALIZER]
    assert world.ups == ["default.iflearnerjob-server"]
    st = status(world)
    assert st["phase"] == "Pending" and st["observedGeneration"] == 1
    assert st["lastOperation"]["kind"] == "up" and st["lastOperation"]["result"] == "Succeeded"
    assert st["applied"]["objects"]["Pod/iflearnerjob-server"].startswith("Pod-uid-")
    assert st["outputs"]["service"] == "iflearnerjob-server"
    assert cond(world, "Reconciling") == ("True", "WaitingForPod")


def test_resync_of_unchanged_job_runs_no_pulumi_and_writes_nothing(world, reconciler):
    reconciler.reconcile(KEY)
    writes = world.status_writes
    for _ in range(5):
        reconciler.reconcile(KEY)
    assert len(world.ups) == 1
    assert world.status_writes == writes
    assert reconciler.metrics.gated._value.get() == 5


def test_pod_running_makes_ready_with_one_event(world, reconciler):
    reconciler.reconcile(KEY)
    world.set_pod_phase("Running")
    reconciler.reconcile(KEY)
    reconciler.reconcile(KEY)
    assert status(world)["phase"] == "Running"
    assert cond(world, "Ready") == ("True", "PodRunning")
    assert world.events == [("Ready", "Normal")]
    assert len(world.ups) == 1, "pod status changes never run Pulumi"


def test_deleted_service_or_spec_change_runs_up(world, reconciler):
    reconciler.reconcile(KEY)
    world.delete_object("Service", "iflearnerjob-server")
    reconciler.reconcile(KEY)
    assert len(world.ups) == 2
    assert ("Service", "default", "iflearnerjob-server") in world.objects
    world.edit_spec(lambda j: j["spec"]["template"]["spec"]["containers"][0].update(image="img:2"))
    reconciler.reconcile(KEY)
    assert len(world.ups) == 3
    assert status(world)["observedGeneration"] == 2


def test_invalid_spec_stalls_without_pulumi_or_retry(world, reconciler):
    world.jobs.store[KEY]["spec"]["peers"] = [{"host": "job1.b.party.iflearner.com", "address": "300.1.1.1"}]
    result = reconciler.reconcile(KEY)
    assert result.requeue_after is None
    assert world.ups == []
    assert cond(world, "Stalled") == ("True", "InvalidSpec")
    assert "spec.peers[0].address" in condition(status(world), "Stalled")["message"]
    reconciler.reconcile(KEY)
    assert world.events == [("InvalidSpec", "Warning")], "one event per invalid generation"


def test_failed_up_backs_off_from_status_and_events_first_and_every_fifth(world, reconciler, clock):
    world.up_error = "kubernetes: connection refused"
    result = reconciler.reconcile(KEY)
    assert result.requeue_after == 1.0
    assert cond(world, "Ready") == ("False", "StackUpdateFailed")
    assert cond(world, "Reconciling") == ("True", "RetryingAfterFailure")
    assert status(world)["lastOperation"]["failureCount"] == 1
    # Before the backoff has passed: no run.
    early = reconciler.reconcile(KEY)
    assert len(world.ups) == 1 and 0 < early.requeue_after <= 1.1
    for attempt in range(2, 7):
        clock.advance(400)
        reconciler.reconcile(KEY)
        assert status(world)["lastOperation"]["failureCount"] == attempt
    assert [e for e in world.events if e[0] == "StackUpdateFailed"] == [("StackUpdateFailed", "Warning")] * 2
    # A restarted controller (fresh reconciler, no memory) keeps the backoff from status.
    fresh = Reconciler(world, world.jobs, world.owned, world, ClusterSettings(), None,
                       EventRecorder(world), Metrics(), clock=clock, cache_wait=0.2, signer=world)
    waiting = fresh.reconcile(KEY)
    assert len(world.ups) == 6 and waiting.requeue_after > 30
    world.up_error = None
    clock.advance(400)
    fresh.reconcile(KEY)
    assert status(world)["lastOperation"]["failureCount"] == 0
    assert status(world)["lastOperation"]["result"] == "Succeeded"


def test_interrupted_up_is_rerun(world, reconciler):
    world.jobs.store[KEY]["status"] = {"lastOperation": {"kind": "up", "result": "InProgress",
                                                         "time": "2025-01-01T00:00:00Z", "failureCount": 0}}
    reconciler.reconcile(KEY)
    assert world.ups == ["default.iflearnerjob-server"]
    assert status(world)["lastOperation"]["result"] == "Succeeded"


def test_delete_destroys_then_removes_finalizer(world, reconciler):
    reconciler.reconcile(KEY)
    world.jobs.store[KEY]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    reconciler.reconcile(KEY)
    assert world.destroys == ["default.iflearnerjob-server"]
    assert world.job() is None, "finalizer removed, job gone"
    assert world.objects == {}


def test_a_stale_cached_copy_of_a_finalized_job_is_not_destroyed_again(world, reconciler):
    reconciler.reconcile(KEY)
    world.jobs.store[KEY]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    stale = copy.deepcopy(world.job())  # what a lagging cache still holds after the finalizer is gone
    reconciler.reconcile(KEY)
    assert world.job() is None
    world.jobs.store[KEY] = stale
    reconciler.reconcile(KEY)
    assert world.destroys == ["default.iflearnerjob-server"], "one destroy per deleted job"
    # The cache drops the job; a new job of the same name (a new uid) is reconciled as usual.
    del world.jobs.store[KEY]
    reconciler.reconcile(KEY)
    world.jobs.store[KEY] = copy.deepcopy(JOB) | {"metadata": {**JOB["metadata"], "uid": "job-uid-2"}}
    reconciler.reconcile(KEY)
    assert world.ups == ["default.iflearnerjob-server"] * 2


def test_failed_destroy_keeps_finalizer_and_retries(world, reconciler, clock):
    reconciler.reconcile(KEY)
    world.jobs.store[KEY]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    world.destroy_error = "the stack is locked"
    result = reconciler.reconcile(KEY)
    assert result.requeue_after == 1.0
    assert world.job()["metadata"]["finalizers"] == [FINALIZER]
    assert cond(world, "Reconciling") == ("True", "DestroyFailed")
    assert ("DestroyFailed", "Warning") in world.events
    world.destroy_error = None
    clock.advance(5)
    reconciler.reconcile(KEY)
    assert world.job() is None


def test_job_without_finalizer_being_deleted_is_left_alone(world, reconciler):
    world.jobs.store[KEY]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    reconciler.reconcile(KEY)
    assert world.destroys == [] and world.ups == []


def test_missing_job_is_a_no_op(world, reconciler):
    assert reconciler.reconcile("default/nope").requeue_after is None


def put_foreign(world, kind, name):
    """A user's own object that happens to have one of the job's names (not in the operator's caches)."""
    world.objects[(kind, "default", name)] = {"metadata": {"name": name, "namespace": "default",
                                                           "uid": "users-own", "resourceVersion": "5"}}


def test_a_name_held_by_a_foreign_object_stalls_with_name_conflict_and_runs_no_up(world, reconciler):
    put_foreign(world, "Service", "iflearnerjob-server")
    assert reconciler.reconcile(KEY).requeue_after is None
    reconciler.reconcile(KEY)
    assert world.ups == [] and world.dry_runs == []
    assert cond(world, "Stalled") == ("True", "NameConflict")
    assert "Service default/iflearnerjob-server already exists" in condition(status(world), "Stalled")["message"]
    assert cond(world, "Ready") == ("False", "NameConflict")
    assert world.events == [("NameConflict", "Warning")], "one event, not one per reconcile"
    # The user frees the name: the next reconcile (a resync) applies the job.
    del world.objects[("Service", "default", "iflearnerjob-server")]
    reconciler.reconcile(KEY)
    assert world.ups == ["default.iflearnerjob-server"]
    assert cond(world, "Stalled") == ("False", "SpecValid")


def test_a_pod_the_api_server_refuses_stalls_until_the_spec_changes(world, reconciler):
    world.pod_rejection = (422, {"kind": "Status", "code": 422, "message": "Pod is invalid", "details": {
        "causes": [{"field": "spec.containers[0].image", "message": "Required value"}]}})
    assert reconciler.reconcile(KEY).requeue_after is None
    for _ in range(3):
        assert reconciler.reconcile(KEY).requeue_after is None
    assert world.ups == [], "no Pulumi run for a Pod the API server refuses"
    assert len(world.dry_runs) == 1, "no retry loop: the same generation is not validated again"
    assert cond(world, "Stalled") == ("True", "InvalidPodTemplate")
    assert "spec.template.spec.containers[0].image: Required value" in condition(status(world), "Stalled")["message"]
    assert world.events == [("InvalidPodTemplate", "Warning")]
    world.pod_rejection = None
    world.edit_spec(lambda j: j["spec"]["template"]["spec"]["containers"][0].update(image="img:2"))
    reconciler.reconcile(KEY)
    assert len(world.dry_runs) == 2 and world.ups == ["default.iflearnerjob-server"]
    assert cond(world, "Stalled") == ("False", "SpecValid")


def test_destroy_waits_while_a_recorded_name_is_held_by_someone_elses_object(world, reconciler):
    reconciler.reconcile(KEY)
    # The job's Service is deleted by hand and a user's own Service takes its name.
    world.delete_object("Service", "iflearnerjob-server")
    put_foreign(world, "Service", "iflearnerjob-server")
    world.jobs.store[KEY]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    result = reconciler.reconcile(KEY)
    assert world.destroys == [], "destroy would delete the user's Service by name"
    assert result.requeue_after is not None
    assert world.job()["metadata"]["finalizers"] == [FINALIZER]
    assert cond(world, "Stalled") == ("True", "NameConflict")
    del world.objects[("Service", "default", "iflearnerjob-server")]
    reconciler.reconcile(KEY)
    assert world.destroys == ["default.iflearnerjob-server"] and world.job() is None


def test_a_job_that_never_ran_up_is_deleted_at_once_despite_a_conflict(world, reconciler):
    put_foreign(world, "Service", "iflearnerjob-server")
    reconciler.reconcile(KEY)
    world.jobs.store[KEY]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    reconciler.reconcile(KEY)
    assert world.job() is None
    # No up ever ran, so the stack holds nothing (the real destroy of a stack that never existed
    # touches nothing: tests/integration/controller/test_controller_preflight.py).
    assert world.ups == [] and world.destroys == ["default.iflearnerjob-server"]


def test_a_spec_change_is_validated_under_a_probe_name_while_the_jobs_pod_exists(world, reconciler):
    reconciler.reconcile(KEY)
    assert world.dry_runs[-1]["metadata"]["name"] == "iflearnerjob-server"
    world.edit_spec(lambda j: j["spec"]["template"]["spec"]["containers"][0].update(image="img:2"))
    reconciler.reconcile(KEY)
    assert world.dry_runs[-1]["metadata"]["name"] == "iflearnerjob-server-preflight"
    assert world.dry_runs[-1]["spec"]["containers"][0]["image"] == "img:2"
    assert len(world.ups) == 2


def test_a_lagging_cache_is_trusted_to_our_write_and_a_foreign_status_is_spotted(world, reconciler):
    """Until the cache shows our last status write, whatever it holds is older: the pass starts
    from what we wrote (no second Event, no flapping). Once it has shown it, a version with
    another status is someone else's (a hand edit, a former leader): worth a repairing pass."""
    reconciler.reconcile(KEY)
    ours = world.job()
    lagging = copy.deepcopy(ours)
    lagging["metadata"]["resourceVersion"] = "1"
    lagging["status"] = {}
    assert reconciler._previous_status(KEY, lagging) == ours["status"]
    assert not reconciler.status_written_elsewhere(KEY, lagging)
    assert not reconciler.status_written_elsewhere(KEY, ours)  # our own write, now seen
    forged = copy.deepcopy(ours)
    forged["metadata"]["resourceVersion"] = str(int(ours["metadata"]["resourceVersion"]) + 100)
    forged["status"]["phase"] = "Failed"
    assert reconciler.status_written_elsewhere(KEY, forged)
    assert reconciler._previous_status(KEY, forged)["phase"] == "Failed"
    other_uid = copy.deepcopy(forged)
    other_uid["metadata"]["uid"] = "someone-else"
    assert not reconciler.status_written_elsewhere(KEY, other_uid)


def test_no_usable_ca_fails_the_up_with_the_signers_message_and_no_pulumi_run(world, reconciler):
    world.signer_error = "the CA Secret iflearner-system/iflearner-ca does not exist: run the bootstrap"
    result = reconciler.reconcile(KEY)
    assert world.ups == [] and world.signed == [("default", "iflearnerjob-server-tls")]
    assert result.requeue_after == 1.0, "retried with backoff: the CA may appear"
    assert cond(world, "Ready") == ("False", "CertificateNotIssued")
    assert "does not exist: run the bootstrap" in status(world)["lastOperation"]["error"]
    world.signer_error = None


# -- tenancy (issue 18) ----------------------------------------------------------------------------

def _host_pid(job):
    job["spec"]["template"]["spec"]["hostPID"] = True


def test_a_pod_the_cluster_policy_forbids_stalls_naming_the_field_without_pulumi(world, reconciler):
    _host_pid(world.jobs.store[KEY])
    result = reconciler.reconcile(KEY)
    assert world.ups == [] and result.requeue_after is None
    assert cond(world, "Stalled") == ("True", "PodSecurity")
    assert "spec.template.spec.hostPID: must not be true" in condition(status(world), "Stalled")["message"]
    assert status(world)["message"].startswith("refused by the cluster's policy (PodSecurity): ")
    assert ("PodSecurity", "Warning") in world.events


def test_a_job_applied_before_the_policy_keeps_running_with_a_warning_until_its_spec_changes(world, clock):
    _host_pid(world.jobs.store[KEY])
    before = Reconciler(world, world.jobs, world.owned, world, ClusterSettings(pod_security="privileged"), None,
                        EventRecorder(world), Metrics(), clock=clock, cache_wait=0.2, signer=world)
    before.reconcile(KEY)
    assert world.ups == ["default.iflearnerjob-server"]
    # The operator is upgraded: its policy is now baseline.
    after = Reconciler(world, world.jobs, world.owned, world, ClusterSettings(), None,
                       EventRecorder(world), Metrics(), clock=clock, cache_wait=0.2, signer=world)
    after.reconcile(KEY)
    assert cond(world, "Stalled") == ("False", "SpecValid")
    assert cond(world, "PolicyViolation") == ("True", "PodSecurity")
    assert "hostPID" in condition(status(world), "PolicyViolation")["message"]
    assert world.destroys == [] and ("Pod", "default", "iflearnerjob-server") in world.objects
    # Its next spec change must comply.
    world.edit_spec(lambda j: j["spec"]["template"]["spec"]["containers"][0].update(image="img:2"))
    after.reconcile(KEY)
    assert cond(world, "Stalled") == ("True", "PodSecurity")
    assert condition(status(world), "PolicyViolation") is None
    after.reconcile(KEY)  # the stalled generation is never taken for one applied before
    assert cond(world, "Stalled") == ("True", "PodSecurity")
    assert len(world.ups) == 2  # the upgrade's own run only


def test_a_host_held_by_another_namespace_stalls_until_its_holder_goes(world, reconciler):
    holder = copy.deepcopy(JOB)
    holder["metadata"].update(namespace="team-a", uid="holder-uid", creationTimestamp="2024-01-01T00:00:00Z")
    holder["status"] = {"applied": {"fingerprint": "f", "objects": {}, "host": JOB["spec"]["host"]}}
    world.jobs.store["team-a/iflearnerjob-server"] = holder
    world.jobs.store[KEY]["metadata"]["creationTimestamp"] = "2024-06-01T00:00:00Z"
    result = reconciler.reconcile(KEY)
    assert world.ups == []
    assert cond(world, "Stalled") == ("True", "HostConflict")
    assert "team-a/iflearnerjob-server" in condition(status(world), "Stalled")["message"]
    assert result.requeue_after is not None, "a held host is looked at again: its holder may go"
    del world.jobs.store["team-a/iflearnerjob-server"]
    reconciler.reconcile(KEY)
    assert world.ups == ["default.iflearnerjob-server"]
    assert cond(world, "Stalled") == ("False", "SpecValid")


def test_job_pods_get_no_api_token_but_a_running_pod_made_before_keeps_its_own():
    from iflearner.controller.syncpass import legacy_token_mount, template_digest

    job = parse_job(JOB)
    assert desired_resources(job, ClusterSettings()).pod["spec"]["automountServiceAccountToken"] is False
    assert "automountServiceAccountToken" not in desired_resources(job, ClusterSettings(), True).pod["spec"]
    asked = copy.deepcopy(JOB)
    asked["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    assert desired_resources(parse_job(asked), ClusterSettings()).pod["spec"]["automountServiceAccountToken"] is True
    old_pod = {"metadata": {"name": "p"}, "spec": {"containers": []}}
    digest = template_digest(JOB["spec"]["template"])
    # A status of the version before: this generation was applied with that Pod.
    before = {"applied": {"fingerprint": "f"}, "observedGeneration": 1}
    assert legacy_token_mount(old_pod, before, 1, digest)
    assert not legacy_token_mount(old_pod, before, 2, digest)
    # Once applied by this version: as long as the template is the one the Pod was made from,
    # whatever else of the job changes (its peers, say).
    now = {"applied": {"fingerprint": "f", "template": digest}, "observedGeneration": 1}
    assert legacy_token_mount(old_pod, now, 5, digest)
    assert not legacy_token_mount(old_pod, now, 5, template_digest({"spec": {"containers": []}}))
    assert not legacy_token_mount({"spec": {"automountServiceAccountToken": False}}, now, 1, digest)
    assert not legacy_token_mount(None, now, 1, digest)
