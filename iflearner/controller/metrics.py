"""Prometheus metrics of the controller, on a registry of its own."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from iflearner.certrenewal import CertificateTimes, renewal_time
from iflearner.controller.options import DEFAULT_LEASE_NAME
from iflearner.controller.status import PHASES, RESULT_FAILED, STALLED, failure_count_of

# The reason of a failed operation that names none more specific.
FAILED_REASON = "OperationFailed"

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
PULUMI_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600)


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    found = [c for c in status.get("conditions") or [] if isinstance(c, Mapping) and c.get("type") == kind]
    return found[0] if found else None


def job_families(jobs: Iterable[Mapping[str, Any]],
                 failure_reasons: MutableMapping[str, str] | None = None) -> list[GaugeMetricFamily]:
    """The series computed from the jobs' status at scrape time.

    - ``iflearner_jobs{phase}``: jobs by ``status.phase``;
    - ``iflearner_job_stalled{namespace,name,reason}``: 1 for each job whose ``Stalled`` condition
      is True (``count by (reason)`` gives the totals);
    - ``iflearner_job_failed_operations{namespace,name,operation,reason}``: for each job whose stack
      operations have failed since its last success, how many times in a row
      (``status.lastOperation.failureCount``), labelled with the last failure's reason
      (``StackLocked`` while another run holds the stack). The series stays while a retry runs (its
      ``lastOperation`` is then in progress and names no reason: ``failure_reasons``, job key ->
      reason, remembers the last one seen), so an alert's ``for`` is not reset by every retry.
    """
    reasons = failure_reasons if failure_reasons is not None else {}
    phases: Tally[str] = Tally()
    stalled = GaugeMetricFamily(
        "iflearner_job_stalled", "1 for each IflearnerJob whose Stalled condition is True",
        labels=["namespace", "name", "reason"])
    failing = GaugeMetricFamily(
        "iflearner_job_failed_operations", "Consecutive failed stack operations of a job since its last success",
        labels=["namespace", "name", "operation", "reason"])
    still_failing = set()
    for job in jobs:
        status = job.get("status") or {}
        meta = job.get("metadata") or {}
        identity = [str(meta.get("namespace")), str(meta.get("name"))]
        phases[str(status.get("phase") or "None")] += 1
        condition = _condition(status, STALLED)
        if condition is not None and condition.get("status") == "True":
            stalled.add_metric([*identity, str(condition.get("reason") or "Unknown")], 1)
        last = status.get("lastOperation")
        count = failure_count_of(status)
        if not isinstance(last, Mapping) or not count:
            continue
        key = "/".join(identity)
        if last.get("result") == RESULT_FAILED:
            reasons[key] = str(last.get("reason") or FAILED_REASON)
        still_failing.add(key)
        failing.add_metric([*identity, str(last.get("kind")), reasons.get(key, FAILED_REASON)], count)
    for key in set(reasons) - still_failing:
        del reasons[key]
    by_phase = GaugeMetricFamily("iflearner_jobs", "IflearnerJobs by status.phase", labels=["phase"])
    for phase in (*PHASES, "None"):
        by_phase.add_metric([phase], phases.get(phase, 0))
    return [by_phase, stalled, failing]


class _JobSeries(Collector):
    """:func:`job_families` of the job cache, at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[Mapping[str, Any]]] | None = None
        self._failure_reasons: dict[str, str] = {}
        self._lock = threading.Lock()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:  # scrapes may overlap; the reasons are shared between them
            families = job_families(self.source() if self.source else (), self._failure_reasons)
        yield from families


class Metrics:
    """Every metric the controller exports."""

    def __init__(self, lease: str = DEFAULT_LEASE_NAME) -> None:
        disable_created_metrics()  # the *_created series only add noise to every scrape
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.reconciles = Counter(
            "iflearner_reconciles", "Reconciles by result (success, requeue, error)", ["result"],
            registry=registry)
        self.reconcile_errors = Counter(
            "iflearner_reconcile_errors", "Reconciles that raised an error (retried with backoff)",
            registry=registry)
        self.reconcile_duration = Histogram(
            "iflearner_reconcile_duration_seconds", "Time spent in one reconcile",
            buckets=RECONCILE_BUCKETS, registry=registry)
        self.queue_depth = Gauge(
            "iflearner_workqueue_depth", "Job keys waiting in the work queue", registry=registry)
        self.pulumi_runs = Counter(
            "iflearner_pulumi_runs", "Pulumi operations run, by operation and result",
            ["operation", "result"], registry=registry)
        self.pulumi_duration = Histogram(
            "iflearner_pulumi_run_duration_seconds", "Duration of Pulumi operations",
            ["operation"], buckets=PULUMI_BUCKETS, registry=registry)
        self.pulumi_stopped = Counter(
            "iflearner_pulumi_runs_stopped", "Pulumi runs this process stopped: over the run timeout, fenced "
            "on losing the leader lease, or at shutdown", ["reason"], registry=registry)
        self.stack_inventory = Counter(
            "iflearner_stack_inventories", "Listings of the state backend's stacks (lost stacks are rebuilt), "
            "by result", ["result"], registry=registry)
        # Labelled with the lease: operators sharded by namespace each lead their own.
        self._leader = Gauge(
            "iflearner_leader", "1 while this process holds the leader lease", ["lease"], registry=registry)
        self.leader = self._leader.labels(lease)
        self.gated = Counter(
            "iflearner_gated_reconciles", "Reconciles that skipped Pulumi because nothing changed",
            registry=registry)
        self.certificate_expiry = Gauge(
            "iflearner_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate each job serves (Unix time)", ["namespace", "name"], registry=registry)
        self.certificate_renewal = Gauge(
            "iflearner_certificate_renewal_timestamp_seconds",
            "When the certificate each job serves is due for renewal (Unix time)", ["namespace", "name"],
            registry=registry)
        self._jobs = _JobSeries()
        registry.register(self._jobs)
        for result in ("success", "requeue", "error"):
            self.reconciles.labels(result)
        for result in ("succeeded", "failed"):
            self.stack_inventory.labels(result)
        for reason in ("timeout", "fenced", "shutdown"):
            self.pulumi_stopped.labels(reason)
        for operation in ("up", "destroy"):
            for result in ("succeeded", "failed"):
                self.pulumi_runs.labels(operation, result)

    def set_queue_depth_source(self, source: Callable[[], int]) -> None:
        self.queue_depth.set_function(lambda: float(source()))

    def set_jobs_source(self, source: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self._jobs.source = source

    def record_pulumi(self, operation: str, succeeded: bool, seconds: float) -> None:
        self.pulumi_runs.labels(operation, "succeeded" if succeeded else "failed").inc()
        self.pulumi_duration.labels(operation).observe(seconds)

    def set_certificate(self, namespace: str, name: str, served: CertificateTimes | None,
                        fraction: float) -> None:
        """Record when a job's certificate expires and is due for renewal; None removes the job's
        series (job gone, or no certificate)."""
        if served is not None:
            self.certificate_expiry.labels(namespace, name).set(served.not_after.timestamp())
            self.certificate_renewal.labels(namespace, name).set(renewal_time(served, fraction).timestamp())
            return
        for gauge in (self.certificate_expiry, self.certificate_renewal):
            try:
                gauge.remove(namespace, name)
            except KeyError:
                pass

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
