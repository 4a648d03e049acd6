"""Informers against a scripted API: list, watch from the list's version, bookmarks, 410 -> relist."""

from __future__ import annotations

import threading
import time

from kubernetes.client.exceptions import ApiException

from iflearner.controller.informers import PODS, SECRETS, Informer, strip_object


def pod(name, rv, phase="Pending"):
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "uid": f"uid-{name}",
                         "managedFields": [{"manager": "x"}]}, "status": {"phase": phase}}


class ScriptedApi:
    """Each list returns the next snapshot; each watch yields the next scripted batch of events."""

    def __init__(self, lists, watches):
        self.lists, self.watches = list(lists), list(watches)
        self.list_calls, self.watch_calls = [], []
        self.done = threading.Event()

    def get(self, path, **query):
        self.list_calls.append((path, query))
        items, rv = self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]
        return {"items": [dict(i, metadata=dict(i["metadata"])) for i in items], "metadata": {"resourceVersion": rv}}

    def watch(self, path, query, timeout):
        self.watch_calls.append((path, dict(query)))
        if not self.watches:
            self.done.set()
            time.sleep(0.05)
            return
        batch = self.watches.pop(0)
        if isinstance(batch, Exception):
            raise batch
        yield from batch


def wait_until(predicate, timeout=3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_list_then_watch_from_its_version_with_events_and_bookmarks():
    api = ScriptedApi(
        lists=[([pod("a", "10")], "10")],
        watches=[[
            {"type": "MODIFIED", "object": pod("a", "11", "Running")},
            {"type": "ADDED", "object": pod("b", "12")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            {"type": "DELETED", "object": pod("a", "16", "Running")},
        ]],
    )
    events = []
    informer = Informer(api, PODS, label_selector="x=y", handler=lambda e, old, new: events.append(
        (e, (old or {}).get("metadata", {}).get("resourceVersion"), (new or {}).get("metadata", {}).get(
            "resourceVersion"))))
    informer.start()
    assert wait_until(api.done.is_set)
    informer.stop()
    assert informer.has_synced()
    assert api.list_calls[0][0] == "/api/v1/pods" and api.list_calls[0][1]["labelSelector"] == "x=y"
    assert api.watch_calls[0][1]["resourceVersion"] == "10"
    assert api.watch_calls[0][1]["allowWatchBookmarks"] is True
    assert api.watch_calls[1][1]["resourceVersion"] == "16", "the next watch resumes from the last event"
    assert events == [("ADDED", None, "10"), ("MODIFIED", "10", "11"), ("ADDED", None, "12"),
                      ("DELETED", "11", None)]
    assert informer.get("ns", "a") is None and informer.get("ns", "b")["status"]["phase"] == "Pending"
    assert "managedFields" not in informer.get("ns", "b")["metadata"]


def test_gone_relists_and_emits_the_differences():
    api = ScriptedApi(
        lists=[([pod("a", "10"), pod("b", "10")], "10"), ([pod("a", "20", "Running"), pod("c", "20")], "20")],
        watches=[[{"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}],
                 ApiException(status=410), []],
    )
    events = []
    informer = Informer(api, PODS, handler=lambda e, old, new: events.append((e, (new or old)["metadata"]["name"])))
    informer.start()
    assert wait_until(api.done.is_set)
    informer.stop()
    assert len(api.list_calls) >= 2, "410 Gone makes the informer list again"
    assert ("DELETED", "b") in events and ("ADDED", "c") in events and ("MODIFIED", "a") in events
    assert sorted(informer.keys()) == ["ns/a", "ns/c"]


def test_per_namespace_watches_sync_separately():
    api = ScriptedApi(lists=[([], "5")], watches=[])
    informer = Informer(api, PODS, namespaces=["one", "two"])
    informer.start()
    assert wait_until(informer.has_synced)
    informer.stop()
    paths = {call[0] for call in api.list_calls}
    assert paths == {"/api/v1/namespaces/one/pods", "/api/v1/namespaces/two/pods"}


def test_secret_data_never_reaches_the_cache():
    secret = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"tls.key": "c2VjcmV0"}, "type": "kubernetes.io/tls"}
    assert "data" not in strip_object(secret)
    api = ScriptedApi(lists=[([{"metadata": {"name": "s", "namespace": "ns", "resourceVersion": "1"},
                                "data": {"tls.key": "c2VjcmV0"}}], "1")], watches=[])
    informer = Informer(api, SECRETS)
    informer.start()
    assert wait_until(informer.has_synced)
    informer.stop()
    assert "data" not in informer.get("ns", "s")
