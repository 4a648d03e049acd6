"""Certificates renew by themselves: with a 60 s validity (renewal at 2/3 of the lifetime), the
certificate served in a job's TLS Secret is replaced before it expires, twice, with no spec change
and no resync (the resync period is the default 600 s: only the requeue at the renewal time brings
the job back), exactly one Pulumi run per renewal, the job Ready all along, the status and the
expiry gauge moving forward, and every new certificate accepted in a real TLS handshake."""

from __future__ import annotations

import base64
import datetime
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path

from controller_harness import create_job, get_job, is_ready_running, job_manifest, wait_for, wait_ready_running
from cryptography import x509

from iflearner.certrenewal import certificate_times, renewal_time

VALIDITY_SECONDS = 60
RENEWALS = 2


def _served(core, namespace: str, secret: str) -> tuple[str, str]:
    data = core.read_namespaced_secret(secret, namespace).data
    return base64.b64decode(data["tls.crt"]).decode(), base64.b64decode(data["tls.key"]).decode()


def _handshake(cert_pem: str, key_pem: str, ca_pem: str, host: str) -> str:
    """Serve ``cert_pem`` on a local TLS socket and connect trusting only the cluster CA; the peer's serial."""
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_file.write_text(cert_pem)
        key_file.write_text(key_pem)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cadata=ca_pem)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            client_ctx.wrap_socket(raw, server_hostname=host) as tls:
        peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        tls.sendall(b"x")
    thread.join(5)
    listener.close()
    return format(peer.serial_number, "x")


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def test_certificate_renews_before_expiry_without_spec_change(start_controller, custom, core, jobs_ns,
                                                              controller_prereqs):
    controller = start_controller("--certificate-validity-seconds", str(VALIDITY_SECONDS), "--workers", "2")
    manifest = job_manifest("renewing", jobs_ns)
    host = manifest["spec"]["host"]
    create_job(custom, manifest)
    job = wait_ready_running(custom, jobs_ns, "renewing", controller)
    secret = job["status"]["outputs"]["tlsSecret"]
    generation = job["metadata"]["generation"]
    ca_pem = controller_prereqs["ca_cert_pem"]
    ca = x509.load_pem_x509_certificate(ca_pem.encode())

    # The first certificate, as served and as reported.
    cert_pem, key_pem = _served(core, jobs_ns, secret)
    times = certificate_times(cert_pem)
    assert times is not None
    assert times.lifetime == datetime.timedelta(seconds=VALIDITY_SECONDS * 1.1)  # 6 s back-dated
    wait_for("status.certificate of the first certificate",
             lambda: (get_job(custom, jobs_ns, "renewing")["status"].get("certificate") or {}).get("serial")
             == times.serial, 30)
    runs_before = controller.pulumi_runs()

    latencies = []
    for renewal in range(1, RENEWALS + 1):
        window = renewal_time(times)
        not_ready_seen = []

        def replaced(old_serial: str = times.serial, seen: list = not_ready_seen) -> tuple[str, str] | None:
            current = get_job(custom, jobs_ns, "renewing")
            if not is_ready_running(current):
                seen.append((current or {}).get("status"))
            served = _served(core, jobs_ns, secret)
            new = certificate_times(served[0])
            return served if new is not None and new.serial != old_serial else None

        cert_pem, key_pem = wait_for(f"renewal {renewal} of the served certificate", replaced,
                                     timeout=VALIDITY_SECONDS * 1.5, interval=0.2, on_timeout=controller.log)
        served_at = _utc_now()
        new_times = certificate_times(cert_pem)
        assert new_times is not None
        latency = (served_at - window).total_seconds()
        latencies.append(latency)
        print(f"renewal {renewal}: entered the renewal window at {window:%H:%M:%S.%f}, new certificate served "
              f"{latency:.2f} s later, {(times.not_after - served_at).total_seconds():.1f} s before the old "
              f"one expired")

        assert served_at < times.not_after, "the new certificate must be served before the old one expires"
        assert new_times.not_after > times.not_after
        assert not not_ready_seen, f"the job left Ready during the renewal: {not_ready_seen[:1]}"
        x509.load_pem_x509_certificate(cert_pem.encode()).verify_directly_issued_by(ca)
        assert _handshake(cert_pem, key_pem, ca_pem, host) == new_times.serial

        # The status and the gauge move forward; exactly one more Pulumi run, and no spec change.
        job = wait_for("status.certificate of the renewed certificate",
                       lambda s=new_times.serial: (lambda j: j if (j["status"].get("certificate") or {})
                                                   .get("serial") == s else None)(
                           get_job(custom, jobs_ns, "renewing")), 30)
        status_cert = job["status"]["certificate"]
        assert status_cert["notAfter"] == new_times.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert status_cert["renewalTime"] == renewal_time(new_times).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert job["metadata"]["generation"] == generation
        assert is_ready_running(job)
        wait_for("the renewal's Pulumi run to be counted",
                 lambda n=renewal: controller.pulumi_runs() >= runs_before + n, 30)
        gauge = controller.metrics()[("iflearner_certificate_expiry_timestamp_seconds",
                                      (("name", "renewing"), ("namespace", jobs_ns)))]
        assert gauge == new_times.not_after.timestamp()
        times = new_times

    time.sleep(2)  # a run started by the last renewal's own writes would be counted by now
    assert controller.pulumi_runs() == runs_before + RENEWALS, controller.log()
    print(f"renewal latency (renewal window entered -> new certificate served): "
          f"{', '.join(f'{s:.2f} s' for s in latencies)}; Pulumi runs for {RENEWALS} renewals: "
          f"{controller.pulumi_runs() - runs_before:.0f}")
