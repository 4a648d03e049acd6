"""What job stacks read from the operator's namespace, as digests for the gating fingerprint.

Every job stack reads the cluster CA Secret (to sign the job's certificate)
and client stacks read the trust ConfigMap (the bundle copied into the job's
trust ConfigMap). When either changes -- a CA rotation, a bootstrap ``pulumi
up`` with new peer CAs -- the stacks must run again although no job changed.
So the controller watches both objects (by name, in the operator namespace),
and the fingerprint each job's ``status.applied`` records covers a digest of
what that job's stack reads. A change re-queues every job; the jobs whose
digests moved run ``up``, the others stay gated.

Digests are of public content only: the CA *certificate* (the key changes
with it) and the trust bundle. The informer transform computes the digest and
drops the data, so the CA private key is never cached.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from iflearner.controller import carotation
from iflearner.controller.informers import CONFIGMAPS, SECRETS, EventHandler, Informer, strip_object
from iflearner.controller.kubeapi import KubeApi
from iflearner.controller.mountedtrust import CAS_KEY, cached_cas, trust_cas
from iflearner.desired import ClusterSettings, DesiredResources

DIGEST_KEY = "iflearnerDigest"
CA_FACTS_KEY = "iflearnerCAs"  # carotation.secret_ca_facts of the CA Secret
TRUST_KEYS = ("server.crt", "party.crt")


def _digest(parts: Mapping[str, str | None]) -> str:
    text = "\n".join(f"{key}={value if value is not None else '-'}" for key, value in sorted(parts.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def ca_digest(data: Mapping[str, Any] | None) -> str:
    """Digest of the CA certificates (issuing and retiring) in a Secret's (base64) data."""
    pems: dict[str, str | None] = {}
    for key in (carotation.ISSUING_KEYS[0], carotation.RETIRING_KEYS[0]):
        encoded = (data or {}).get(key)
        try:
            pems[key] = base64.b64decode(encoded, validate=True).decode() if isinstance(encoded, str) else None
        except (binascii.Error, ValueError):
            pems[key] = None
    return _digest(pems)


def trust_digest(data: Mapping[str, Any] | None) -> str:
    """Digest of the two trust bundles in a ConfigMap's data."""
    data = data or {}
    return _digest({key: data.get(key) if isinstance(data.get(key), str) else None for key in TRUST_KEYS})


def ca_transform(obj: dict[str, Any]) -> dict[str, Any]:
    """Informer transform for the CA Secret: its certificates' digest and public facts, never its data."""
    obj[DIGEST_KEY] = ca_digest(obj.get("data"))
    obj[CA_FACTS_KEY] = carotation.secret_ca_facts(obj.get("data"))
    return strip_object(obj)


def trust_transform(obj: dict[str, Any]) -> dict[str, Any]:
    """Informer transform for the trust ConfigMap: the bundle's digest."""
    obj[DIGEST_KEY] = trust_digest(obj.get("data"))
    obj[CAS_KEY] = trust_cas(obj.get("data"))  # which CAs client Pods will trust (status.trust)
    return strip_object(obj)


def digest_of(obj: Mapping[str, Any] | None) -> str | None:
    """The digest a transform left in a cached object (None: the object does not exist)."""
    value = (obj or {}).get(DIGEST_KEY)
    return str(value) if value else None


def stack_inputs(
    issuer: carotation.IssuerChoice, trust: Mapping[str, Any] | None, reads_trust: bool
) -> dict[str, str | None]:
    """What a job's stack is given besides its job and the settings: part of its fingerprint.

    The CA that issues its certificate (it changes when a CA is replaced or a
    rotation switches issuing); only client jobs read the trust bundle, so a
    bundle change re-applies only them.
    """
    inputs: dict[str, str | None] = {"caCertificate": issuer.ca.digest if issuer.ca is not None else None}
    if reads_trust:
        inputs["trustBundle"] = digest_of(trust)
    return inputs


def changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Whether an event on the CA Secret or trust ConfigMap changed what stacks read."""
    return digest_of(old) != digest_of(new)


class ClusterInputs:
    """Caches of the CA Secret and the trust ConfigMap, by name in the operator namespace.

    ``on_change(reason)`` is called (on an informer thread: it must be quick)
    whenever what stacks read changes; the controller re-queues every job.
    """

    def __init__(self, api: KubeApi, settings: ClusterSettings, on_change: Callable[[str], None],
                 clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)) -> None:
        self.settings = settings
        self._on_change = on_change
        self._clock = clock
        self._jobs: Informer | None = None
        self._issuing: tuple[str, str] | None = None
        self._issuing_lock = threading.Lock()
        namespaces = [settings.operator_namespace]
        self.ca = Informer(api, SECRETS, namespaces=namespaces, transform=ca_transform,
                           field_selector=f"metadata.name={settings.ca_secret_name}",
                           handler=self._handler(f"the CA Secret {settings.ca_secret_name} changed"))
        self.trust = Informer(api, CONFIGMAPS, namespaces=namespaces, transform=trust_transform,
                              field_selector=f"metadata.name={settings.trust_configmap_name}",
                              handler=self._handler(f"the trust ConfigMap {settings.trust_configmap_name} changed"))

    @property
    def informers(self) -> list[Informer]:
        return [self.ca, self.trust]

    def _handler(self, reason: str) -> EventHandler:
        def handle(_event: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
            if changed(old, new):
                self._on_change(reason)

        return handle

    def watch_jobs(self, jobs: Informer) -> None:
        """The jobs cache, whose ``status.trust.mounted`` decides when a rotation switches issuing."""
        self._jobs = jobs

    def issuer(self) -> carotation.IssuerChoice:
        """Which key pair of the CA Secret signs job certificates now."""
        ca = self.ca.get(self.settings.operator_namespace, self.settings.ca_secret_name) or {}
        cas = ca.get(CA_FACTS_KEY) if isinstance(ca.get(CA_FACTS_KEY), Mapping) else {}
        mounts = carotation.running_mounts(self._jobs.list()) if self._jobs is not None and "retiring" in cas else []
        window = datetime.timedelta(seconds=self.settings.ca_rotation_window_seconds)
        return carotation.choose_issuer(cas, mounts, window, self._clock())

    def recheck_issuer(self) -> None:
        """After a job changed: when issuing switched CA, every job's fingerprint moved (re-queue all)."""
        choice = self.issuer()
        with self._issuing_lock:
            switched = self._issuing is not None and self._issuing != choice.keys
            self._issuing = choice.keys
        if switched:
            self._on_change(f"issuing switched to {choice.keys[0]}: {choice.reason}")

    def trust_cas(self) -> dict[str, list[dict[str, str]]] | None:
        """The CAs of the cluster trust bundle, from the cache."""
        return cached_cas(self.trust.get(self.settings.operator_namespace, self.settings.trust_configmap_name))

    def for_stack(self, desired: DesiredResources) -> dict[str, str | None]:
        """The inputs of one job's fingerprint, from the caches."""
        return stack_inputs(self.issuer(),
                            self.trust.get(self.settings.operator_namespace, self.settings.trust_configmap_name),
                            desired.trust_configmap is not None)
