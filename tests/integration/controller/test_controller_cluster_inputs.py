"""What job stacks read from the operator namespace reaches the jobs with no spec change:
a new trust bundle (a peer CA added, as a bootstrap `pulumi up` with new peerCaCertificates does)
lands in every client job's trust ConfigMap, each job's status.trust says its running Pod still
mounts the old bundle until the Pod is replaced, and a new cluster CA re-issues every job's certificate.
The resync period is the default 600 s: only the watch on those objects brings the jobs back."""

from __future__ import annotations

import base64
import time

from controller_harness import create_job, get_job, is_ready_running, job_manifest, wait_for, wait_ready_running
from cryptography import x509

from iflearner.desired import PARTY_TRUST_KEY, SERVER_TRUST_KEY, ClusterSettings
from iflearner.tlsresources import issue_ca

SETTINGS = ClusterSettings()
JOBS = 20
PEER_SUBJECT = "a peer federation's CA"


def _subjects(cas: list[dict[str, str]]) -> list[str]:
    return [ca["subject"] for ca in cas]


def _trust_bundles(core, namespace: str, names: list[str]) -> dict[str, dict[str, str]]:
    maps = {c.metadata.name: c.data or {} for c in core.list_namespaced_config_map(namespace).items}
    return {name: maps.get(f"{name}-trust", {}) for name in names}


def test_a_new_trust_bundle_reaches_every_client_job(start_controller, custom, core, jobs_ns, controller_prereqs):
    controller = start_controller("--workers", "4")
    names = [f"party-{i:02d}" for i in range(JOBS)]
    started = time.monotonic()
    for name in names:
        create_job(custom, job_manifest(name, jobs_ns, role="client"))
    jobs = {name: wait_ready_running(custom, jobs_ns, name, controller, timeout=600) for name in names}
    print(f"{JOBS} client jobs Ready and Running in {time.monotonic() - started:.1f} s")
    generations = {name: job["metadata"]["generation"] for name, job in jobs.items()}

    trust = core.read_namespaced_config_map(SETTINGS.trust_configmap_name, SETTINGS.operator_namespace)
    original = dict(trust.data)
    assert all(b[PARTY_TRUST_KEY] == original["party.crt"] for b in _trust_bundles(core, jobs_ns, names).values())
    peer_ca = issue_ca(PEER_SUBJECT, 24)["cert_pem"]
    runs_before = controller.pulumi_runs()
    try:
        changed_at = time.monotonic()
        core.patch_namespaced_config_map(SETTINGS.trust_configmap_name, SETTINGS.operator_namespace,
                                         {"data": {"party.crt": original["party.crt"] + peer_ca}})

        def all_updated() -> bool:
            bundles = _trust_bundles(core, jobs_ns, names)
            return all(peer_ca in b.get(PARTY_TRUST_KEY, "") for b in bundles.values())

        wait_for(f"the new bundle in all {JOBS} jobs' trust ConfigMaps", all_updated, timeout=600,
                 interval=0.25, on_timeout=controller.log)
        elapsed = time.monotonic() - changed_at
        print(f"trust bundle change -> all {JOBS} jobs' trust ConfigMaps hold the new bundle: {elapsed:.1f} s")

        bundles = _trust_bundles(core, jobs_ns, names)
        assert all(b[SERVER_TRUST_KEY] == original["server.crt"] for b in bundles.values())
        assert all(b[PARTY_TRUST_KEY] == original["party.crt"] + peer_ca for b in bundles.values())
        wait_for("one Pulumi run per job", lambda: controller.pulumi_runs() >= runs_before + JOBS, 120)
        time.sleep(2)  # a further run, had one been started, would be counted by now
        assert controller.pulumi_runs() == runs_before + JOBS, controller.log()
        for name in names:
            job = get_job(custom, jobs_ns, name)
            assert job["metadata"]["generation"] == generations[name], "no spec change"
            assert is_ready_running(job), job["status"]
            # The ConfigMap holds the peer CA; the running Pod (subPath mounts) still has the old files.
            trust_status = job["status"]["trust"]
            assert PEER_SUBJECT in _subjects(trust_status["applied"]["party"]), trust_status
            assert PEER_SUBJECT not in _subjects(trust_status["mounted"]["party"]), trust_status
            assert trust_status["mounted"]["podUid"] == core.read_namespaced_pod(name, jobs_ns).metadata.uid

        # A replaced Pod mounts the new bundle, and its job's status says so.
        old_uid = core.read_namespaced_pod(names[0], jobs_ns).metadata.uid
        core.delete_namespaced_pod(names[0], jobs_ns, grace_period_seconds=0)

        def remounted() -> dict | None:
            mounted = (get_job(custom, jobs_ns, names[0])["status"].get("trust") or {}).get("mounted") or {}
            return mounted if mounted.get("podUid") not in (None, old_uid) else None

        mounted = wait_for("the recreated Pod's bundle in status.trust", remounted, 120, on_timeout=controller.log)
        assert PEER_SUBJECT in _subjects(mounted["party"]), mounted
        assert mounted["podUid"] == core.read_namespaced_pod(names[0], jobs_ns).metadata.uid
    finally:
        core.patch_namespaced_config_map(SETTINGS.trust_configmap_name, SETTINGS.operator_namespace,
                                         {"data": original})


def test_a_new_cluster_ca_reissues_every_job_certificate(start_controller, custom, core, jobs_ns, controller_prereqs):
    controller = start_controller("--workers", "2")
    names = ["ca-server", "ca-party"]
    create_job(custom, job_manifest(names[0], jobs_ns, role="server"))
    create_job(custom, job_manifest(names[1], jobs_ns, role="client"))
    for name in names:
        wait_ready_running(custom, jobs_ns, name, controller)
    secret = core.read_namespaced_secret(SETTINGS.ca_secret_name, SETTINGS.operator_namespace)
    original = dict(secret.data)
    new_ca = issue_ca("the rotated cluster CA", 24)
    new_cert = x509.load_pem_x509_certificate(new_ca["cert_pem"].encode())

    def issued_by_new_ca(name: str) -> bool:
        data = core.read_namespaced_secret(f"{name}-tls", jobs_ns).data
        cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
        return cert.issuer == new_cert.subject

    try:
        changed_at = time.monotonic()
        core.patch_namespaced_secret(SETTINGS.ca_secret_name, SETTINGS.operator_namespace, {"data": {
            "tls.crt": base64.b64encode(new_ca["cert_pem"].encode()).decode(),
            "tls.key": base64.b64encode(new_ca["private_key_pem"].encode()).decode()}})
        wait_for("every job's certificate signed by the new CA", lambda: all(issued_by_new_ca(n) for n in names),
                 timeout=180, interval=0.25, on_timeout=controller.log)
        print(f"CA change -> both jobs serve certificates of the new CA: {time.monotonic() - changed_at:.1f} s")
        for name in names:
            data = core.read_namespaced_secret(f"{name}-tls", jobs_ns).data
            x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"])).verify_directly_issued_by(new_cert)
    finally:
        core.patch_namespaced_secret(SETTINGS.ca_secret_name, SETTINGS.operator_namespace, {"data": original})
