"""A minimal authoritative DNS server for the tests' stand-in internet (stdlib only, UDP and TCP).

It answers A queries for a fixed name → IPv4 map, NOERROR with no answer (NODATA) for any other type of a known
name (AAAA above all: glibc asks for it beside A), and NXDOMAIN for every other name, so a resolver inside a
sandbox learns the test names and nothing else, quickly. Every query is logged as one JSON line, so a test can see
which names a client tried to resolve (an attempt to reach the real internet shows up as an NXDOMAIN here).

It runs with a plain `python` inside a network namespace, without the project on the path:

    python fake_dns.py --host 203.0.113.10 --record llm.kubehands.test=203.0.113.10 --log dns.jsonl

`query()` is a small client for tests: one question to one server, the answer decoded.
"""

import argparse
import ipaddress
import json
import random
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4
TTL = 60
HEADER = struct.Struct("!HHHHHH")


class FormatError(ValueError):
    """A message that is not a well-formed DNS query."""


def _read_name(message: bytes, offset: int) -> tuple[str, int]:
    """The uncompressed name at `offset` (queries carry no compression) and the offset after it."""
    labels: list[str] = []
    while True:
        if offset >= len(message):
            raise FormatError("name runs past the message")
        length = message[offset]
        offset += 1
        if length == 0:
            return ".".join(labels), offset
        if length > 63 or offset + length > len(message):
            raise FormatError("bad label")
        labels.append(message[offset : offset + length].decode("ascii", "replace"))
        offset += length


def _encode_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.strip(".").split(".")) + b"\0"


@dataclass
class Answer:
    """What the server made of one query, for its log."""

    name: str
    qtype: int
    rcode: int
    addresses: list[str]


def answer(query: bytes, records: Mapping[str, str]) -> tuple[bytes, Answer | None]:
    """The response to `query` (b"" when it is too broken to answer) and what it said.

    The header echoes the ID, opcode and RD flag and sets QR and AA; the question is echoed byte for byte (case
    included: forwarders that randomise the case of a name check it)."""
    if len(query) < HEADER.size:
        return b"", None
    qid, flags, qdcount, _, _, _ = HEADER.unpack_from(query)
    if flags & 0x8000:  # a response, not a query: never answer one
        return b"", None
    opcode = (flags >> 11) & 0xF
    reply_flags = 0x8000 | (opcode << 11) | 0x0400 | (flags & 0x0100)  # QR, opcode, AA, RD

    def reply(rcode: int, question: bytes = b"", answers: list[bytes] | None = None) -> bytes:
        rrs = answers or []
        header = HEADER.pack(qid, reply_flags | rcode, 1 if question else 0, len(rrs), 0, 0)
        return header + question + b"".join(rrs)

    if opcode != 0:
        return reply(NOTIMP), None
    try:
        if qdcount != 1:
            raise FormatError("exactly one question expected")
        name, end = _read_name(query, HEADER.size)
        if end + 4 > len(query):
            raise FormatError("question truncated")
        qtype, qclass = struct.unpack_from("!HH", query, end)
    except FormatError:
        return reply(FORMERR), None
    question = query[HEADER.size : end + 4]
    address = records.get(name.lower().rstrip("."))
    if address is None:
        return reply(NXDOMAIN, question), Answer(name, qtype, NXDOMAIN, [])
    if qtype != TYPE_A or qclass != CLASS_IN:
        return reply(NOERROR, question), Answer(name, qtype, NOERROR, [])
    # the answer's owner is a pointer to the question's name at offset 12
    record = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + socket.inet_aton(address)
    return reply(NOERROR, question, [record]), Answer(name, qtype, NOERROR, [address])


