"""Prometheus metrics of the controller, on a registry of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

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

from iflearner.controller.status import PHASES

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
PULUMI_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600)


class _JobsByPhase(Collector):
    """``iflearner_jobs{phase}`` computed from the job cache at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("iflearner_jobs", "IflearnerJobs by status.phase", labels=["phase"])
        counts = dict(self.source()) if self.source else {}
        for phase in (*PHASES, "None"):
            family.add_metric([phase], counts.get(phase, 0))
        yield family


class Metrics:
    """Every metric the controller exports."""

    def __init__(self) -> None:
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
        self.leader = Gauge(
            "iflearner_leader", "1 while this process holds the leader lease", registry=registry)
        self.gated = Counter(
            "iflearner_gated_reconciles", "Reconciles that skipped Pulumi because nothing changed",
            registry=registry)
        self.certificate_expiry = Gauge(
            "iflearner_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate each job serves (Unix time)", ["namespace", "name"], registry=registry)
        self._jobs = _JobsByPhase()
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

    def set_jobs_by_phase_source(self, source: Callable[[], Mapping[str, int]]) -> None:
        self._jobs.source = source

    def record_pulumi(self, operation: str, succeeded: bool, seconds: float) -> None:
        self.pulumi_runs.labels(operation, "succeeded" if succeeded else "failed").inc()
        self.pulumi_duration.labels(operation).observe(seconds)

    def set_certificate_expiry(self, namespace: str, name: str, not_after: float | None) -> None:
        """Record a job's certificate expiry; None removes the job's series (job gone, or no certificate)."""
        if not_after is not None:
            self.certificate_expiry.labels(namespace, name).set(not_after)
            return
        try:
            self.certificate_expiry.remove(namespace, name)
        except KeyError:
            pass

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
