"""One DNS question, asked by hand: does a blocklist zone list 127.0.0.1?

RFC 5782 reserves 127.0.0.1 as the address a list must never list, so an A
record for ``1.0.0.127.ZONE`` means the zone answers for everyone (the way
several dead lists were shut down).  The stdlib resolver cannot be pointed
at a given server, so this builds the query itself: one UDP packet, A
record, recursion desired; it only reads the reply code and answer count.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Tuple

TIMEOUT = 5.0


def _server(spec: str) -> Tuple[str, int]:
    if spec == "system":
        with open("/etc/resolv.conf", encoding="ascii", errors="replace") as handle:
            for line in handle:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    return words[1], 53
        raise OSError("no nameserver in /etc/resolv.conf")
    host, _, port = spec.rpartition(":") if spec.count(":") == 1 else (spec, "", "53")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise OSError(f"{spec!r} is not HOST or HOST:PORT")
    return host, int(port)


def query(name: str, server: str) -> Tuple[int, int]:
    """(rcode, number of answers) for an A query of ``name``."""
    ident = int.from_bytes(os.urandom(2), "big")
    labels = [label.encode("idna") for label in name.rstrip(".").split(".")]
    if any(not 0 < len(label) < 64 for label in labels):
        raise OSError(f"{name!r} is not a DNS name")
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    host, port = _server(server)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect((host, port))
        sock.send(packet)
        while True:
            reply = sock.recv(4096)
            if len(reply) >= 12 and struct.unpack(">H", reply[:2])[0] == ident:
                break
    flags, _qd, answers = struct.unpack(">HHH", reply[2:8])
    if not flags & 0x8000:
        raise OSError("the reply is not a DNS response")
    return flags & 0x000F, answers


def answers_everything(zone: str, server: str) -> bool:
    rcode, answers = query(f"1.0.0.127.{zone}", server)
    if rcode not in (0, 3):  # NOERROR, NXDOMAIN
        raise OSError(f"the resolver answered rcode {rcode}")
    return rcode == 0 and answers > 0
