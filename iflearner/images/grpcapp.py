#!/usr/bin/env python3
"""A gRPC server and prober for the gateway's tests and benchmark (grpcio only).

  grpcapp serve PORT      plaintext gRPC (h2c, as the iflearner aggregator
                          serves) on PORT: /iflearner.test.Probe/Size answers
                          the request's length in decimal; messages up to 1 GiB
  grpcapp probe CHECKS    run CHECKS (a JSON list) and print one JSON result
                          per line; exit 0 once every check has run

A check is {"name", "kind": "grpc"|"tls", "target": "host:port", and
optionally "ca" (a PEM file: TLS verified with it and nothing else),
"server_name" (the name verified and sent as SNI; default the target's
host), "size" (request bytes), "count" (calls; latencies of each after the
first), "expect": "ok"|"fail" and "retry_seconds" (retry until the result
is the expected one, e.g. while DNS records and routes propagate)}.
A "tls" check does the handshake only and reports the served certificate's
DNS names, also when verification fails.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
from concurrent import futures
from typing import Any

import grpc

SERVICE = "iflearner.test.Probe"
LIMIT = 1024 * 1024 * 1024 + 1024 * 1024  # 1 GiB of model plus framing
OPTIONS = [("grpc.max_send_message_length", LIMIT), ("grpc.max_receive_message_length", LIMIT)]


def identity(data: bytes) -> bytes:
    return data


def serve(port: int) -> None:
    def size(request: bytes, _context: grpc.ServicerContext) -> bytes:
        return str(len(request)).encode()

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Size": grpc.unary_unary_rpc_method_handler(size, request_deserializer=identity,
                                                    response_serializer=identity)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[handler], options=OPTIONS)
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    print(f"serving gRPC on :{port}", flush=True)
    server.wait_for_termination()


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host, int(port)


def grpc_check(check: dict[str, Any]) -> dict[str, Any]:
    target, size, count = check["target"], int(check.get("size", 16)), int(check.get("count", 1))
    options = list(OPTIONS)
    if check.get("ca"):
        with open(check["ca"], "rb") as handle:
            credentials = grpc.ssl_channel_credentials(root_certificates=handle.read())
        if check.get("server_name"):
            options.append(("grpc.ssl_target_name_override", check["server_name"]))
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    call = channel.unary_unary(f"/{SERVICE}/Size", request_serializer=identity, response_deserializer=identity)
    payload = b"\x5a" * size
    latencies: list[float] = []
    try:
        for _ in range(max(count, 1)):
            started = time.perf_counter()
            answer = call(payload, timeout=float(check.get("timeout", 60)))
            latencies.append(time.perf_counter() - started)
            if int(answer) != size:
                return {"ok": False, "error": f"server saw {answer!r} bytes, sent {size}"}
    except grpc.RpcError as error:
        return {"ok": False, "error": f"{error.code().name}: {error.details()}"}
    finally:
        channel.close()
    # The first call also pays for the connection (DNS, TCP, TLS, HTTP/2).
    return {"ok": True, "first": latencies[0], "latencies": latencies[1:]}


def _dns_names(der: bytes | None) -> list[str]:
    if not der:
        return []
    # The ssl module decodes certificates only for verified peers: parse the
    # DER with a throw-away context that trusts it.
    import tempfile

    pem = ssl.DER_cert_to_PEM_cert(der)
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as handle:
        handle.write(pem)
        handle.flush()
        decoded = ssl._ssl._test_decode_cert(handle.name)  # type: ignore[attr-defined]
    return [value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]


def tls_check(check: dict[str, Any]) -> dict[str, Any]:
    host, port = _split(check["target"])
    server_name = check.get("server_name") or host
    served: list[str] = []
    with socket.create_connection((host, port), timeout=10) as raw:
        peek = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        peek.check_hostname, peek.verify_mode = False, ssl.CERT_NONE
        peek.set_alpn_protocols(["h2"])
        with peek.wrap_socket(raw, server_hostname=server_name) as tls:
            served = _dns_names(tls.getpeercert(binary_form=True))
    verify = ssl.create_default_context(cafile=check["ca"]) if check.get("ca") else ssl.create_default_context()
    verify.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=10) as raw, \
                verify.wrap_socket(raw, server_hostname=server_name):
            pass
    except (ssl.SSLError, ssl.CertificateError) as error:
        return {"ok": False, "served_dns_names": served, "error": f"{type(error).__name__}: {error}"}
    return {"ok": True, "served_dns_names": served}


def run_check(check: dict[str, Any]) -> dict[str, Any]:
    expect_ok = check.get("expect", "ok") == "ok"
    deadline = time.monotonic() + float(check.get("retry_seconds", 0))
    attempts = 0
    while True:
        attempts += 1
        try:
            result = (tls_check if check.get("kind") == "tls" else grpc_check)(check)
        except (OSError, ValueError) as error:
            result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        if result["ok"] == expect_ok or time.monotonic() > deadline:
            return {"name": check.get("name"), "attempts": attempts, **result}
        time.sleep(0.5)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "serve":
        serve(int(argv[1]))
        return 0
    if len(argv) == 2 and argv[0] == "probe":
        for check in json.loads(argv[1]):
            print(json.dumps(run_check(check)), flush=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
