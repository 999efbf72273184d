"""Real upstreams for the router's relay tests: a WebSocket server (the `websockets` library) that records
what it receives, and a raw TCP server that answers the upgrade and then speaks bytes (for half-closed
connections, which WebSocket libraries do not expose). Both answer GET /alive, as an agent server does."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


@dataclass
class Recorded:
    """What a WebSocket upstream saw; `events` gets one item per notable thing, for waiting."""

    messages: list[Any] = field(default_factory=list)
    close_codes: list[tuple[int | None, str | None]] = field(default_factory=list)
    pongs: int = 0
    events: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


def _process_request(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/alive":
        return connection.respond(HTTPStatus.OK, "ok")
    if request.path.startswith("/deny"):
        return connection.respond(HTTPStatus.FORBIDDEN, "no")
    return None


@contextlib.asynccontextmanager
async def websocket_upstream() -> AsyncIterator[tuple[int, Recorded]]:
    """Echoes text as "echo:<text>"; commands: "close:<code>" closes with that code, "ping" pings the client
    and answers "pong-seen", "fragments" sends one message in three fragments."""
    recorded = Recorded()

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                recorded.messages.append(message)
                await recorded.events.put("message")
                if isinstance(message, bytes):
                    await ws.send(message[::-1])
                elif message.startswith("close:"):
                    await ws.close(int(message.split(":")[1]), "asked")
                elif message == "ping":
                    await (await ws.ping())
                    await ws.send("pong-seen")
                elif message == "fragments":
                    await ws.send(iter(["frag", "men", "ted"]))
                else:
                    await ws.send("echo:" + message)
        finally:
            recorded.close_codes.append((ws.close_code, ws.close_reason))
            await recorded.events.put("closed")

    async with serve(
        handler,
        "127.0.0.1",
        0,
        process_request=_process_request,
        select_subprotocol=lambda ws, offered: offered[-1] if offered else None,
        max_size=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield port, recorded


@dataclass
class RawUpstream:
    port: int
    received: asyncio.Queue[bytes]  # every chunk after the upgrade; b"" once the client's side ended (EOF)
    writers: list[asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def raw_upgrade_upstream() -> AsyncIterator[RawUpstream]:
    """Answers GET /alive; answers any other request with a bare 101 and then reports the bytes it gets.
    The test drives the upstream's side through `writers` (write, write_eof, close)."""
    received: asyncio.Queue[bytes] = asyncio.Queue()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET /alive "):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()
            return
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n")
        writers.append(writer)
        while chunk := await reader.read(65536):
            await received.put(chunk)
        await received.put(b"")

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield RawUpstream(server.sockets[0].getsockname()[1], received, writers)
    finally:
        for writer in writers:
            writer.close()
        server.close()
