"""The HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers 200 while the controller's threads are alive (a
liveness probe restarts a wedged process); ``/readyz`` answers 200 only once
the informer caches have synced.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from iflearner.controller.metrics import Metrics

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


def parse_address(address: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """'host:port', ':port' or 'port' -> (host, port)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or default_host
    return host, int(port)


class HealthServer:
    """A small threaded HTTP server for probes and scrapes."""

    def __init__(self, address: str, metrics: Metrics, healthy: Check, ready: Check) -> None:
        self.metrics = metrics
        self.healthy = healthy
        self.ready = ready
        host, port = parse_address(address)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, server.metrics.exposition(), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/livez"):
                    self._probe(server.healthy)
                elif path == "/readyz":
                    self._probe(server.ready)
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

            def _probe(self, check: Check) -> None:
                try:
                    ok, detail = check()
                except Exception as error:  # noqa: BLE001 - a failing check is a failed probe
                    ok, detail = False, f"check failed: {error}"
                self._send(200 if ok else 503, f"{'ok' if ok else 'not ok'}: {detail}\n".encode(), "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # probes every few seconds would drown the logs

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="health-server", daemon=True)
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz", extra={"address": f"{self._httpd.server_address}"})

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
