"""A minimal DNS client (one A query over UDP), to tell from the host that
CoreDNS answers through the kube-dns Service, without dig or a resolver
library."""

from __future__ import annotations

import secrets
import socket
import struct


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _skip_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # compression pointer
            return offset + 2
        offset += 1 + length


def query_a(server: str, name: str, timeout: float = 2.0, port: int = 53) -> list[str]:
    """The A records for ``name``; raises OSError/TimeoutError when there is
    no answer and ValueError on an error reply (e.g. NXDOMAIN)."""
    ident = secrets.randbits(16)
    question = _encode_name(name) + struct.pack(">HH", 1, 1)
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, port))
        while True:
            reply, _ = sock.recvfrom(4096)
            if len(reply) >= 12 and struct.unpack(">H", reply[:2])[0] == ident:
                break
    _, flags, qdcount, ancount, _, _ = struct.unpack(">HHHHHH", reply[:12])
    if flags & 0x000F:
        raise ValueError(f"DNS error code {flags & 0x000F} for {name}")
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(reply, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = _skip_name(reply, offset)
        rtype, _, _, rdlength = struct.unpack(">HHIH", reply[offset:offset + 10])
        offset += 10
        if rtype == 1 and rdlength == 4:
            addresses.append(socket.inet_ntoa(reply[offset:offset + 4]))
        offset += rdlength
    return addresses
