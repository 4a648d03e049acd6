"""Property (no cluster): any manifest, however malformed or oversized, is either refused with every problem
naming a field, or becomes a job whose every derived name, label and key fits where it goes.

The same property against the real API server and controller:
tests/integration/controller/test_controller_properties.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from iflearner.desired import ClusterSettings, Transport, desired_resources
from iflearner.job import InvalidJobError, parse_job

EXAMPLE = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "party-a.yaml").read_text())
FIELD = re.compile(r"(apiVersion|kind|manifest|metadata|spec)(\.|\[|$)")
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")
SETTINGS = (ClusterSettings(ingress_address="10.0.0.1"),
            ClusterSettings(ingress_address="10.0.0.1", transport=Transport.GATEWAY.value))

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=300)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=8)
dns_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
long_dns = st.lists(dns_label, min_size=1, max_size=6).map(".".join)  # valid labels, up to ~380 long
PATHS = (
    ("metadata", "name"), ("metadata", "namespace"), ("metadata", "uid"), ("metadata", "generation"),
    ("spec", "role"), ("spec", "host"), ("spec", "peers"), ("spec", "ingressClassName"), ("spec", "transport"),
    ("spec", "schedulername"), ("spec", "template"), ("spec", "template", "metadata"),
    ("spec", "template", "metadata", "labels"), ("spec", "template", "spec"),
    ("spec", "template", "spec", "containers"), ("spec", "template", "spec", "volumes"),
    ("spec", "template", "spec", "restartPolicy"),
)
edits = st.one_of(
    st.tuples(st.sampled_from(PATHS), values),
    st.tuples(st.sampled_from([("metadata", "name"), ("spec", "host"), ("metadata", "namespace")]), long_dns),
    st.tuples(st.just(("spec", "peers")), st.lists(st.fixed_dictionaries(
        {"host": long_dns, "address": st.sampled_from(["10.1.1.1", "1.2.3", ""])}), max_size=3)),
    st.tuples(st.just(("spec", "template", "spec", "containers", 0, "volumeMounts")), values),
)


def apply_edit(manifest: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = manifest
    for key in path[:-1]:
        try:
            target = target[key]
        except (KeyError, IndexError, TypeError):
            return  # an earlier edit replaced the parent: nothing to edit
    if isinstance(target, dict) or (isinstance(target, list) and isinstance(path[-1], int) and target):
        target[path[-1]] = value


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(edits, max_size=4), st.sampled_from(["client", "server"]), st.text(max_size=36))
def test_every_manifest_is_refused_with_fields_or_gives_bounded_names(edit_list, role, uid) -> None:
    manifest = copy.deepcopy(EXAMPLE)
    manifest["spec"]["role"] = role
    manifest["metadata"]["uid"] = uid
    for path, value in edit_list:
        apply_edit(manifest, path, value)
    try:
        job = parse_job(manifest)
    except InvalidJobError as error:
        assert error.problems
        for problem in error.problems:
            assert FIELD.match(problem.field), problem
            assert problem.message.strip(), problem
        return
    for cluster in SETTINGS:
        desired = desired_resources(job, cluster)
        names = desired.names
        for name in (names.pod, names.service, names.ingress, names.gateway, names.route):
            assert len(name) <= 63 and DNS_1035.fullmatch(name), name
        for name in (names.tls_secret, names.trust_configmap):
            assert len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name), name
        for key, value in desired.labels.items():
            assert len(value) <= 63 and LABEL_VALUE.fullmatch(value), (key, value)
        for key in desired.dns_zone_files:
            assert len(key) <= 253 and CONFIGMAP_KEY.fullmatch(key), key
        assert 1 <= len(desired.certificate.common_name) <= 64
        assert desired.certificate.dns_names == (job.host,)
        assert desired.pod["metadata"]["name"] == names.pod
