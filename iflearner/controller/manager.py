"""Wiring: configuration, informers, the work queue, workers, leader election, probes, shutdown.

Start-up order: metrics/health server, informers (also on a standby replica,
so that a failover starts with warm caches), wait for the caches to sync
(``/readyz`` turns ready), then -- as leader, when leader election is on --
the workers and the periodic resync.

SIGHUP: resync every job now. SIGTERM/SIGINT: stop handing out keys, let in-flight reconciles finish
(``shutdown_grace``), stop any Pulumi run still going (SIGTERM: it cancels and
releases its stack lock; SIGKILL after the fencing grace), and only then
release the Lease, exit 0. Losing the Lease: fence at once (every Pulumi run
of this process is dead before the lease can pass to another replica; see
:func:`iflearner.controller.leaderelection.fencing_plan`), stop reconciling
and exit 1, so that the Deployment restarts the process as a fresh candidate.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config

from iflearner.controller.clusterinputs import ClusterInputs
from iflearner.controller.dnsrecords import DnsRecords, jobs_holding
from iflearner.controller.events import EventRecorder
from iflearner.controller.health import HealthServer
from iflearner.controller.informers import (
    ADDED,
    ALL_OWNED_RESOURCES,
    DELETED,
    JOBS,
    MANAGED_SELECTOR,
    Informer,
    describe_error,
    served_owned_resources,
)
from iflearner.controller.inventory import Inventory
from iflearner.controller.kubeapi import KubeApi
from iflearner.controller.leaderelection import (
    FencingPlan,
    LeaderElectionConfig,
    LeaderElector,
    default_identity,
    fencing_plan,
)
from iflearner.controller.logs import configure as configure_logging
from iflearner.controller.metrics import Metrics
from iflearner.controller.options import ControllerOptions
from iflearner.controller.reconciler import Reconciler, warm_up_program_imports
from iflearner.controller.workqueue import WorkQueue
from iflearner.desired import LABEL_JOB_NAME, LABEL_JOB_NAMESPACE, job_labels
from iflearner.job import IflearnerJob, Role
from iflearner.pulumiruns import (
    DEFAULT_TERM_GRACE_SECONDS,
    KILL_SETTLE_SECONDS,
    FencedError,
    RunRegistry,
)

log = logging.getLogger("iflearner.controller")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def load_api_client(options: ControllerOptions, pool_size: int) -> tuple[client.ApiClient, str | None]:
    """An ApiClient, and the kubeconfig text the Pulumi provider should use (None: in-cluster)."""
    from iflearner.settings import kubeconfig_text

    configuration = client.Configuration()
    text = kubeconfig_text(options.kubeconfig)
    if text is None:
        config.load_incluster_config(client_configuration=configuration)
    else:
        path = str(options.kubeconfig) if options.kubeconfig else None
        config.load_kube_config(config_file=path, context=options.context, client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration), text


def _job_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Job events worth a reconcile: not our own status writes."""
    if old is None or new is None:
        return True
    a, b = old.get("metadata") or {}, new.get("metadata") or {}
    return any(a.get(k) != b.get(k) for k in ("generation", "deletionTimestamp", "finalizers", "uid"))


