"""An upgraded connection relayed as bytes: the client's socket and the sandbox's, spliced.

The router has checked the request (its sandbox, its session key, the limits) before it gets here, and the
upstream's answer decides whether the client gets a tunnel (101) or an HTTP answer. From then on bytes are copied
both ways as they come; WebSocket frames, pings, close codes, compression and fragmentation all belong to the two
ends. Each direction is flow-controlled: when one side's write buffer is above its high-water mark, reading from
the other side pauses, so a connection holds at most two write buffers and one read chunk per side, whatever the
peers send or fail to read.
"""

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

WRITE_BUFFER_HIGH = 64 * 1024
MAX_RESPONSE_HEAD = 64 * 1024
# A peer that vanishes without closing (a lost node, a dropped laptop) is found by TCP keepalive: after 30 s of
# silence, 3 probes 10 s apart. The two ends' own WebSocket pings pass through untouched.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 30, 10, 3


def keep_alive_probes(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class HandshakeFailed(Exception):
    """The upstream closed, timed out or answered something that is not an HTTP response head."""


@dataclass
class Answer:
    status: int
    head: bytes  # the raw response head, through its blank line
    rest: bytes  # bytes the upstream sent after the head (the start of the upgraded stream)


class UpstreamSide(asyncio.Protocol):
    """The sandbox's end: first reads the response head, then hands bytes to the tunnel."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.tunnel: Tunnel | None = None
        self._head = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.to_client(data)
            return
        if self.answer.done():  # answered but not (yet) spliced: keep what follows, bounded by pausing
            self._head += data
            if len(self._head) > MAX_RESPONSE_HEAD and self.transport is not None:
                self.transport.pause_reading()
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_RESPONSE_HEAD:
                self._fail("the sandbox's response head is too large")
            return
        head, rest = bytes(self._head[: end + 4]), bytes(self._head[end + 4 :])
        self._head = bytearray()
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            self._fail("the sandbox did not answer with HTTP")
            return
        self.answer.set_result(Answer(status, head, rest))

    def take_pending(self) -> bytes:
        pending, self._head = bytes(self._head), bytearray()
        return pending

    def _fail(self, reason: str) -> None:
        if not self.answer.done():
            self.answer.set_exception(HandshakeFailed(reason))
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        if self.tunnel is not None:
            return self.tunnel.upstream_eof()
        self._fail("the sandbox closed the connection")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tunnel is not None:
            self.tunnel.upstream_lost()
        elif not self.answer.done():
            self.answer.set_exception(HandshakeFailed("the sandbox closed the connection"))

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.client.pause_reading()

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.client.resume_reading()


async def open_upstream(host: str, port: int, head: bytes, timeout: float) -> tuple[UpstreamSide, Answer]:
    """Connect, send the request head, and read the response head, all within `timeout`.

    Raises OSError (unreachable), TimeoutError or HandshakeFailed; the connection is closed then."""
    loop = asyncio.get_running_loop()
    side: UpstreamSide | None = None
    try:
        async with asyncio.timeout(timeout):
            _, side = await loop.create_connection(UpstreamSide, host, port)
            assert side.transport is not None
            side.transport.write(head)
            answer = await side.answer
    except BaseException:
        if side is not None and side.transport is not None:
            side.transport.abort()
        raise
    keep_alive_probes(side.transport)
    return side, answer


class Tunnel:
    """The spliced pair. `closed` resolves once both connections are gone."""

    def __init__(self, client: asyncio.Transport, upstream: UpstreamSide) -> None:
        assert upstream.transport is not None
        self.client = client
        self.upstream = upstream.transport
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._eofs = 0
        client.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        upstream.tunnel = self

    # client → upstream (the client connection's protocol forwards its events here)
    def data_received(self, data: bytes) -> None:
        self.upstream.write(data)

    def eof_received(self) -> bool | None:
        return self._half_close(self.upstream)

    def connection_lost(self, exc: Exception | None) -> None:
        self.upstream.close()
        self._lost()

    def pause_writing(self) -> None:
        self.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.upstream.resume_reading()

    def shutdown(self) -> None:
        """The server is stopping: end both connections (their WebSocket ends see the TCP close)."""
        self.client.close()
        self.upstream.close()

    # upstream → client
    def to_client(self, data: bytes) -> None:
        self.client.write(data)

    def upstream_eof(self) -> bool | None:
        return self._half_close(self.client)

    def upstream_lost(self) -> None:
        self.client.close()
        self._lost()

    def _half_close(self, other: Any) -> bool:
        """One side finished sending: pass the end of its stream on, keep the other direction open."""
        self._eofs += 1
        if self._eofs == 2 or not other.can_write_eof():
            other.close()
            return False
        other.write_eof()
        return True

    def _lost(self) -> None:
        if self.upstream.is_closing() and self.client.is_closing() and not self.closed.done():
            self.closed.set_result(None)
