"""A CA rotation never breaks a running federation: with the overlap window, the retiring CA keeps
issuing while any running client Pod mounted a bundle without the new CA, and issuing switches once
every such Pod has been replaced (or the configured window has passed). The rotation is started as
the bootstrap does it (``caGeneration``/``caRetiringGeneration``): the CA Secret holds the new CA and
the retiring one, and the trust bundle both."""

from __future__ import annotations

import base64
import datetime
import time

import pytest
from controller_harness import create_job, get_job, is_ready_running, job_manifest, wait_for, wait_ready_running
from cryptography import x509

from iflearner.desired import SERVER_TRUST_KEY, ClusterSettings
from iflearner.tlsresources import issue_ca

SETTINGS = ClusterSettings()
JOBS = 20
NEW_SUBJECT = "iflearner all cluster CA g1"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def served_issuer(core, namespace: str, name: str) -> str:
    data = core.read_namespaced_secret(f"{name}-tls", namespace).data
    cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
    return cert.issuer.rfc4514_string()


@pytest.fixture
def rotation(core):
    """Start a rotation the way the bootstrap does; put the cluster's CA objects back afterwards."""
    secret = core.read_namespaced_secret(SETTINGS.ca_secret_name, SETTINGS.operator_namespace)
    trust = core.read_namespaced_config_map(SETTINGS.trust_configmap_name, SETTINGS.operator_namespace)
    old_cert = base64.b64decode(secret.data["tls.crt"]).decode()
    new = issue_ca(NEW_SUBJECT, 24)

    def begin() -> float:
        core.patch_namespaced_secret(SETTINGS.ca_secret_name, SETTINGS.operator_namespace, {"data": {
            "tls.crt": _b64(new["cert_pem"]), "tls.key": _b64(new["private_key_pem"]),
            "retiring.crt": secret.data["tls.crt"], "retiring.key": secret.data["tls.key"]}})
        core.patch_namespaced_config_map(SETTINGS.trust_configmap_name, SETTINGS.operator_namespace, {"data": {
            key: new["cert_pem"] + value for key, value in trust.data.items()}})
        return time.monotonic()

    yield {"begin": begin, "old": x509.load_pem_x509_certificate(old_cert.encode()).subject.rfc4514_string(),
           "new": f"CN={NEW_SUBJECT}",
           "new_not_before": x509.load_pem_x509_certificate(new["cert_pem"].encode()).not_valid_before_utc}
    restored = core.read_namespaced_secret(SETTINGS.ca_secret_name, SETTINGS.operator_namespace)
    restored.data = dict(secret.data)
    core.replace_namespaced_secret(SETTINGS.ca_secret_name, SETTINGS.operator_namespace, restored)
    core.patch_namespaced_config_map(SETTINGS.trust_configmap_name, SETTINGS.operator_namespace,
                                     {"data": dict(trust.data)})


def settled(job: dict) -> dict | None:
    """The job, once no up of it is in progress."""
    return job if job["status"]["lastOperation"]["result"] != "InProgress" else None


