"""One reconcile of one IflearnerJob key: level-triggered, idempotent.

From the cached job it decides, in order:
1. deleted job -> nothing; job being deleted -> ``destroy`` its stack, then
   remove the finalizer (a failed destroy keeps it and retries with backoff);
2. no finalizer -> add it, so deleting the job always destroys its stack;
3. invalid spec -> ``Stalled`` (no retry until the spec changes);
4. gating (see :mod:`iflearner.controller.gating`) -> ``up`` only when
   something changed, respecting the backoff of a failed ``up`` as recorded
   in status (so a restart does not reset it);
5. preflight (see :mod:`iflearner.controller.preflight`) right before an
   ``up``: a name held by an object the job does not own -> ``Stalled``
   ``NameConflict`` (checked again at each resync, no Pulumi run); a Pod the
   API server's dry-run refuses -> ``Stalled`` ``InvalidPodTemplate`` (not
   tried again until the spec changes). A job being deleted whose recorded
   names are now held by someone else's objects keeps its finalizer instead
   of letting ``destroy`` delete them by name;
6. status through the status subresource, only when it changed; Events only
   for what a person must act on.

A pass over a valid job observes once (``_view``: the previous status, parsed
there, and the caches), decides once (:func:`iflearner.controller.syncpass.plan`),
acts (preflight, signer, ``up``), and takes its whole new status and requeue
time from one pure function (:func:`iflearner.controller.syncpass.conclude`).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from iflearner.api import tenancy
from iflearner.controller import gating, orphans, preflight, renewal, syncpass
from iflearner.controller.carotation import ISSUING_KEYS, IssuerChoice
from iflearner.controller.events import NORMAL, WARNING, EventRecorder
from iflearner.controller.informers import ALL_OWNED_RESOURCES, JOBS, Informer, Resource
from iflearner.controller.inventory import REBUILD_REASON, Inventory
from iflearner.controller.kubeapi import MERGE_PATCH, KubeApi, object_path
from iflearner.controller.logs import job_logger
from iflearner.controller.metrics import Metrics
from iflearner.controller.signer import Signer, SignerError
from iflearner.controller.status import (
    READY,
    REASON_CERTIFICATE_NOT_ISSUED,
    REASON_INVALID_POD_TEMPLATE,
    REASON_INVALID_SPEC,
    REASON_NAME_CONFLICT,
    RESULT_FAILED,
    ROUTE_PENDING,
    STALLED,
    Observation,
    Operation,
    RouteStatus,
    compute_status,
    condition,
    failure_count_of,
    gateway_route_status,
    is_ready,
    merge_patch,
    outputs_for,
    pod_failure_text,
    rfc3339,
)
from iflearner.controller.workqueue import exponential_backoff
from iflearner.desired import (
    GATEWAY_LISTENER,
    ClusterSettings,
    DesiredResources,
    base_name,
    desired_resources,
    job_uid_label,
    owned_object_refs,
)
from iflearner.job import IflearnerJob, InvalidJobError, Problem, parse_job, stack_name, stack_name_of
from iflearner.program import job_program
from iflearner.stackrunner import StackResult

log = logging.getLogger(__name__)

FINALIZER = "iflearner.git.iflytek.com/stack"
EVENT_EVERY_N_FAILURES = 5
# A deletion held back by a name conflict looks again this often (reads only).
DESTROY_CONFLICT_RECHECK_SECONDS = 30.0
REASON_STACK_STATE_MISSING = "StackStateMissing"
REASON_STACK_REBUILT = "StackRebuilt"
_RESOURCES_BY_KIND: dict[str, Resource] = {r.kind: r for r in ALL_OWNED_RESOURCES}


class Runner(Protocol):
    def up(self, stack_name: str, program: Callable[[], None], refresh: bool = False) -> StackResult: ...

    def destroy(self, stack_name: str) -> StackResult: ...


@dataclass(frozen=True)
class Result:
    """What the worker does with the key afterwards: nothing, or look again later."""

    requeue_after: float | None = None


@dataclass
class _Memo:
    """The status this process last wrote for a job."""

    uid: str
    status: dict[str, Any]
    # The resourceVersion our last status write made, and whether the cache has
    # shown it yet. The cache only moves forward: until it has shown our write,
    # whatever it holds is older (lagging); after, another version holding
    # another status is someone else's write.
    written_rv: str | None = None
    seen: bool = False


def warm_up_program_imports() -> None:
    """Import every pulumi_kubernetes module a job program touches, once, on one thread.

    pulumi_kubernetes loads its modules lazily and that loading is not
    thread-safe: the first programs run by parallel workers fail with
    "module 'pulumi_kubernetes.core.v1' has no attribute 'Secret'".
    """
    import importlib

    for module in ("pulumi_kubernetes", "pulumi_kubernetes.core.v1", "pulumi_kubernetes.networking.v1",
                   "pulumi_kubernetes.yaml.v2", "pulumi_kubernetes.meta.v1"):
        loaded = importlib.import_module(module)
        for name in getattr(loaded, "__all__", None) or dir(loaded):
            getattr(loaded, name, None)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def job_path(namespace: str, name: str) -> str:
    return object_path(JOBS.api_path, JOBS.plural, namespace, name)


def _pod_refused_for(status: Mapping[str, Any], generation: int) -> bool:
    """True when the API server refused the Pod of this very generation (status says so)."""
    stalled = condition(status, STALLED)
    return (stalled is not None and stalled.get("status") == "True"
            and stalled.get("reason") == REASON_INVALID_POD_TEMPLATE
            and stalled.get("observedGeneration") == generation)


def _deep_union(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(a)
    for key, value in b.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_union(merged[key], value)
        else:
            merged[key] = value
    return merged


class Reconciler:
    """Turns the cached state of one job into (at most) one stack operation and a status."""

    def __init__(
        self,
        api: KubeApi,
        jobs: Informer,
        owned: Mapping[str, Informer],
        runner: Runner,
        settings: ClusterSettings,
        kubeconfig_text: str | None,
        events: EventRecorder,
        metrics: Metrics,
        clock: Callable[[], datetime.datetime] = utc_now,
        cache_wait: float = 5.0,
        stack_inputs: Callable[[DesiredResources], Mapping[str, str | None]] | None = None,
        trust_cas: Callable[[], Mapping[str, Any] | None] | None = None,
        signer: Signer | None = None,
        issuer: Callable[[], IssuerChoice] | None = None,
        record_problem: Callable[[DesiredResources], str | None] | None = None,
        inventory: Inventory | None = None,
    ) -> None:
        self.api = api
        self.jobs = jobs
        self.owned = owned
        self.runner = runner
        self.settings = settings
        self.kubeconfig_text = kubeconfig_text
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self.cache_wait = cache_wait
        # Digests of what stacks read from the operator namespace (CA, trust bundle), for the fingerprint.
        self.stack_inputs = stack_inputs
        # The CAs of the cluster trust bundle, for status.trust (clients).
        self.trust_cas = trust_cas
        # Why the cluster DNS does not serve a job's records as declared (dnsrecords), or None.
        self.record_problem = record_problem
        # Which jobs' stacks the state backend lost (inventory): rebuilt by their next up.
        self.inventory = inventory
        # The only reader of the CA key: stacks get the job's certificate, never the CA.
        self.signer = signer if signer is not None else Signer(api, settings.operator_namespace,
                                                                settings.ca_secret_name)
        # Which CA of the CA Secret signs (a rotation's overlap window); default: the issuing one.
        self.issuer = issuer if issuer is not None else lambda: IssuerChoice(ISSUING_KEYS, None, "one CA")
        self.policy = settings.tenancy_policy()
        self._memo: dict[str, _Memo] = {}
        # Jobs (key -> uid) whose stack this process destroyed and whose finalizer it removed.
        # Until the cache drops the job, it may still show it deleting with our finalizer: a
        # reconcile of that stale copy must not destroy (or, worse, act on) the stack again.
        self._finalized: dict[str, str] = {}
        self._memo_lock = threading.Lock()

    # -- status bookkeeping ---------------------------------------------------------------------

    def _memo_for(self, key: str, obj: Mapping[str, Any]) -> _Memo | None:
        """This process's last status write for the job ``obj`` (None when there is none for its
        uid), noting whether the cache has shown it by now."""
        metadata = obj.get("metadata") or {}
        with self._memo_lock:
            memo = self._memo.get(key)
            if memo is None or memo.uid != metadata.get("uid"):
                return None
            if memo.written_rv is not None and metadata.get("resourceVersion") == memo.written_rv:
                memo.seen = True
            return memo

    def _previous_status(self, key: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The cluster's copy of the status, unless the cache still lags behind this process's
        last write (then that write). A status edited by hand or by a former leader is thus the
        previous status, and the pass's write repairs it."""
        memo = self._memo_for(key, obj)
        if memo is not None and (not memo.seen or (obj.get("metadata") or {}).get("resourceVersion")
                                 == memo.written_rv):
            return memo.status
        return dict(obj.get("status") or {})

    def status_written_elsewhere(self, key: str, obj: Mapping[str, Any]) -> bool:
        """True when ``obj`` carries a status this process did not write (a hand edit, a former
        leader): worth a reconcile, which repairs it. Our own writes are not."""
        memo = self._memo_for(key, obj)
        if memo is None or not memo.seen:
            return False
        return (obj.get("metadata") or {}).get("resourceVersion") != memo.written_rv and \
            (obj.get("status") or {}) != memo.status

    def _write_status(self, key: str, obj: Mapping[str, Any], previous: Mapping[str, Any],
                      new: dict[str, Any]) -> bool:
        """Patch the status subresource when ``new`` differs; True when written."""
        patch = merge_patch(previous, new)
        if not patch:
            return False
        cached = obj.get("status") or {}
        if cached is not previous:
            patch = _deep_union(merge_patch(cached, new), patch)
        metadata = obj.get("metadata") or {}
        try:
            written = self.api.request("PATCH", job_path(metadata["namespace"], metadata["name"]) + "/status",
                                       body={"status": patch}, content_type=MERGE_PATCH)
        except ApiException as error:
            if error.status == 404:
                return False  # the job is gone
            raise
        written_rv = ((written or {}).get("metadata") or {}).get("resourceVersion")
        with self._memo_lock:
            self._memo[key] = _Memo(str(metadata.get("uid")), new, written_rv)
        return True

    def forget(self, key: str) -> None:
        with self._memo_lock:
            self._memo.pop(key, None)
        namespace, _, name = key.partition("/")
        self.metrics.set_certificate(namespace, name, None, 0)

    # -- cluster reads --------------------------------------------------------------------------

    def _cached(self, ref: gating.ObjectRef) -> Mapping[str, Any] | None:
        informer = self.owned.get(ref[1])
        return informer.get(ref[2], ref[3]) if informer is not None else None

    def _read(self, ref: gating.ObjectRef) -> Mapping[str, Any] | None:
        resource = _RESOURCES_BY_KIND[ref[1]]
        return self.api.get_or_none(object_path(resource.api_path, resource.plural, ref[2], ref[3]))

    def _versions_after_up(self, refs: list[gating.ObjectRef]) -> dict[str, str | None]:
        """Versions of the owned objects as the API has them now; waits for the cache to agree.

        Recording what the API says and letting the cache catch up first means
        the reconcile that the stack's own watch events trigger finds nothing
        changed, instead of running ``up`` again.
        """
        versions = gating.observe(refs, self._read)
        deadline = time.monotonic() + self.cache_wait
        while time.monotonic() < deadline:
            if gating.observe(refs, self._cached) == versions:
                break
            time.sleep(0.02)
        return versions

    def _pod_phase(self, namespace: str, pod_name: str) -> str | None:
        informer = self.owned.get("Pod")
        pod = informer.get(namespace, pod_name) if informer is not None else None
        if pod is None:
            return None
        return (pod.get("status") or {}).get("phase") or "Pending"

    def _pod_uid(self, namespace: str, pod_name: str) -> str | None:
        informer = self.owned.get("Pod")
        pod = informer.get(namespace, pod_name) if informer is not None else None
        uid = ((pod or {}).get("metadata") or {}).get("uid")
        return str(uid) if uid and not (pod or {}).get("metadata", {}).get("deletionTimestamp") else None

    def _pod_failure(self, namespace: str, pod_name: str) -> str | None:
        informer = self.owned.get("Pod")
        pod = informer.get(namespace, pod_name) if informer is not None else None
        return pod_failure_text(pod) if pod is not None and (pod.get("status") or {}).get("phase") == "Failed" else None

    def _route_status(self, desired: DesiredResources) -> RouteStatus | None:
        """The gateway's verdict on the job's route, from the cache (None for an Ingress)."""
        if desired.gateway is None or desired.grpc_route is None:
            return None
        if not all(kind in self.owned for kind in ("Gateway", "GRPCRoute")):
            return RouteStatus(ROUTE_PENDING, "the operator does not watch Gateways and GRPCRoutes: the Gateway "
                                              "API was not installed when it started; restart the operator")
        gateway, route = (self._cached((m["apiVersion"], m["kind"], m["metadata"]["namespace"],
                                        m["metadata"]["name"])) for m in (desired.gateway, desired.grpc_route))
        return gateway_route_status(gateway, route, GATEWAY_LISTENER)

    # -- stack operations -----------------------------------------------------------------------

    def _run(self, operation: str, action: Callable[[], StackResult]) -> StackResult:
        result = action()
        self.metrics.record_pulumi(operation, result.succeeded, result.seconds)
        return result

    def _up(self, stack: str, desired: DesiredResources, refresh: bool, ca_keys: tuple[str, str],
            logger: logging.LoggerAdapter) -> StackResult:  # type: ignore[type-arg]
        """The job's certificate from the signer, then ``up`` with it (no run when none can be issued)."""
        names = desired.names
        try:
            certificate = self.signer.certificate_for(desired.certificate, desired.pod["metadata"]["namespace"],
                                                      names.tls_secret, self.clock(), ca_keys)
        except SignerError as error:
            return StackResult("up", stack, False, error=str(error), reason=REASON_CERTIFICATE_NOT_ISSUED)
        if not certificate.reused:
            logger.info("certificate issued", extra={"stack": stack, "why": certificate.reason})
        program = job_program(desired, self.settings, self.kubeconfig_text, certificate.secret_data)
        return self._run("up", lambda: self.runner.up(stack, program, refresh=refresh))

    # -- reconcile ------------------------------------------------------------------------------

    def reconcile(self, key: str) -> Result:
        namespace, _, name = key.partition("/")
        obj = self.jobs.get(namespace, name)
        if obj is None:
            self.forget(key)
            with self._memo_lock:
                self._finalized.pop(key, None)
            return Result()
        metadata = obj.get("metadata") or {}
        logger = job_logger(log, namespace, name)
        with self._memo_lock:
            finalized = self._finalized.get(key) == metadata.get("uid")
        if finalized:
            return Result()  # a stale copy of a job already finalized here; the cache drops it soon
        if metadata.get("deletionTimestamp"):
            return self._finalize(key, obj, logger)
        if FINALIZER not in (metadata.get("finalizers") or []):
            obj = self._add_finalizer(obj)
        return self._sync(key, obj, logger)

    def _add_finalizer(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        for attempt in range(2):
            metadata = obj.get("metadata") or {}
            finalizers = list(metadata.get("finalizers") or [])
            if FINALIZER in finalizers:
                return dict(obj)
            body = {"metadata": {"finalizers": [*finalizers, FINALIZER],
                                 "resourceVersion": metadata.get("resourceVersion")}}
            path = job_path(metadata["namespace"], metadata["name"])
            try:
                return self.api.request("PATCH", path, body=body, content_type=MERGE_PATCH)
            except ApiException as error:
                if error.status != 409 or attempt:
                    raise
                obj = self.api.request("GET", path)
        raise AssertionError("unreachable")

    def _sync(self, key: str, obj: dict[str, Any], logger: logging.LoggerAdapter) -> Result:  # type: ignore[type-arg]
        """Observe, decide once (:mod:`iflearner.controller.syncpass`), act, write the status once
        (twice when an update runs: as it starts, and as it ends)."""
        previous = self._previous_status(key, obj)
        now = self.clock()
        try:
            job = parse_job(obj)
        except InvalidJobError as error:
            return self._stalled(key, obj, previous, error.problems, now, logger)
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        if _pod_refused_for(previous, generation):
            # The API server refused this generation's Pod: nothing changes that
            # verdict but a new spec, so no dry-run and no Pulumi run until then.
            return Result()
        applied = syncpass.applied_before(previous, generation)
        refused = tenancy.refusal(job, self.policy, str(obj["metadata"].get("creationTimestamp") or ""),
                                  tenancy.ClusterJobs.of(self.jobs.list(), (job.namespace, job.name)), applied)
        warning: tuple[str, str] | None = None
        if refused is not None and applied:
            warning = (refused.reason, "; ".join(f"{p.field}: {p.message}" for p in refused.problems))
        elif refused is not None:
            self._stalled(key, obj, previous, refused.problems, now, logger, reason=refused.reason)
            # A held host may be released by its holder's deletion: look again then (reads only).
            return Result(requeue_after=DESTROY_CONFLICT_RECHECK_SECONDS
                          if refused.reason == tenancy.REASON_HOST_CONFLICT else None)

        view = self._view(job, generation, previous, now, warning)
        chosen = syncpass.plan(view)
        outcome: syncpass.UpdateOutcome | None = None
        starting: dict[str, Any] | None = None
        if chosen.step is syncpass.Step.IN_SYNC:
            self.metrics.gated.inc()
        elif chosen.step is syncpass.Step.BACKOFF:
            logger.debug("waiting for backoff before retrying up",
                         extra={"retry_at": gating.retry_time_text(chosen.retry_at)})
        elif (refusal := self._preflight(job, view.desired, owned_object_refs(view.desired), previous)) is not None:
            reason, problems = refusal
            return self._stalled(key, obj, previous, problems, now, logger, reason=reason)
        else:
            starting = syncpass.starting_status(view, self._pod_phase(job.namespace, view.desired.names.pod))
            self._write_status(key, obj, previous, starting)
            outcome = self._update(obj, job, view, logger)
            if outcome.succeeded and self.inventory is not None and self.inventory.is_lost(key):
                self.inventory.rebuilt(key)
                self.events.event(obj, NORMAL, REASON_STACK_REBUILT, "the job's stack was missing from the state "
                                  "backend; rebuilt by adopting the job's objects as they are (nothing replaced)")

        seen = self._afterwards(job, view.desired)
        new, requeue = syncpass.conclude(view, chosen, outcome, seen, starting)
        self.metrics.set_certificate(job.namespace, job.name, seen.served, view.renewal_fraction)
        written_over = starting if starting is not None else previous
        self._write_status(key, obj, written_over, new)
        self._ready_events(obj, written_over, new)
        return Result(requeue_after=requeue)

    def _view(self, job: IflearnerJob, generation: int, previous: Mapping[str, Any],
              now: datetime.datetime, policy_warning: tuple[str, str] | None = None) -> syncpass.JobView:
        """Everything a pass over a valid job reads before it decides: the previous status,
        parsed once here, and the caches."""
        pod = self._cached(("v1", "Pod", job.namespace, base_name(job.namespace, job.name)))
        template = syncpass.template_digest(job.template)
        desired = desired_resources(job, self.settings, syncpass.legacy_token_mount(pod, previous, generation,
                                                                                    template))
        fingerprint = gating.fingerprint(desired, self.settings,
                                         self.stack_inputs(desired) if self.stack_inputs is not None else None)
        last, failures = Operation.from_status(previous.get("lastOperation")), failure_count_of(previous)
        refs = owned_object_refs(desired)
        fraction = self.settings.certificate_renewal_fraction
        served = renewal.served_certificate(self._cached(("v1", "Secret", job.namespace, desired.names.tls_secret)))
        # Renewal: a certificate past its renewal time needs a run although nothing changed.
        decision = gating.decide(fingerprint, previous.get("applied"), gating.observe(refs, self._cached), last)
        if self.record_problem is not None:
            decision = gating.with_record_problem(decision, self.record_problem(desired))
        lost = self.inventory is not None and self.inventory.is_lost(f"{job.namespace}/{job.name}")
        decision = gating.with_lost_stack(decision, lost, REBUILD_REASON)
        gate = renewal.gate(decision, served, now, fraction)
        trust: syncpass.TrustView | None = None
        if desired.trust_configmap is not None and self.trust_cas is not None:
            # Which CAs the client's Pod trusts: what it mounted, not what its ConfigMap holds now.
            trust = syncpass.TrustView(previous.get("trust"), self.trust_cas(),
                                       self._pod_uid(job.namespace, desired.names.pod))
        outputs = outputs_for(job.host, job.namespace, desired.names, desired.trust_configmap is not None,
                              desired.transport.value)
        # The issuer is chosen after the fingerprint (whose stack inputs choose it too): should the
        # choice flip in between, the job is signed by the newer choice and the fingerprint records
        # the older, so the next pass sees a change and runs again, rather than never.
        return syncpass.JobView(desired, generation, job.host, previous, now, fingerprint, gate, last, failures,
                                served, self.issuer(), trust, outputs, fraction, policy_warning, template)

    def _update(self, obj: Mapping[str, Any], job: IflearnerJob, view: syncpass.JobView,
                logger: logging.LoggerAdapter) -> syncpass.UpdateOutcome:  # type: ignore[type-arg]
        """The signer, then ``up``: its outcome. A stale lock or pending operations of a run that
        died are cleared by the runner itself (never a live run's)."""
        stack = stack_name(job)
        logger.info("running up", extra={"stack": stack, "reason": view.gate.reason, "refresh": view.gate.refresh})
        result = self._up(stack, view.desired, view.gate.refresh, view.issuer.keys, logger)
        finished = self.clock()
        versions = self._versions_after_up(owned_object_refs(view.desired)) if result.succeeded else None
        outcome = syncpass.outcome_of(view, result, finished, versions)
        if outcome.succeeded:
            logger.info("up succeeded", extra={"stack": stack, "seconds": result.seconds, "changes": result.changes})
            return outcome
        logger.warning("up failed", extra={"stack": stack, "failures": outcome.failures,
                                           "error": (result.error or "")[:500]})
        if outcome.failures == 1 or outcome.failures % EVENT_EVERY_N_FAILURES == 0:
            self.events.event(obj, WARNING, "StackUpdateFailed",
                              f"pulumi up failed (attempt {outcome.failures}): {result.error}")
        return outcome

    def _afterwards(self, job: IflearnerJob, desired: DesiredResources) -> syncpass.Afterwards:
        """What the caches show once the pass has acted (after an up they hold what it wrote:
        _versions_after_up waited for them)."""
        pod = desired.names.pod
        return syncpass.Afterwards(
            now=self.clock(), pod_phase=self._pod_phase(job.namespace, pod),
            pod_failure=self._pod_failure(job.namespace, pod), pod_uid=self._pod_uid(job.namespace, pod),
            route=self._route_status(desired),
            served=renewal.served_certificate(self._cached(("v1", "Secret", job.namespace,
                                                            desired.names.tls_secret))))

    def _preflight(self, job: IflearnerJob, desired: DesiredResources, refs: list[gating.ObjectRef],
                   previous: Mapping[str, Any]) -> tuple[str, tuple[Problem, ...]] | None:
        """(reason, problems) when the job must not run ``up``; None when it may.

        Reads the API server, not the informers: they see only the operator's
        labelled objects, and a stale cache must not let an ``up`` adopt a name.
        """
        pod_exists = False
        if job.uid:  # always set for a job from the cluster
            observed = [(ref, self._read(ref)) for ref in refs]
            conflicts = preflight.name_conflicts(observed, job.uid, desired.labels,
                                                 preflight.applied_keys_of(previous))
            if conflicts:
                return REASON_NAME_CONFLICT, tuple(c.problem() for c in conflicts)
            pod_exists = any(ref[1] == "Pod" and obj is not None for ref, obj in observed)
        problems = preflight.dry_run_pod(self.api, desired.pod, exists=pod_exists)
        if problems:
            return REASON_INVALID_POD_TEMPLATE, problems
        return None

    def _stalled(self, key: str, obj: dict[str, Any], previous: dict[str, Any], found: tuple[Problem, ...],
                 now: datetime.datetime, logger: logging.LoggerAdapter,  # type: ignore[type-arg]
                 reason: str = REASON_INVALID_SPEC) -> Result:
        metadata = obj["metadata"]
        generation = int(metadata.get("generation") or 0)
        problems = tuple(f"{p.field}: {p.message}" for p in found)
        pod = base_name(metadata["namespace"], metadata["name"])
        new = compute_status(previous, Observation(
            generation=generation, now=rfc3339(now), problems=problems, stall_reason=reason,
            failure_count=failure_count_of(previous), pod_phase=self._pod_phase(metadata["namespace"], pod)))
        old_stalled = condition(previous, STALLED)
        already = (old_stalled is not None and old_stalled.get("status") == "True"
                   and old_stalled.get("observedGeneration") == generation and old_stalled.get("reason") == reason)
        if not already:
            logger.warning("stalled", extra={"reason": reason, "problems": "; ".join(problems)[:1000]})
            self.events.event(obj, WARNING, reason, "; ".join(problems))
        self._write_status(key, obj, previous, new)
        return Result()

    def _ready_events(self, obj: Mapping[str, Any], previous: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        was, now_ready = is_ready(previous), is_ready(new)
        if was == now_ready:
            return
        ready = condition(new, READY) or {}
        if now_ready:
            self.events.event(obj, NORMAL, "Ready", str(ready.get("message") or "the job is ready"))
        else:
            self.events.event(obj, WARNING, "NotReady", str(ready.get("message") or "the job is not ready"))

    # -- deletion -------------------------------------------------------------------------------

    def _finalize(self, key: str, obj: dict[str, Any], logger: logging.LoggerAdapter) -> Result:  # type: ignore[type-arg]
        metadata = obj["metadata"]
        if FINALIZER not in (metadata.get("finalizers") or []):
            self.forget(key)
            return Result()
        namespace, name = metadata["namespace"], metadata["name"]
        generation = int(metadata.get("generation") or 0)
        previous = self._previous_status(key, obj)
        last = Operation.from_status(previous.get("lastOperation"))
        failures = failure_count_of(previous) if last is not None and last.kind == "destroy" else 0
        now = self.clock()
        retry_at = gating.retry_time(last, failures, "destroy") if last and last.kind == "destroy" else None
        pod_phase = self._pod_phase(namespace, base_name(namespace, name))
        if retry_at is not None and retry_at > now:
            return Result(requeue_after=(retry_at - now).total_seconds() + 0.05)

        conflicts = self._destroy_conflicts(obj, previous)
        if conflicts:
            return self._destroy_waits(key, obj, previous, conflicts, pod_phase, logger)

        stack = stack_name_of(namespace, name)
        starting = compute_status(previous, Observation(
            generation=generation, now=rfc3339(now), in_progress="destroy", deleting=True,
            failure_count=failures, pod_phase=pod_phase))
        self._write_status(key, obj, previous, starting)
        logger.info("destroying the stack", extra={"stack": stack})
        result = self._run("destroy", lambda: self.runner.destroy(stack))
        if result.succeeded and result.missing and previous.get("applied"):
            result = self._delete_without_state(obj, stack, result, logger)
        finished = rfc3339(self.clock())
        if result.succeeded:
            logger.info("stack destroyed", extra={"stack": stack, "seconds": result.seconds,
                                                  "changes": result.changes})
            self._remove_finalizer(obj)
            self.forget(key)
            with self._memo_lock:
                self._finalized[key] = str(metadata.get("uid"))
            return Result()
        failures += 1
        operation = Operation("destroy", RESULT_FAILED, finished, result.changes, error=result.error,
                              seconds=result.seconds, fingerprint="destroy", reason=result.reason)
        retry_at = gating.retry_time(operation, failures, "destroy")
        logger.warning("destroy failed", extra={"stack": stack, "failures": failures,
                                                "error": (result.error or "")[:500]})
        if failures == 1 or failures % EVENT_EVERY_N_FAILURES == 0:
            self.events.event(obj, WARNING, "DestroyFailed",
                              f"pulumi destroy failed (attempt {failures}); the finalizer stays until it "
                              f"succeeds: {result.error}")
        new = compute_status(starting, Observation(
            generation=generation, now=finished, deleting=True, operation=operation, failure_count=failures,
            next_retry_time=gating.retry_time_text(retry_at), pod_phase=pod_phase))
        self._write_status(key, obj, starting, new)
        return Result(requeue_after=exponential_backoff(failures))

    def _delete_without_state(self, obj: Mapping[str, Any], stack: str, result: StackResult,
                              logger: logging.LoggerAdapter) -> StackResult:  # type: ignore[type-arg]
        """The job was applied, but its stack is not in the backend: delete what the cluster shows
        was the job's (see :mod:`iflearner.controller.orphans`), say so, and only then succeed."""
        metadata = obj["metadata"]
        claim = tenancy.claim_of(obj)
        others = tenancy.ClusterJobs.of(self.jobs.list(), (metadata["namespace"], metadata["name"])).claims
        spec_hosts = tenancy.hosts_of(obj)
        # What the job published: its applied records (a status of an older version: its spec's hosts).
        own = claim.records if claim is not None and claim.records else (spec_hosts.hosts if spec_hosts else ())
        keys = orphans.record_keys(own, (h for c in others for h in c.records))
        kinds = [_RESOURCES_BY_KIND[kind] for kind in self.owned if kind in _RESOURCES_BY_KIND]
        try:
            deleted = orphans.delete_job_objects(self.api, kinds, self.settings, metadata["namespace"],
                                                 job_uid_label(str(metadata.get("uid"))),
                                                 keys)
        except ApiException as error:
            return StackResult("destroy", stack, False, error=f"the job's stack state is missing and deleting its "
                               f"objects from the cluster failed: {error.status} {error.reason}",
                               reason=REASON_STACK_STATE_MISSING)
        message = (f"the job's stack {stack} was not in the state backend (a changed backend URL or a lost "
                   f"volume?): deleted what carried the job's uid instead: {', '.join(deleted) or 'nothing left'}")
        logger.warning("stack state missing; deleted the job's objects by label", extra={"deleted": deleted})
        self.events.event(obj, WARNING, REASON_STACK_STATE_MISSING, message)
        return result

    def _destroy_conflicts(self, obj: Mapping[str, Any],
                           previous: Mapping[str, Any]) -> tuple[preflight.NameConflict, ...]:
        """Objects the stack recorded that are now someone else's: a destroy would delete them by name.

        Only names in ``status.applied`` can be in the stack's state; a job
        that never ran ``up`` (e.g. stalled on a conflict) has nothing to guard.
        """
        applied = preflight.applied_keys_of(previous)
        if not applied:
            return ()
        try:
            job = parse_job(obj)
        except InvalidJobError:
            return ()  # its names cannot be derived; the stack's state decides
        if not job.uid:
            return ()
        desired = desired_resources(job, self.settings)
        refs = [r for r in owned_object_refs(desired) if gating.object_key(r[1], r[3]) in applied]
        observed = [(ref, self._read(ref)) for ref in refs]
        return preflight.name_conflicts(observed, job.uid, desired.labels, applied)

    def _destroy_waits(self, key: str, obj: dict[str, Any], previous: dict[str, Any],
                       conflicts: tuple[preflight.NameConflict, ...], pod_phase: str | None,
                       logger: logging.LoggerAdapter) -> Result:  # type: ignore[type-arg]
        metadata = obj["metadata"]
        generation = int(metadata.get("generation") or 0)
        problems = tuple(
            f"metadata.name: {c.object} is not this job's ({c.holder}) but holds a name the job's stack "
            "recorded; destroying the stack would delete it: delete or rename that object (or remove the "
            "job's finalizer to leave everything in place)" for c in conflicts)
        new = compute_status(previous, Observation(
            generation=generation, now=rfc3339(self.clock()), deleting=True, problems=problems,
            stall_reason=REASON_NAME_CONFLICT, failure_count=failure_count_of(previous), pod_phase=pod_phase))
        old = condition(previous, STALLED)
        if not (old is not None and old.get("status") == "True" and old.get("reason") == REASON_NAME_CONFLICT):
            logger.warning("destroy waits for a name conflict", extra={"problems": "; ".join(problems)[:1000]})
            self.events.event(obj, WARNING, REASON_NAME_CONFLICT,
                              "the job's stack is not destroyed while it would delete objects that are not the "
                              "job's: " + "; ".join(problems))
        self._write_status(key, obj, previous, new)
        # Only reads (no Pulumi) until the name is free again.
        return Result(requeue_after=DESTROY_CONFLICT_RECHECK_SECONDS)

    def _remove_finalizer(self, obj: Mapping[str, Any]) -> None:
        for attempt in range(3):
            metadata = obj.get("metadata") or {}
            finalizers = [f for f in (metadata.get("finalizers") or []) if f != FINALIZER]
            path = job_path(metadata["namespace"], metadata["name"])
            body = {"metadata": {"finalizers": finalizers, "resourceVersion": metadata.get("resourceVersion")}}
            try:
                self.api.request("PATCH", path, body=body, content_type=MERGE_PATCH)
                return
            except ApiException as error:
                if error.status == 404:
                    return
                if error.status != 409 or attempt == 2:
                    raise
                fresh = self.api.get_or_none(path)
                if fresh is None:
                    return
                obj = fresh
