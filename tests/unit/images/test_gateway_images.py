"""The gateway's images as specs, and the gRPC prober they carry, run here against its own server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from iflearner.images import gateway_images
from iflearner.images.spec import tag


def test_traefik_image_is_the_binary_alone_run_unprivileged(tmp_path):
    binary = tmp_path / "traefik"
    binary.write_bytes(b"\x7fELF fake")
    spec = gateway_images.traefik(binary)
    assert spec.base is None
    (layer,) = spec.layers
    assert [e.path for e in layer.entries] == ["/usr/local/bin/traefik"]
    assert spec.config.entrypoint == ("/usr/local/bin/traefik",) and spec.config.user == "65532:65532"
    # Content-addressed: another binary, another tag.
    other = tmp_path / "other"
    other.write_bytes(b"\x7fELF other")
    assert tag(spec) != tag(gateway_images.traefik(other))


def test_grpcapp_image_has_grpcio_from_debian():
    spec = gateway_images.grpcapp()
    assert spec.base is not None and "python3-grpcio" in spec.base.include
    assert spec.config.entrypoint == ("/usr/local/bin/grpcapp",)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_prober_sends_a_64_mib_message_and_reports_failures(tmp_path):
    program = str(Path(gateway_images.GRPCAPP_SOURCE))
    port = _free_port()
    server = subprocess.Popen([sys.executable, program, "serve", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert "serving" in server.stdout.readline()  # type: ignore[union-attr]
        checks = [
            {"name": "big", "target": f"127.0.0.1:{port}", "size": 64 << 20, "count": 2, "retry_seconds": 10},
            {"name": "closed", "target": f"127.0.0.1:{_free_port()}", "expect": "fail"},
            {"name": "tls-to-plaintext", "kind": "tls", "target": f"127.0.0.1:{port}", "server_name": "x.y",
             "expect": "fail"},
        ]
        started = time.monotonic()
        out = subprocess.run([sys.executable, program, "probe", json.dumps(checks)], capture_output=True,
                             text=True, check=True, timeout=60).stdout
        results = {r["name"]: r for r in map(json.loads, out.splitlines())}
        assert results["big"]["ok"] is True and len(results["big"]["latencies"]) == 1
        assert results["closed"]["ok"] is False and "UNAVAILABLE" in results["closed"]["error"]
        assert results["tls-to-plaintext"]["ok"] is False
        assert time.monotonic() - started < 60
    finally:
        server.kill()
        server.wait()
