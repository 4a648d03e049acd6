"""List+watch caches (informers) on the official kubernetes client.

Each informer lists a resource (paginated), remembers the list's
resourceVersion, then watches from it with bookmarks, following the
resourceVersion of every event. When the server says the version is too old
(410 Gone) it lists again and emits the differences as events, so handlers
never miss a change. ``has_synced`` turns true after the first complete list
in every watched namespace.

Handlers run on the informer's threads and must be quick (they enqueue keys).
"""

from __future__ import annotations

import copy
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from iflearner.controller.kubeapi import KubeApi, collection_path
from iflearner.controller.renewal import SUMMARY_KEY, summarize_tls_secret
from iflearner.desired import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
EventHandler = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], None]
Transform = Callable[[dict[str, Any]], dict[str, Any]]

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
PAGE_SIZE = 500


@dataclass(frozen=True)
class Resource:
    """A listable resource: its kind, API path and plural."""

    kind: str
    api_path: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str

    @property
    def api_version(self) -> str:
        return "v1" if self.api_path == "/api/v1" else self.api_path.removeprefix("/apis/")


JOBS = Resource("IflearnerJob", "/apis/git.iflytek.com/v1", "iflearnerjobs")
PODS = Resource("Pod", "/api/v1", "pods")
SERVICES = Resource("Service", "/api/v1", "services")
SECRETS = Resource("Secret", "/api/v1", "secrets")
CONFIGMAPS = Resource("ConfigMap", "/api/v1", "configmaps")
INGRESSES = Resource("Ingress", "/apis/networking.k8s.io/v1", "ingresses")
OWNED_RESOURCES = (PODS, SERVICES, SECRETS, CONFIGMAPS, INGRESSES)
# Jobs on the gateway transport own these; the cluster serves them only where
# the bootstrap (or someone else) installed the Gateway API CRDs.
GATEWAYS = Resource("Gateway", "/apis/gateway.networking.k8s.io/v1", "gateways")
GRPCROUTES = Resource("GRPCRoute", "/apis/gateway.networking.k8s.io/v1", "grpcroutes")
GATEWAY_RESOURCES = (GATEWAYS, GRPCROUTES)
ALL_OWNED_RESOURCES = OWNED_RESOURCES + GATEWAY_RESOURCES


def served_owned_resources(api: KubeApi) -> tuple[Resource, ...]:
    """The owned kinds to watch: the Gateway API ones only where the cluster serves them.

    An informer on a kind the cluster lacks would never sync and keep the
    controller unready. Checked once at start: installing the Gateway API
    later needs an operator restart (the bootstrap installs it first).
    """
    served: list[Resource] = []
    for api_path in dict.fromkeys(r.api_path for r in GATEWAY_RESOURCES):
        group = api.get_or_none(api_path) or {}
        names = {r.get("name") for r in group.get("resources") or [] if isinstance(r, Mapping)}
        served += [r for r in GATEWAY_RESOURCES if r.api_path == api_path and r.plural in names]
    return OWNED_RESOURCES + tuple(served)


