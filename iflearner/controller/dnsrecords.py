"""The DNS records ConfigMaps, watched: a job's record removed or changed behind its back comes back.

Job stacks patch their zone files into the shared records ConfigMaps (``iflearner.program``: one
server-side-apply patch per shard the job's keys hash to). Nothing else tells the operator when a
key is deleted by hand or a shard is recreated empty: the job would stay Ready while its host
stops resolving. So the controller watches every shard by name (its RBAC allows get, list and
watch of these names and nothing else in that namespace) and keeps a digest per zone-file key,
never the files:

- an event that removes or changes keys re-queues the jobs whose ``status.applied.records``
  publish them (:func:`jobs_holding`);
- a pass over a job compares its desired zone files with the cache (:func:`record_problem`);
  a key missing or different makes gating run ``up`` with a refresh, which re-applies it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from iflearner.controller.informers import CONFIGMAPS, EventHandler, Informer, strip_object
from iflearner.controller.kubeapi import KubeApi
from iflearner.desired import ClusterSettings, DesiredResources, DnsShard, dns_configmap_names, zone_file_key

RECORDS_KEY = "iflearnerRecords"  # zone-file key -> digest, left in cached objects by the transform


def record_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def records_transform(obj: dict[str, Any]) -> dict[str, Any]:
    """Informer transform for a records ConfigMap: a digest per key instead of the zone files."""
    data = obj.get("data") or {}
    obj[RECORDS_KEY] = {key: record_digest(text) for key, text in data.items() if isinstance(text, str)}
    return strip_object(obj)


def _digests(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    value = (obj or {}).get(RECORDS_KEY)
    return value if isinstance(value, Mapping) else {}


def changed_keys(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> set[str]:
    """Keys that an event removed or changed (keys it only added need no repair)."""
    before, after = _digests(old), _digests(new)
    return {key for key, digest in before.items() if after.get(key) != digest}


def record_problem(shards: Sequence[DnsShard], namespace: str,
                   lookup: Callable[[str], Mapping[str, Any] | None]) -> str | None:
    """Why the cluster does not serve the job's records as its stack declares them, or None.

    ``lookup(configmap)``: the cached records ConfigMap of that name (None: it does not exist).
    """
    for shard in shards:
        cached = lookup(shard.configmap)
        where = f"{namespace}/{shard.configmap}"
        if cached is None:
            return f"the DNS records ConfigMap {where} is missing"
        held = _digests(cached)
        for key, text in sorted(shard.files.items()):
            if key not in held:
                return f"its DNS record {key} is missing from {where}"
            if held[key] != record_digest(text):
                return f"its DNS record {key} in {where} was changed outside the operator"
    return None


def jobs_holding(keys: set[str], jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The jobs (``namespace/name``) whose last applied records include one of ``keys``."""
    found = []
    for job in jobs:
        applied = ((job.get("status") or {}).get("applied") or {})
        records = applied.get("records") if isinstance(applied, Mapping) else None
        if isinstance(records, Mapping) and any(zone_file_key(str(fqdn)) in keys for fqdn in records):
            metadata = job.get("metadata") or {}
            found.append(f"{metadata.get('namespace')}/{metadata.get('name')}")
    return found


class DnsRecords:
    """Caches of the records ConfigMaps, one informer per shard name.

    ``on_keys_changed(keys)`` is called on an informer thread (it must be quick) with the keys an
    event removed or changed.
    """

    def __init__(self, api: KubeApi, settings: ClusterSettings,
                 on_keys_changed: Callable[[set[str]], None]) -> None:
        self.namespace = settings.dns_namespace
        self._on_keys_changed = on_keys_changed
        self._by_name = {
            name: Informer(api, CONFIGMAPS, namespaces=[self.namespace], transform=records_transform,
                           field_selector=f"metadata.name={name}", handler=self._handler())
            for name in dns_configmap_names(settings)
        }

    @property
    def informers(self) -> list[Informer]:
        return list(self._by_name.values())

    def _handler(self) -> EventHandler:
        def handle(_event: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
            keys = changed_keys(old, new)
            if keys:
                self._on_keys_changed(keys)

        return handle

    def _lookup(self, name: str) -> Mapping[str, Any] | None:
        informer = self._by_name.get(name)
        return informer.get(self.namespace, name) if informer is not None else None

    def problem(self, desired: DesiredResources) -> str | None:
        """Why the job's records are not served as declared (from the caches), or None."""
        return record_problem(desired.dns_shards, self.namespace, self._lookup)