class _Log:
    """One JSON line per query, flushed at once (a test reads the file while the server runs)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def write(self, result: Answer, client: str, transport: str) -> None:
        line = {
            "time": round(time.time(), 3),
            "client": client,
            "transport": transport,
            "name": result.name,
            "type": result.qtype,
            "rcode": result.rcode,
            "answers": result.addresses,
        }
        with self.lock:
            self.stream.write(json.dumps(line) + "\n")
            self.stream.flush()


class _UDPHandler(socketserver.BaseRequestHandler):
    server: "_UDPServer"

    def handle(self) -> None:
        data, sock = self.request
        response, result = answer(data, self.server.records)
        if response:
            sock.sendto(response, self.client_address)
        if result:
            self.server.log.write(result, self.client_address[0], "udp")


class _TCPHandler(socketserver.BaseRequestHandler):
    server: "_TCPServer"

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(10)
        while True:
            prefix = self._read(sock, 2)
            if prefix is None:
                return
            data = self._read(sock, struct.unpack("!H", prefix)[0])
            if data is None:
                return
            response, result = answer(data, self.server.records)
            if not response:
                return
            sock.sendall(struct.pack("!H", len(response)) + response)
            if result:
                self.server.log.write(result, self.client_address[0], "tcp")

    @staticmethod
    def _read(sock: socket.socket, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            try:
                chunk = sock.recv(size - len(data))
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return data


class _UDPServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True
    records: Mapping[str, str]
    log: _Log


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    records: Mapping[str, str]
    log: _Log


def serve(host: str, port: int, records: Mapping[str, str], log: IO[str]) -> None:
    """Serve `records` over UDP and TCP on host:port until the process is killed."""
    normalized = {name.lower().rstrip("."): str(ipaddress.IPv4Address(ip)) for name, ip in records.items()}
    shared = _Log(log)
    udp, tcp = _UDPServer((host, port), _UDPHandler), _TCPServer((host, port), _TCPHandler)
    servers: list[_UDPServer | _TCPServer] = [udp, tcp]
    for server in servers:
        server.records = normalized
        server.log = shared
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    udp.serve_forever()


@dataclass
class Response:
    """A decoded response: `addresses` are the A records of the answer section."""

    id: int
    flags: int
    rcode: int
    question: bytes
    addresses: list[str]

    @property
    def authoritative(self) -> bool:
        return bool(self.flags & 0x0400)


def query(
    server: str, name: str, qtype: int = TYPE_A, port: int = 53, timeout: float = 2.0, tcp: bool = False
) -> Response:
    """Ask `server` one question over UDP (or TCP), with recursion desired as a stub resolver does; raise when no
    answer comes."""
    qid = random.randrange(1 << 16)
    question = _encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)
    message = HEADER.pack(qid, 0x0100, 1, 0, 0, 0) + question
    if tcp:
        with socket.create_connection((server, port), timeout=timeout) as conn:
            conn.sendall(struct.pack("!H", len(message)) + message)
            stream = conn.makefile("rb")
            data = stream.read(struct.unpack("!H", stream.read(2))[0])
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(message, (server, port))
            while True:  # skip anything that is not the answer to this question (a timeout raises)
                data, _ = sock.recvfrom(4096)
                if len(data) >= HEADER.size and HEADER.unpack_from(data)[0] == qid:
                    break
    rid, flags, qdcount, ancount, _, _ = HEADER.unpack_from(data)
    offset = HEADER.size
    echoed = b""
    if qdcount:
        _, end = _read_name(data, offset)
        echoed, offset = data[offset : end + 4], end + 4
    addresses = []
    for _ in range(ancount):
        if data[offset] & 0xC0 == 0xC0:
            offset += 2
        else:
            _, offset = _read_name(data, offset)
        rtype, _, _, rdlength = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if rtype == TYPE_A and rdlength == 4:
            addresses.append(socket.inet_ntoa(data[offset : offset + 4]))
        offset += rdlength
    return Response(rid, flags, flags & 0xF, echoed, addresses)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--record", action="append", default=[], metavar="NAME=IPV4", help="repeatable")
    parser.add_argument("--log", help="append one JSON line per query here (default: stderr)")
    args = parser.parse_args(argv)
    records = dict(item.split("=", 1) for item in args.record)
    log = open(args.log, "a", encoding="utf-8") if args.log else sys.stderr  # open as long as we run
    serve(args.host, args.port, records, log)


if __name__ == "__main__":
    main()