def test_issuing_switches_only_after_every_running_client_pod_trusts_the_new_ca(
        start_controller, custom, core, jobs_ns, rotation):
    controller = start_controller("--workers", "4", "--ca-rotation-window-seconds", "86400")
    clients = [f"rot-{i:02d}" for i in range(JOBS)]
    create_job(custom, job_manifest("rot-server", jobs_ns, role="server"))
    for name in clients:
        create_job(custom, job_manifest(name, jobs_ns, role="client"))
    for name in ["rot-server", *clients]:
        wait_ready_running(custom, jobs_ns, name, controller, timeout=600)
    assert served_issuer(core, jobs_ns, "rot-server") == rotation["old"]

    begun = rotation["begin"]()

    def all_bundles_hold_both() -> bool:
        maps = {c.metadata.name: c.data or {} for c in core.list_namespaced_config_map(jobs_ns).items}
        return all(maps.get(f"{n}-trust", {}).get(SERVER_TRUST_KEY, "").count("BEGIN CERTIFICATE") == 2
                   for n in clients)

    wait_for(f"both CAs in all {JOBS} trust ConfigMaps", all_bundles_hold_both, 600, on_timeout=controller.log)
    overlap = time.monotonic() - begun
    print(f"rotation begun -> all {JOBS} client jobs' trust ConfigMaps hold both CAs: {overlap:.1f} s")
    time.sleep(3)  # the running Pods mounted the old bundle: the retiring CA keeps issuing
    assert served_issuer(core, jobs_ns, "rot-server") == rotation["old"]
    server = get_job(custom, jobs_ns, "rot-server")
    assert server["status"]["certificate"]["issuer"] == rotation["old"].removeprefix("CN=")

    # The users' Pods restart (here: deleted; the operator recreates them) and mount the new bundle.
    for name in clients:
        core.delete_namespaced_pod(name, jobs_ns, grace_period_seconds=0)
        if name != clients[-1]:
            wait_ready_running(custom, jobs_ns, name, controller, timeout=300)
            assert served_issuer(core, jobs_ns, "rot-server") == rotation["old"], \
                f"switched while {clients[-1]}'s Pod still mounted the old bundle"
    last_restart = time.monotonic()

    def all_switched() -> bool:
        return all(served_issuer(core, jobs_ns, n) == rotation["new"] for n in ["rot-server", *clients])

    wait_for("every job's certificate issued by the new CA", all_switched, 600, on_timeout=controller.log)
    switched = time.monotonic() - last_restart
    print(f"last client Pod replaced -> all {JOBS + 1} jobs serve certificates of the new CA: {switched:.1f} s")
    for name in ["rot-server", *clients]:
        wait_ready_running(custom, jobs_ns, name, controller, timeout=120)
        # The Secret (which all_switched reads) is replaced during the up; Ready stays True while an
        # up of a ready job runs: so wait for that up to end, and it must have succeeded.
        job = wait_for(f"{name}'s switch up to end", lambda n=name: settled(get_job(custom, jobs_ns, n)), 120,
                       on_timeout=controller.log)
        assert job["status"]["lastOperation"]["result"] == "Succeeded", job["status"]
        assert job["status"]["certificate"]["issuer"] == NEW_SUBJECT
    for name in clients:  # what each running Pod trusts includes the CA that now issues
        mounted = get_job(custom, jobs_ns, name)["status"]["trust"]["mounted"]
        assert NEW_SUBJECT in [ca["subject"] for ca in mounted["server"]], mounted
    events = core.list_namespaced_event(jobs_ns).items
    assert not [e.reason for e in events if e.reason in ("StackUpdateFailed", "CertificateNotIssued")]


def test_the_window_switches_issuing_although_a_pod_still_lacks_the_new_ca(
        start_controller, custom, core, jobs_ns, rotation):
    # The window counts from the new CA's notBefore (back-dated a few minutes when it was made).
    age = (datetime.datetime.now(datetime.UTC) - rotation["new_not_before"]).total_seconds()
    window = int(age) + 25
    controller = start_controller("--workers", "2", "--ca-rotation-window-seconds", str(window))
    for name, role in (("win-server", "server"), ("win-party", "client")):
        create_job(custom, job_manifest(name, jobs_ns, role=role))
    for name in ("win-server", "win-party"):
        wait_ready_running(custom, jobs_ns, name, controller)
    party_pod = core.read_namespaced_pod("win-party", jobs_ns).metadata.uid
    rotation["begin"]()
    window_end = rotation["new_not_before"] + datetime.timedelta(seconds=window)
    time.sleep(max(0.0, (window_end - datetime.datetime.now(datetime.UTC)).total_seconds() - 3))
    assert served_issuer(core, jobs_ns, "win-server") == rotation["old"], "switched before the window ended"
    wait_for("the server's certificate from the new CA", lambda: served_issuer(core, jobs_ns, "win-server")
             == rotation["new"], 120, interval=0.1, on_timeout=controller.log)
    late = (datetime.datetime.now(datetime.UTC) - window_end).total_seconds()
    print(f"rotation window end -> the server serves a certificate of the new CA: {late:.1f} s")
    assert is_ready_running(get_job(custom, jobs_ns, "win-server"))
    assert core.read_namespaced_pod("win-party", jobs_ns).metadata.uid == party_pod, \
        "the party's Pod was never replaced: issuing switched by the window alone"
