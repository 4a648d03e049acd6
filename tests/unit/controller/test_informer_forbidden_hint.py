"""A list/watch the RBAC refuses says what to fix: the controller watching more
namespaces than the bootstrap granted (iflearner:jobNamespaces) otherwise only
shows an endless 403 retry and a /readyz that never turns ready."""

from __future__ import annotations

import logging

from kubernetes.client.exceptions import ApiException

from iflearner.controller.informers import SECRETS, Informer


def _warning(caplog, namespaces):
    informer = Informer(api=None, resource=SECRETS, namespaces=namespaces)  # type: ignore[arg-type]
    informer.stop()  # the retry pause returns at once
    with caplog.at_level(logging.WARNING, logger="iflearner.controller.informers"):
        informer._pause(1, ApiException(status=403, reason="Forbidden"))
    return caplog.records[-1]


def test_a_cluster_wide_watch_refused_names_the_namespace_flag(caplog):
    record = _warning(caplog, None)
    assert "pass the job namespaces with --namespace" in record.hint
    assert 'jobNamespaces: ["*"]' in record.hint


def test_a_namespace_refused_names_the_bootstrap_setting(caplog):
    record = _warning(caplog, ["team-b"])
    assert "in team-b: add the namespace to iflearner:jobNamespaces" in record.hint


def test_other_failures_carry_no_hint(caplog):
    informer = Informer(api=None, resource=SECRETS)  # type: ignore[arg-type]
    informer.stop()
    with caplog.at_level(logging.WARNING, logger="iflearner.controller.informers"):
        informer._pause(1, ApiException(status=500, reason="boom"))
    assert not hasattr(caplog.records[-1], "hint")
