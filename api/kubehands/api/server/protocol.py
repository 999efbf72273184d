"""uvicorn's httptools protocol, bounded for a gateway that many tenants share (docs/gateway.md#connection-bounds).

- **Request heads are bounded while they arrive.** httptools keeps a header until its end, and the app sees a
  head only once it is complete, so a limit checked there comes too late: one endless header would grow the
  gateway without bound. Here the bytes of a head are counted as they come (431 above `max_head_bytes`), and a
  head must be complete within `head_timeout_seconds` of the connection opening or of its first byte (408).
- **Connections are bounded per listening port** (503 and closed above `max_connections_per_port`), so a flood on
  one sandbox port leaves the control port (port mode) and other sandboxes' ports alone.
- **A WebSocket upgrade is an ordinary HTTP request for the app**, with the `kubehands.upgrade` extension in its
  scope. The router checks it like any request, then may take the connection over (`take_over()`) and relay its
  bytes (`tunnel.py`): no WebSocket message is parsed or held by the gateway. Any other answer (a denial, the
  control API's 404) is sent as is and the connection closed.
"""

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar, Protocol

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from kubehands.api.server.tunnel import keep_alive_probes

log = logging.getLogger(__name__)

UPGRADE_EXTENSION = "kubehands.upgrade"
# Bytes a client may send after its upgrade request before the router has answered it (a client must wait for
# the 101 before sending frames, so this is only slack): reading pauses above it.
EARLY_BYTES_LIMIT = 64 * 1024
LINGER_SECONDS = 1.0


@dataclass(frozen=True)
class ServerLimits:
    max_head_bytes: int = 65_536
    head_timeout_seconds: float = 10.0
    max_connections_per_port: int = 1024


class ConnectionSink(Protocol):
    """Where a taken-over connection's events go (the tunnel's client side)."""

    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def shutdown(self) -> None: ...


@dataclass
class TakenOver:
    """A client connection handed to the app: its transport, the bytes it sent after its request head, and
    `attach(sink)` to receive what follows."""

    transport: asyncio.Transport
    early: bytes
    attach: Any = field(repr=False)


def json_response(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 response with a JSON `detail`, closing the connection (answers written by the protocol
    itself, where the app has no say)."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GatewayHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[ServerLimits] = ServerLimits()
    open_by_port: ClassVar[Counter[int]] = Counter()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._port: int | None = None
        self._head_bytes = 0
        self._awaiting_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._upgrade_offered = False  # the current request may be taken over
        self._early: bytearray | None = None  # bytes after an upgrade request's head, while the app decides
        self._sink: ConnectionSink | None = None  # set once the app took the connection over
        self._lingering = False  # refused: reading only to drop, until closed

    # --- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sockname = transport.get_extra_info("sockname")
        self._port = sockname[1] if isinstance(sockname, tuple) else None
        self.open_by_port[self._port or 0] += 1
        if self.open_by_port[self._port or 0] > self.limits.max_connections_per_port:
            self._refuse(503, f"too many connections to port {self._port}; retry shortly")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open_by_port[self._port or 0] -= 1
        self._cancel_head_timer()
        if self._sink is not None:
            self._sink.connection_lost(exc)
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]  # True keeps a half-closed tunnel open
        if self._lingering:
            self.transport.close()
            return None
        if self._sink is not None:
            return self._sink.eof_received()
        return super().eof_received()

    def pause_writing(self) -> None:
        if self._sink is not None:
            self._sink.pause_writing()
        else:
            super().pause_writing()

    def resume_writing(self) -> None:
        if self._sink is not None:
            self._sink.resume_writing()
        else:
            super().resume_writing()

    def shutdown(self) -> None:
        if self._sink is not None:
            self._sink.shutdown()
        else:
            super().shutdown()

    # --- bytes -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._sink is not None:
            self._sink.data_received(data)
            return
        if self._early is not None:  # an upgrade request the app has not answered yet
            self._early += data
            if len(self._early) > EARLY_BYTES_LIMIT:
                self.transport.pause_reading()
            return
        self._unset_keepalive_if_required()
        if self._awaiting_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._refuse(400, "invalid HTTP request")
            return
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self._early = bytearray(data[offset:])
            return
        if self._awaiting_head and self._head_bytes > self.limits.max_head_bytes:
            self._refuse(431, f"request line and headers larger than {self.limits.max_head_bytes} bytes")

    # --- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_head = True
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._awaiting_head = False
        self._head_bytes = 0
        self._upgrade_offered = self.parser.should_upgrade() and self._get_upgrade() == b"websocket"
        if self._upgrade_offered:
            self.scope["extensions"] = {UPGRADE_EXTENSION: {"take_over": self._take_over}}
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True
        self._head_bytes = 0

    def _should_upgrade(self) -> bool:
        return False  # upgrades reach the app as HTTP requests (the module's docstring)

    def on_response_complete(self) -> None:
        if self.parser.should_upgrade():  # answered without a takeover: the connection cannot carry on
            self.server_state.total_requests += 1
            self.transport.close()
            return
        super().on_response_complete()

    # --- takeover --------------------------------------------------------------------------------

    def _take_over(self) -> TakenOver:
        """Hand the connection to the app, which then writes its answer (the 101) itself."""
        if not self._upgrade_offered or self.cycle is None or self.cycle.response_started:
            raise RuntimeError("this request cannot be taken over")
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        # uvicorn's cycle must see a finished response, or it answers 500 when the app returns.
        self.cycle.response_started = True
        self.cycle.response_complete = True
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(self.scope),
                self.scope["method"],
                get_path_with_query_string(self.scope),
                self.scope["http_version"],
                101,
                extra={"status_code": 101, "scope": self.scope},
            )
        early = bytes(self._early or b"")
        self._early = None
        keep_alive_probes(self.transport)

        def attach(sink: ConnectionSink) -> None:
            self._sink = sink
            self.transport.resume_reading()

        return TakenOver(self.transport, early, attach)

    # --- bounds ----------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.head_timeout_seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self._refuse(408, f"request head not received within {self.limits.head_timeout_seconds:g} s")
        else:
            self.transport.close()

    def _refuse(self, status: int, detail: str) -> None:
        """Answer from the protocol (no app involved) and close: the connection is beyond a bound.

        The close lingers: what the client still sends is read and dropped for up to LINGER_SECONDS, because
        closing a socket with unread bytes resets the connection, and the reset can destroy the answer
        before the client reads it."""
        log.debug("refused %s: %s", self.client, detail)
        self._cancel_head_timer()
        self._lingering = True
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(json_response(status, detail))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def protocol_class(limits: ServerLimits) -> type[GatewayHttpProtocol]:
    """The protocol class to give uvicorn (`http=`): one per server, with its own limits and connection counts."""
    return type("GatewayHttpProtocol", (GatewayHttpProtocol,), {"limits": limits, "open_by_port": Counter()})
