"""status.trust: what a client Pod trusts is what it mounted, not what its ConfigMap holds now."""

from __future__ import annotations

from iflearner.controller.clusterinputs import trust_transform
from iflearner.controller.mountedtrust import CAS_KEY, bundle_cas, next_trust_status
from iflearner.tlsresources import issue_ca

OLD = {"server": [{"subject": "old", "sha256": "aa"}], "party": [{"subject": "old", "sha256": "aa"}]}
NEW = {"server": [{"subject": "old", "sha256": "aa"}],
       "party": [{"subject": "old", "sha256": "aa"}, {"subject": "peer", "sha256": "bb"}]}


def test_bundle_lists_every_ca_by_subject_and_fingerprint():
    one, two = issue_ca("cluster CA", 1)["cert_pem"], issue_ca("peer CA", 1)["cert_pem"]
    cas = bundle_cas(one + "\n" + two + "\n-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    assert [c["subject"] for c in cas] == ["cluster CA", "peer CA"]
    assert len({c["sha256"] for c in cas}) == 2 and all(len(c["sha256"]) == 16 for c in cas)
    cached = trust_transform({"kind": "ConfigMap", "metadata": {"name": "t"},
                              "data": {"server.crt": one, "party.crt": one + two}})
    assert [c["subject"] for c in cached[CAS_KEY]["party"]] == ["cluster CA", "peer CA"]
    assert "data" not in cached
    assert bundle_cas(None) == []


def test_a_pod_keeps_the_bundle_it_mounted_until_it_is_replaced():
    first = next_trust_status(None, OLD, None, "pod-1")  # the up that created the Pod
    assert first == {"applied": OLD, "mounted": {"podUid": "pod-1", **OLD}}
    # The bundle changes: an up rewrites the ConfigMap, the running Pod keeps its files.
    second = next_trust_status(first, NEW, "pod-1", "pod-1")
    assert second["applied"] == NEW and second["mounted"] == {"podUid": "pod-1", **OLD}
    assert next_trust_status(second, None, "pod-1", "pod-1") == second
    # The Pod is replaced (by an up, or seen only in a later pass): the new one mounted NEW.
    assert next_trust_status(second, NEW, "pod-1", "pod-2")["mounted"] == {"podUid": "pod-2", **NEW}
    assert next_trust_status(second, None, "pod-1", "pod-2")["mounted"] == {"podUid": "pod-2", **NEW}
    # No Pod: nothing mounted.
    assert "mounted" not in next_trust_status(second, None, None, None)


def test_a_pod_older_than_the_record_is_unknown():
    # The first up after an upgrade: the Pod was already running, with some earlier bundle.
    status = next_trust_status(None, NEW, "pod-1", "pod-1")
    assert status["applied"] == NEW and "unknown" in status["mounted"] and "party" not in status["mounted"]
    assert next_trust_status(None, None, "pod-1", "pod-1") is None
