"""A stand-in for the cluster DNS (CoreDNS): A records for the Services' and pods' names, NXDOMAIN for
anything else. Ray's GCS client resolves the head Service's name through gRPC's c-ares resolver, which
asks a DNS server rather than reading /etc/hosts, so the pods need one, as on a cluster.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Mapping

A, AAAA, IN = 1, 28, 1


def parse_question(packet: bytes) -> tuple[int, int, str, int, int]:
    """(id, flags, name, qtype, end offset) of the first question."""
    ident, flags = struct.unpack("!HH", packet[:4])
    labels, offset = [], 12
    while packet[offset]:
        length = packet[offset]
        labels.append(packet[offset + 1:offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    qtype, _ = struct.unpack("!HH", packet[offset + 1:offset + 5])
    return ident, flags, ".".join(labels).lower(), qtype, offset + 5


def answer(packet: bytes, records: Mapping[str, str], ttl: int = 5) -> bytes:
    ident, flags, name, qtype, end = parse_question(packet)
    question = packet[12:end]
    address = records.get(name)
    rcode = 0 if address is not None else 3  # NXDOMAIN
    answers = b""
    if address is not None and qtype == A:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", A, IN, ttl, 4) + socket.inet_aton(address)
    header = struct.pack("!HHHHHH", ident, 0x8000 | (flags & 0x0100) | 0x0400 | rcode, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


class ClusterDns:
    def __init__(self, records: Mapping[str, str]) -> None:
        self.records = {name.lower().rstrip("."): ip for name, ip in records.items()}
        self.sock: socket.socket | None = None
        self._stop = threading.Event()

    def serve(self, ip: str, port: int = 53) -> None:
        """Binds and answers on a thread; call it from a thread inside the pod network."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.sock.settimeout(0.5)
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                packet, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(answer(packet, self.records), peer)
            except (IndexError, struct.error, UnicodeDecodeError, OSError):
                continue

    def stop(self) -> None:
        self._stop.set()
        if self.sock is not None:
            self.sock.close()