def strip_object(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop what the controller never reads: managedFields, and Secret/ConfigMap data.

    The gating needs only names and versions; keeping the job's private keys
    out of the cache keeps them out of memory and out of any debug output.
    """
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if obj.get("kind") == "Secret" and obj.get("type") == "kubernetes.io/tls":
        # Renewal needs the served certificate's dates: keep those, not the key.
        summary = summarize_tls_secret(obj.get("data"))
        if summary is not None:
            obj[SUMMARY_KEY] = summary
    if obj.get("kind") in ("Secret", "ConfigMap"):
        obj.pop("data", None)
        obj.pop("stringData", None)
        obj.pop("binaryData", None)
    return obj


def object_key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata.get('name')}" if namespace else str(metadata.get("name"))


def _resource_version(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


class Informer:
    """A cache of one resource kind, kept current by list+watch threads."""

    def __init__(
        self,
        api: KubeApi,
        resource: Resource,
        *,
        namespaces: Sequence[str] | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        handler: EventHandler | None = None,
        transform: Transform = strip_object,
        watch_timeout: int = 300,
    ) -> None:
        self.api = api
        self.resource = resource
        self.namespaces: list[str | None] = list(namespaces) if namespaces else [None]
        self.label_selector = label_selector
        self.field_selector = field_selector
        self._handlers: list[EventHandler] = [handler] if handler else []
        self._transform = transform
        self._watch_timeout = watch_timeout
        self._lock = threading.RLock()
        self._store: dict[str, dict[str, Any]] = {}
        self._synced: set[str | None] = set()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self.relists = 0

    # -- public API -----------------------------------------------------------------------------

    def add_handler(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    def start(self) -> None:
        for namespace in self.namespaces:
            name = f"informer-{self.resource.plural}-{namespace or 'all'}"
            thread = threading.Thread(target=self._run, args=(namespace,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopped.set()

    def has_synced(self) -> bool:
        with self._lock:
            return len(self._synced) == len(self.namespaces)

    def wait_for_sync(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.has_synced() and time.monotonic() < deadline and not self._stopped.wait(0.05):
            pass
        return self.has_synced()

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The cached object (a copy is not made: do not modify it)."""
        with self._lock:
            return self._store.get(f"{namespace}/{name}" if namespace else name)

    def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._store.values())
        if namespace is None:
            return items
        return [o for o in items if (o.get("metadata") or {}).get("namespace") == namespace]

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._store)

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    # -- internals ------------------------------------------------------------------------------

    def _emit(self, event: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for handler in self._handlers:
            try:
                handler(event, old, new)
            except Exception:  # noqa: BLE001 - a handler bug must not kill the informer
                log.exception("informer handler failed", extra={"kind": self.resource.kind})

    def _path(self, namespace: str | None) -> str:
        return collection_path(self.resource.api_path, self.resource.plural, namespace)

    def _list(self, namespace: str | None) -> str:
        """List everything (paginated), replace this namespace's part of the store, emit diffs."""
        items: dict[str, dict[str, Any]] = {}
        token: str | None = None
        resource_version = ""
        while True:
            page = self.api.get(self._path(namespace), limit=PAGE_SIZE, labelSelector=self.label_selector,
                                fieldSelector=self.field_selector, **({"continue": token} if token else {}))
            for item in page.get("items") or []:
                item.setdefault("kind", self.resource.kind)
                item.setdefault("apiVersion", self.resource.api_version)
                obj = self._transform(item)
                items[object_key(obj)] = obj
            meta = page.get("metadata") or {}
            resource_version = meta.get("resourceVersion") or resource_version
            token = meta.get("continue")
            if not token:
                break
        events: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = []
        with self._lock:
            for key, old in list(self._store.items()):
                if namespace is not None and (old.get("metadata") or {}).get("namespace") != namespace:
                    continue
                if key not in items:
                    del self._store[key]
                    events.append((DELETED, old, None))
            for key, obj in items.items():
                old = self._store.get(key)
                self._store[key] = obj
                if old is None:
                    events.append((ADDED, None, obj))
                elif _resource_version(old) != _resource_version(obj):
                    events.append((MODIFIED, old, obj))
            self._synced.add(namespace)
        self.relists += 1
        for event in events:
            self._emit(*event)
        return resource_version

    def _apply(self, event_type: str, raw: dict[str, Any]) -> None:
        raw.setdefault("kind", self.resource.kind)
        raw.setdefault("apiVersion", self.resource.api_version)
        obj = self._transform(raw)
        key = object_key(obj)
        with self._lock:
            old = self._store.get(key)
            if event_type == DELETED:
                self._store.pop(key, None)
            else:
                self._store[key] = obj
        if event_type == DELETED:
            self._emit(DELETED, old, None)
        elif old is None:
            self._emit(ADDED, None, obj)
        else:
            self._emit(MODIFIED, old, obj)

    def _watch(self, namespace: str | None, resource_version: str) -> str | None:
        """Watch from ``resource_version``; return the last version seen, None to relist."""
        query = {
            "resourceVersion": resource_version,
            "allowWatchBookmarks": True,
            "timeoutSeconds": int(self._watch_timeout * (1 + random.random())),
            "labelSelector": self.label_selector,
            "fieldSelector": self.field_selector,
        }
        for event in self.api.watch(self._path(namespace), query, timeout=self._watch_timeout * 2 + 30):
            if self._stopped.is_set():
                return resource_version
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            if kind == "BOOKMARK":
                resource_version = _resource_version(obj) or resource_version
                continue
            if kind in (ADDED, MODIFIED, DELETED):
                self._apply(kind, obj)
                resource_version = _resource_version(obj) or resource_version
        return resource_version

    def _run(self, namespace: str | None) -> None:
        resource_version: str | None = None
        failures = 0
        while not self._stopped.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list(namespace)
                resource_version = self._watch(namespace, resource_version)
                failures = 0
            except ApiException as error:
                if error.status == 410:
                    resource_version = None
                    continue
                failures += 1
                self._pause(failures, error)
            except Exception as error:  # noqa: BLE001 - network trouble: retry with backoff
                failures += 1
                self._pause(failures, error)

    def _pause(self, failures: int, error: BaseException) -> None:
        delay = min(30.0, 0.5 * 2 ** min(failures, 6)) * (0.5 + random.random() / 2)
        extra = {"kind": self.resource.kind, "error": describe_error(error), "retry_seconds": round(delay, 2)}
        if isinstance(error, ApiException) and error.status == 403:
            # The usual cause: watching more than the RBAC grants (the
            # bootstrap grants only iflearner:jobNamespaces).
            extra["hint"] = forbidden_hint(self.resource, self.namespaces)
        log.warning("list/watch failed; retrying", extra=extra)
        self._stopped.wait(delay)


def forbidden_hint(resource: Resource, namespaces: Sequence[str | None]) -> str:
    """What to fix when the API server refuses a list/watch."""
    if None in namespaces:
        return (f"listing {resource.plural} in every namespace needs cluster-wide RBAC: pass the job namespaces "
                "with --namespace (those of iflearner:jobNamespaces), or bootstrap with jobNamespaces: [\"*\"]")
    listed = ", ".join(str(n) for n in namespaces)
    return (f"the operator's RBAC does not grant list/watch on {resource.plural} in {listed}: add the namespace "
            "to iflearner:jobNamespaces and run the bootstrap's pulumi up")


def describe_error(error: BaseException) -> str:
    """One line for a log: the API's status message rather than headers."""
    if isinstance(error, ApiException):
        message = ""
        try:
            message = json.loads(error.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            message = (error.body or "")[:200]
        return f"{error.status} {error.reason}: {message}"[:500]
    return f"{type(error).__name__}: {error}"[:500]


def deep_copy(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return copy.deepcopy(dict(obj)) if obj is not None else None
