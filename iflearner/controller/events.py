"""core/v1 Events for what a person must act on.

The reconciler decides *when* (transitions only: an invalid spec, the first
and every fifth failed update, a failed destroy, Ready flipping); this module
only writes them. Failures to write an Event are logged, never raised.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from iflearner.controller.kubeapi import KubeApi, collection_path

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
COMPONENT = "iflearner-operator"
MAX_MESSAGE = 1024
MAX_NAME = 253  # a DNS subdomain, like every object name


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_name(object_name: str, nanos: int) -> str:
    """'<object>.<time in hex>', as client-go names Events, cut so it stays a legal name (253).

    A job's name may itself be 253 characters long: without the cut the API
    server refuses the Event and the person who must act never sees it.
    """
    suffix = f".{nanos:x}"
    return object_name[: MAX_NAME - len(suffix)].rstrip(".-") + suffix


class EventRecorder:
    """Writes Events about IflearnerJobs."""

    def __init__(self, api: KubeApi, component: str = COMPONENT, instance: str | None = None) -> None:
        self.api = api
        self.component = component
        self.instance = instance or f"{socket.gethostname()}_{os.getpid()}"
        self.sent: list[tuple[str, str]] = []  # (reason, job key), for tests and debugging

    def event(self, job: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        metadata = job.get("metadata") or {}
        namespace = metadata.get("namespace") or "default"
        name = str(metadata.get("name"))
        now = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name(name, time.time_ns()), "namespace": namespace},
            "involvedObject": {
                "apiVersion": job.get("apiVersion", "git.iflytek.com/v1"),
                "kind": job.get("kind", "IflearnerJob"),
                "name": name,
                "namespace": namespace,
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "reason": reason,
            "message": message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "...",
            "type": event_type,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.sent.append((reason, f"{namespace}/{name}"))
        try:
            self.api.request("POST", collection_path("/api/v1", "events", namespace), body=body)
        except Exception as error:  # noqa: BLE001 - events are best effort
            log.warning("could not write event", extra={"namespace": namespace, "job_name": name,
                                                        "reason": reason, "error": str(error)[:300]})
