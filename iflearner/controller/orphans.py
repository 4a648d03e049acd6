"""Deleting a job whose stack state is gone (a changed backend URL, a lost volume).

``pulumi destroy`` of a stack the backend does not have deletes nothing: the
job's Pod, TLS Secret, route and DNS records would stay behind with no owner.
The cluster itself still says what was the job's: every object the stack
made carries the job's ``job-uid`` label, and its DNS records are the keys
``db.<host>`` of its host and peers in the records ConfigMaps. Those are
deleted here, before the finalizer goes; a record another live job still
publishes (a job of the same namespace sharing the host) stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException

from iflearner.controller.informers import Resource
from iflearner.controller.kubeapi import JSON_PATCH, KubeApi, collection_path, object_path
from iflearner.desired import LABEL_JOB_UID, ZONE_KEY_PREFIX, ClusterSettings, dns_configmap_names


def record_keys(hosts: Iterable[str], still_published: Iterable[str]) -> list[str]:
    """The DNS record keys to delete: the job's hosts that no other live job publishes."""
    keep = set(still_published)
    return sorted(f"{ZONE_KEY_PREFIX}{h}" for h in set(hosts) - keep)


def _json_pointer(key: str) -> str:
    return "/data/" + key.replace("~", "~0").replace("/", "~1")


def delete_job_objects(api: KubeApi, kinds: Sequence[Resource], settings: ClusterSettings, namespace: str,
                       uid_label: str, keys: Sequence[str]) -> list[str]:
    """Delete the job's objects (by its ``job-uid`` label) and its record keys; what was deleted."""
    deleted: list[str] = []
    selector = f"{LABEL_JOB_UID}={uid_label}"
    for kind in kinds:
        found = api.get(collection_path(kind.api_path, kind.plural, namespace), labelSelector=selector)
        for item in (found or {}).get("items") or []:
            name = item["metadata"]["name"]
            try:
                api.request("DELETE", object_path(kind.api_path, kind.plural, namespace, name))
            except ApiException as error:
                if error.status != 404:
                    raise
            deleted.append(f"{kind.kind}/{name}")
    for configmap in dns_configmap_names(settings):
        path = object_path("/api/v1", "configmaps", settings.dns_namespace, configmap)
        current: Mapping[str, Any] = api.get_or_none(path) or {}
        present = [k for k in keys if k in (current.get("data") or {})]
        if not present:
            continue
        version = current["metadata"]["resourceVersion"]
        # One patch, guarded by the version read: a concurrent write makes it fail and retry.
        ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}] + \
            [{"op": "remove", "path": _json_pointer(k)} for k in present]
        api.request("PATCH", path, body=ops, content_type=JSON_PATCH)
        deleted.extend(f"DNS record {configmap}/{k}" for k in present)
    return deleted