def _pod_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Pod events worth a reconcile: phase, identity, deletion, labels -- not every status tick."""
    if old is None or new is None:
        return True
    a, b = old.get("metadata") or {}, new.get("metadata") or {}
    if any(a.get(k) != b.get(k) for k in ("uid", "deletionTimestamp", "labels")):
        return True
    return (old.get("status") or {}).get("phase") != (new.get("status") or {}).get("phase")


def _trust_mounted(job: Mapping[str, Any] | None) -> Any:
    status = (job or {}).get("status") or {}
    return ((status.get("trust") or {}).get("mounted"), status.get("phase"))


class Controller:
    """The running controller (one per process)."""

    def __init__(self, options: ControllerOptions, runner: Any | None = None) -> None:
        self.options = options
        self.metrics = Metrics(lease=options.lease_name)
        namespaces = list(options.namespaces) or [None]
        pool = len(namespaces) * (1 + len(ALL_OWNED_RESOURCES)) + options.workers * 2 + 8
        self.api_client, self.kubeconfig_text = load_api_client(options, pool)
        self.api = KubeApi(self.api_client)
        owned_resources = served_owned_resources(self.api)
        self.queue = WorkQueue()
        self.metrics.set_queue_depth_source(lambda: len(self.queue))
        ns = list(options.namespaces) or None
        self.jobs = Informer(self.api, JOBS, namespaces=ns, handler=self._on_job)
        self.owned = {
            r.kind: Informer(self.api, r, namespaces=ns, label_selector=MANAGED_SELECTOR,
                             handler=self._on_owned_pod if r.kind == "Pod" else self._on_owned)
            for r in owned_resources
        }
        self.metrics.set_jobs_source(self.jobs.list)
        # The CA and the trust bundle the stacks read: a change re-queues every job.
        self.cluster_inputs = ClusterInputs(self.api, options.settings, self.resync)
        self.cluster_inputs.watch_jobs(self.jobs)
        # The shared DNS records ConfigMaps: a job's record removed or changed by hand is repaired.
        self.dns_records = DnsRecords(self.api, options.settings, self._on_records_changed)
        self.identity = options.identity or default_identity()
        self.events = EventRecorder(self.api, instance=self.identity)
        # The Pulumi runs this controller fences: its own registry, so that a second
        # controller in the same process (tests) starts unfenced.
        self.runs: RunRegistry = getattr(runner, "registry", None) or RunRegistry(
            on_stop=lambda reason: self.metrics.pulumi_stopped.labels(reason).inc())
        self.runner = runner if runner is not None else self._make_runner()
        # The backend's stacks, listed at start and every resync: a lost stack is rebuilt.
        list_stacks = getattr(self.runner, "list_stacks", None)
        self.inventory = Inventory(list_stacks) if list_stacks is not None else None
        self.reconciler = Reconciler(self.api, self.jobs, self.owned, self.runner, options.settings,
                                     self.kubeconfig_text, self.events, self.metrics,
                                     stack_inputs=self.cluster_inputs.for_stack,
                                     trust_cas=self.cluster_inputs.trust_cas,
                                     issuer=self.cluster_inputs.issuer,
                                     record_problem=self.dns_records.problem, inventory=self.inventory)
        self.stop_event = threading.Event()
        self.exit_code = EXIT_OK
        self._workers: list[threading.Thread] = []
        self._started_workers = threading.Event()
        self.elector: LeaderElector | None = None
        # Without election nobody takes over from this process: runs get the full grace.
        self.fencing: FencingPlan | None = None
        self.term_grace = DEFAULT_TERM_GRACE_SECONDS
        if options.leader_elect:
            election = LeaderElectionConfig(options.lease_namespace, options.lease_name, self.identity,
                                            options.lease_duration, options.renew_deadline,
                                            options.retry_period).validated()
            self.fencing = fencing_plan(election, DEFAULT_TERM_GRACE_SECONDS, KILL_SETTLE_SECONDS)
            self.term_grace = self.fencing.term_grace
            self.elector = LeaderElector(
                self.api, election,
                on_started_leading=self._on_started_leading,
                on_stopped_leading=self._on_lost_lease,
                on_fence=self._fence,
            )
        self.servers = [HealthServer(options.metrics_address, self.metrics, self._healthy, self._ready)]
        if options.health_address and options.health_address != options.metrics_address:
            self.servers.append(HealthServer(options.health_address, self.metrics, self._healthy, self._ready))

    def _make_runner(self) -> Any:
        from iflearner.stackrunner import StackRunner

        # Locks are removed only when their run is proven dead (iflearner.stacklocks):
        # a lock from another host may be a person's live run, unless that host is
        # a former leader of ours (fenced before the lease passed to us).
        return StackRunner(self.options.runner_settings(), run_timeout=self.options.pulumi_run_timeout,
                           registry=self.runs, fenced_hosts=self._former_leader_hosts)

    def _former_leader_hosts(self) -> list[str]:
        return self.elector.former_leader_hosts() if self.elector is not None else []

    # -- event handlers (informer threads: keep them quick) ---------------------------------------

    def _on_job(self, event: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new or old or {}
        metadata = obj.get("metadata") or {}
        key = f"{metadata.get('namespace')}/{metadata.get('name')}"
        if (event in (ADDED, DELETED) or _job_changed(old, new)
                or (new is not None and self.reconciler.status_written_elsewhere(key, new))):
            self.queue.add(key)
        if event == DELETED or _trust_mounted(old) != _trust_mounted(new):
            # A Pod that mounted a new bundle (or one that is gone) may end a rotation's overlap.
            self.cluster_inputs.recheck_issuer()

    def _job_key_for(self, labels: Mapping[str, str]) -> str | None:
        namespace, value = labels.get(LABEL_JOB_NAMESPACE), labels.get(LABEL_JOB_NAME)
        if not namespace or not value:
            return None
        if self.jobs.get(namespace, value) is not None:
            return f"{namespace}/{value}"
        # Long job names carry a shortened label value: find the job it stands for.
        for job in self.jobs.list(namespace):
            name = str((job.get("metadata") or {}).get("name"))
            placeholder = IflearnerJob(name=name, namespace=namespace, role=Role.SERVER, host="x.invalid",
                                       template={})
            if job_labels(placeholder)[LABEL_JOB_NAME] == value:
                return f"{namespace}/{name}"
        return None

    def _on_owned(self, event: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new or old or {}
        key = self._job_key_for((obj.get("metadata") or {}).get("labels") or {})
        if key is not None:
            self.queue.add(key)

    def _on_records_changed(self, keys: set[str]) -> None:
        for key in jobs_holding(keys, self.jobs.list()):
            self.queue.add(key)

    def _on_owned_pod(self, event: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if event in (ADDED, DELETED) or _pod_changed(old, new):
            self._on_owned(event, old, new)

    # -- probes and metrics -----------------------------------------------------------------------

    def _informers(self) -> list[Informer]:
        return [self.jobs, *self.owned.values(), *self.cluster_inputs.informers, *self.dns_records.informers]

    def synced(self) -> bool:
        return all(i.has_synced() for i in self._informers())

    def _ready(self) -> tuple[bool, str]:
        if self.stop_event.is_set():
            return False, "shutting down"
        pending = [i.resource.plural for i in self._informers() if not i.has_synced()]
        if pending:
            return False, f"caches not synced: {', '.join(pending)}"
        role = "" if self.elector is None else (" (leader)" if self.elector.is_leader else " (standby)")
        return True, f"caches synced{role}"

    def _healthy(self) -> tuple[bool, str]:
        dead = [i.resource.plural for i in self._informers() if not i.alive()]
        dead += [t.name for t in self._workers if not t.is_alive() and not self.stop_event.is_set()]
        if self.elector is not None and not self.elector.alive() and not self.stop_event.is_set():
            dead.append("leader-election")
        return (not dead, f"dead threads: {', '.join(dead)}" if dead else "alive")

    # -- workers ----------------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            started = time.monotonic()
            try:
                result = self.reconciler.reconcile(str(key))
            except FencedError as error:
                # Not the leader any more: the key is for the next leader, nothing to retry here.
                log.info("reconcile stopped by fencing", extra={"key": str(key), "error": str(error)})
            except Exception as error:  # noqa: BLE001 - retried with backoff, never fatal
                delay = self.queue.add_rate_limited(key)
                self.metrics.reconciles.labels("error").inc()
                self.metrics.reconcile_errors.inc()
                namespace, _, name = str(key).partition("/")
                log.error("reconcile failed; retrying", exc_info=not _is_api_error(error), extra={
                    "namespace": namespace, "job_name": name, "error": describe_error(error),
                    "retry_seconds": delay})
            else:
                self.queue.forget(key)
                if result.requeue_after is not None:
                    self.queue.add_after(key, result.requeue_after)
                    self.metrics.reconciles.labels("requeue").inc()
                else:
                    self.metrics.reconciles.labels("success").inc()
            finally:
                self.metrics.reconcile_duration.observe(time.monotonic() - started)
                self.queue.done(key)

    def resync(self, reason: str = "periodic") -> None:
        """Queue every cached job (level-triggered: unchanged jobs cost no Pulumi run)."""
        keys = self.jobs.keys()
        log.info("resync", extra={"jobs": len(keys), "reason": reason})
        for key in keys:
            self.queue.add(key)

    def _resync_loop(self) -> None:
        self.take_inventory()
        while not self.stop_event.wait(self.options.resync_seconds):
            self.take_inventory()
            self.resync()

    def take_inventory(self) -> None:
        """List the backend's stacks; re-queue the jobs whose stacks are lost (see inventory)."""
        if self.inventory is None:
            return
        lost = self.inventory.take(self.jobs.list())
        self.metrics.stack_inventory.labels("failed" if lost is None else "succeeded").inc()
        for key in lost or ():
            self.queue.add(key)

    def start_workers(self) -> None:
        if self._started_workers.is_set() or self.stop_event.is_set():
            return
        self._started_workers.set()
        warm_up_program_imports()
        for index in range(self.options.workers):
            thread = threading.Thread(target=self._worker, name=f"worker-{index}", daemon=True)
            thread.start()
            self._workers.append(thread)
        threading.Thread(target=self._resync_loop, name="resync", daemon=True).start()
        for key in self.jobs.keys():
            self.queue.add(key)
        log.info("workers started", extra={"workers": self.options.workers})

    def _on_started_leading(self) -> None:
        self.metrics.leader.set(1)
        self.start_workers()

    def _fence(self) -> None:
        """Leadership is lost: no Pulumi run of this process may outlive the lease (see fencing_plan)."""
        self.metrics.leader.set(0)
        self.queue.shutdown()
        started = time.monotonic()
        self.runs.fence(self.term_grace)
        log.error("fenced: every Pulumi run of this replica is stopped", extra={
            "identity": self.identity, "seconds": round(time.monotonic() - started, 3),
            "term_grace": self.term_grace})

    def _on_lost_lease(self) -> None:
        log.error("lost the leader lease: stopping reconciles and exiting", extra={"identity": self.identity})
        self.exit_code = EXIT_FAILED
        self.stop_event.set()

    # -- lifecycle --------------------------------------------------------------------------------

    def run(self) -> int:
        for server in self.servers:
            server.start()
        for informer in self._informers():
            informer.start()
        log.info("controller starting", extra={
            "identity": self.identity, "namespaces": ",".join(self.options.namespaces) or "all",
            "workers": self.options.workers, "leader_election": self.options.leader_elect,
            "ports": ",".join(str(server.port) for server in self.servers)})
        while not self.synced():
            if self.stop_event.wait(0.05):
                return self._shutdown()
        log.info("caches synced", extra={"jobs": len(self.jobs)})
        if self.elector is not None:
            self.elector.start()
        else:
            self.metrics.leader.set(1)  # without election, this process is the one that reconciles
            self.start_workers()
        # Wake up regularly: a signal delivered to another thread only runs its Python handler
        # once the main thread executes bytecode again.
        while not self.stop_event.wait(0.5):
            pass
        return self._shutdown()

    def stop(self) -> None:
        self.stop_event.set()

    def _shutdown(self) -> int:
        log.info("shutting down", extra={"exit_code": self.exit_code})
        self.queue.shutdown()
        if self.exit_code == EXIT_OK and not self.queue.wait_idle(self.options.shutdown_grace):
            log.warning("in-flight reconciles did not finish in time; stopping their Pulumi processes")
        # Before the lease is released: no run may outlive this replica's leadership.
        self.runs.fence(self.term_grace, "shutdown" if self.exit_code == EXIT_OK else "fenced")
        self.queue.wait_idle(10)
        if self.elector is not None:
            self.elector.stop(release=self.exit_code == EXIT_OK)
        for informer in self._informers():
            informer.stop()
        for server in self.servers:
            server.stop()
        log.info("stopped", extra={"exit_code": self.exit_code})
        return self.exit_code


def _is_api_error(error: BaseException) -> bool:
    from kubernetes.client.exceptions import ApiException

    return isinstance(error, ApiException)


def run_controller(options: ControllerOptions, runner: Any | None = None) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or a lost lease (exit 1); 2 on bad configuration."""
    configure_logging(options.log_level)
    try:
        controller = Controller(options, runner=runner)
    except (ValueError, RuntimeError, OSError, config.ConfigException) as error:
        log.error(f"cannot start: {error}")
        return EXIT_CONFIG
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, _frame: object) -> None:
            log.info("signal received", extra={"signal": signal.Signals(signum).name})
            controller.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # SIGHUP: resync now (operators and the benchmark use it).
        signal.signal(signal.SIGHUP, lambda _s, _f: threading.Thread(
            target=controller.resync, args=("SIGHUP",), daemon=True).start())
    return controller.run()
