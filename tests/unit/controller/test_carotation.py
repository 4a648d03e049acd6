"""The overlap window of a CA rotation: the retiring CA issues until no running client Pod would break."""

from __future__ import annotations

import base64
import datetime

import pytest

from iflearner.controller.carotation import (
    ISSUING_KEYS,
    RETIRING_KEYS,
    choose_issuer,
    running_mounts,
    secret_ca_facts,
)
from iflearner.controller.mountedtrust import bundle_cas
from iflearner.tlsresources import issue_ca

WINDOW = datetime.timedelta(hours=1)


@pytest.fixture(scope="module")
def cas():
    old, new = issue_ca("iflearner all cluster CA", 48), issue_ca("iflearner all cluster CA g1", 48)
    data = {"tls.crt": new["cert_pem"], "tls.key": new["private_key_pem"],
            "retiring.crt": old["cert_pem"], "retiring.key": old["private_key_pem"]}
    facts = secret_ca_facts({k: base64.b64encode(v.encode()).decode() for k, v in data.items()})
    return old["cert_pem"], new["cert_pem"], facts


def mounted(*pems: str, side: str = "server") -> dict:
    listed = [ca for pem in pems for ca in bundle_cas(pem)]
    return {"podUid": "u", side: listed, "party" if side == "server" else "server": []}


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_without_a_retiring_ca_the_issuing_ca_signs(cas):
    old, _new, facts = cas
    choice = choose_issuer({"issuing": facts["issuing"]}, [mounted(old)], WINDOW, now())
    assert choice.keys == ISSUING_KEYS and choice.switch_at is None and choice.reason == "no rotation in progress"
    assert "tls.key" not in repr(facts) and all("PRIVATE" not in str(v) for v in facts.values())


def test_the_retiring_ca_signs_while_a_running_pod_lacks_the_new_one(cas):
    old, new, facts = cas
    choice = choose_issuer(facts, [mounted(old, new), mounted(old)], WINDOW, now())
    assert choice.keys == RETIRING_KEYS and choice.ca.subject == "iflearner all cluster CA"
    assert choice.reason == "1 running client Pod(s) mounted a bundle without the new CA iflearner all cluster CA g1"
    assert choice.switch_at is not None and choice.switch_at - now() < WINDOW


@pytest.mark.parametrize("mounts", [
    [],  # no client Pod runs
    "both",  # every Pod mounted old + new
    "new-only",
    "other-side",  # a party cluster: its own CA only in party.crt, and the Pod has it there
])
def test_issuing_switches_once_no_running_pod_would_break(cas, mounts):
    old, new, facts = cas
    found = {"both": [mounted(old, new), mounted(new, old)], "new-only": [mounted(new)],
             "other-side": [mounted(old, new, side="party")]}.get(mounts, []) if isinstance(mounts, str) else mounts
    choice = choose_issuer(facts, found, WINDOW, now())
    assert choice.keys == ISSUING_KEYS and choice.reason.startswith("every running client Pod trusts the new CA")


def test_an_unknown_mount_holds_out_until_the_window_ends(cas):
    _old, _new, facts = cas
    unknown = {"podUid": "u", "unknown": "the Pod started before the operator recorded its bundle"}
    assert choose_issuer(facts, [unknown], WINDOW, now()).keys == RETIRING_KEYS
    later = choose_issuer(facts, [unknown], WINDOW, now() + WINDOW + datetime.timedelta(minutes=10))
    assert later.keys == ISSUING_KEYS and "the rotation window ended at" in later.reason
    assert "1 running client Pod(s) still lack the new CA" in later.reason


def test_only_pods_that_still_run_count():
    def job(phase, mounted_value):
        return {"status": {"phase": phase, "trust": {"mounted": mounted_value}}}

    jobs = [job("Running", "a"), job("Succeeded", "b"), job("Failed", "c"), job("Pending", "d"),
            {"status": {"phase": "Running"}}, {"status": {"trust": {"applied": {}}}}]
    assert running_mounts(jobs) == ["a", "d"]
