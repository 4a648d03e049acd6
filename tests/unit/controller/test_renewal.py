"""The controller's renewal decisions: gate, requeue, status, and the informer's summary."""

from __future__ import annotations

import base64
import datetime

from iflearner.certrenewal import CertificateTimes
from iflearner.controller.gating import Decision
from iflearner.controller.informers import strip_object
from iflearner.controller.renewal import (
    certificate_status,
    gate,
    requeue_after,
    served_certificate,
    summarize_tls_secret,
)
from iflearner.tlsresources import issue_ca, issue_leaf

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
SERVED = CertificateTimes("1f", T0, T0 + datetime.timedelta(seconds=90))  # renewal at T0+60s
F = 2 / 3
UP_TO_DATE = Decision(False, "up to date")


def test_gate_runs_up_only_when_due():
    assert gate(UP_TO_DATE, SERVED, T0 + datetime.timedelta(seconds=59), F) == UP_TO_DATE
    due = gate(UP_TO_DATE, SERVED, T0 + datetime.timedelta(seconds=60), F)
    assert due.should_run and not due.refresh and "renewal" in due.reason and "1f" in due.reason
    assert gate(UP_TO_DATE, None, T0 + datetime.timedelta(days=9), F) == UP_TO_DATE
    spec = Decision(True, "the spec changed")
    assert gate(spec, SERVED, T0 + datetime.timedelta(seconds=80), F) is spec


def test_requeue_at_the_renewal_time_unless_sooner_or_already_due():
    assert requeue_after(None, SERVED, T0 + datetime.timedelta(seconds=20), F) == 40.2
    assert requeue_after(5.0, SERVED, T0 + datetime.timedelta(seconds=20), F) == 5.0
    # Due (a failed renewal backing off): no "requeue now" that would spin.
    assert requeue_after(None, SERVED, T0 + datetime.timedelta(seconds=61), F) is None
    assert requeue_after(30.0, SERVED, T0 + datetime.timedelta(seconds=61), F) == 30.0
    assert requeue_after(None, None, T0, F) is None


def test_status_names_expiry_and_renewal_time():
    assert certificate_status(SERVED, F) == {"serial": "1f", "notBefore": "2026-01-01T00:00:00Z",
                                             "notAfter": "2026-01-01T00:01:30Z",
                                             "renewalTime": "2026-01-01T00:01:00Z"}
    assert certificate_status(None, F) is None


def test_informer_keeps_the_dates_never_the_key():
    ca = issue_ca("cache CA", 24)
    leaf = issue_leaf(ca["cert_pem"], ca["private_key_pem"], "h.example.com", ["h.example.com"], 1)
    data = {k: base64.b64encode(v.encode()).decode()
            for k, v in (("tls.crt", leaf["cert_pem"]), ("tls.key", leaf["private_key_pem"]))}
    cached = strip_object({"kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": "x"}, "data": data})
    assert "data" not in cached
    assert "PRIVATE" not in repr(cached) and leaf["private_key_pem"] not in repr(cached)
    served = served_certificate(cached)
    assert served is not None and served.lifetime == datetime.timedelta(hours=1, minutes=5)
    assert summarize_tls_secret({"tls.crt": "!!"}) is None
    assert served_certificate({"kind": "Secret"}) is None
