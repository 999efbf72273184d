"""The router's WebSocket relay (bytes, server/tunnel.py) against real upstreams, and the bounds of
`kubehands gateway`'s HTTP protocol (server/protocol.py): head size and deadline, connections per port
and per sandbox."""

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kubehands.api.settings import Settings
from tests.helpers.api import sandbox_object, serve_gateway
from tests.helpers.relay_upstreams import raw_upgrade_upstream, websocket_upstream

pytestmark = pytest.mark.unit

RID = "kh-relay0000001"
TIMEOUT = 10.0


async def _ready(gateway, rid: str) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not gateway.alive.is_alive(gateway.caches.sandbox(rid)):
        assert asyncio.get_running_loop().time() < deadline, "the /alive check never passed"
        await gateway.caches.sandboxes.wait_changed(0.5)


async def _gateway_in_front_of(upstream_port: int, **settings: object):
    context = serve_gateway(Settings(activity_interval_seconds=3600, **settings))  # type: ignore[arg-type]
    gateway, port = await context.__aenter__()
    gateway.caches.sandboxes.upsert(sandbox_object(RID, "team-a", "s1", upstream_port))
    await _ready(gateway, RID)
    return context, gateway, port


@pytest.fixture
async def ws_relay() -> AsyncIterator[tuple[str, object]]:
    async with websocket_upstream() as (upstream_port, recorded):
        context, _, port = await _gateway_in_front_of(upstream_port)
        try:
            yield f"ws://127.0.0.1:{port}/{RID}", recorded
        finally:
            await context.__aexit__(None, None, None)


async def _next_event(recorded, wanted: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        while await recorded.events.get() != wanted:
            pass


# ---- WebSocket semantics pass through, both directions -------------------------------------------------


async def test_text_binary_and_subprotocol(ws_relay) -> None:
    url, recorded = ws_relay
    async with connect(f"{url}/ws", subprotocols=["one", "two"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "two"  # the sandbox chose, from what the client offered
        await ws.send("hi")
        assert await ws.recv() == "echo:hi"
        await ws.send(b"\x00\x01\x02")
        assert await ws.recv() == b"\x02\x01\x00"
    assert recorded.messages == ["hi", b"\x00\x01\x02"]


async def test_close_codes_both_ways(ws_relay) -> None:
    url, recorded = ws_relay
    async with connect(f"{url}/ws") as ws:
        await ws.close(4002, "client says bye")
    await _next_event(recorded, "closed")
    assert recorded.close_codes[-1] == (4002, "client says bye")
    async with connect(f"{url}/ws") as ws:
        await ws.send("close:4003")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (4003, "asked")


async def test_pings_both_ways(ws_relay) -> None:
    url, _ = ws_relay
    async with connect(f"{url}/ws", ping_interval=None) as ws:
        async with asyncio.timeout(TIMEOUT):
            await (await ws.ping(b"from-client"))  # the sandbox's pong comes back
        await ws.send("ping")  # the sandbox pings; the client's library answers through the relay
        assert await ws.recv() == "pong-seen"


async def test_fragmented_messages_both_ways(ws_relay) -> None:
    url, recorded = ws_relay
    async with connect(f"{url}/ws") as ws:
        await ws.send(iter(["a", "b", "c"]))
        assert await ws.recv() == "echo:abc"
        await ws.send("fragments")
        assert await ws.recv() == "fragmented"
    assert recorded.messages[0] == "abc"


async def test_a_refused_upgrade_keeps_the_sandboxs_status(ws_relay) -> None:
    url, _ = ws_relay
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{url}/deny"):
            pass
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body) == {"detail": "the sandbox refused the WebSocket"}


async def _raw_upgrade(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /{RID}{path} HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n".encode()
    )
    async with asyncio.timeout(TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


async def test_half_closed_connections_both_ways() -> None:
    async with raw_upgrade_upstream() as upstream:
        context, _, port = await _gateway_in_front_of(upstream.port)
        try:
            # the client ends its side; the sandbox still sends, and the client reads it
            reader, writer, head = await _raw_upgrade(port, "/raw")
            assert head.startswith(b"HTTP/1.1 101 ")
            writer.write(b"hello")
            writer.write_eof()
            async with asyncio.timeout(TIMEOUT):
                assert await upstream.received.get() == b"hello"
                assert await upstream.received.get() == b""  # the sandbox saw the end of the client's stream
                upstream.writers[0].write(b"still here")
                assert await reader.readexactly(len(b"still here")) == b"still here"
                upstream.writers[0].close()
                assert await reader.read() == b""
            writer.close()
            # the sandbox ends its side; the client still sends, and the sandbox reads it
            reader, writer, _ = await _raw_upgrade(port, "/raw")
            async with asyncio.timeout(TIMEOUT):
                upstream.writers[1].write_eof()
                assert await reader.read() == b""  # the client saw the end of the sandbox's stream
                writer.write(b"after")
                await writer.drain()
                assert await upstream.received.get() == b"after"
            writer.close()
        finally:
            await context.__aexit__(None, None, None)


# ---- bounds ----------------------------------------------------------------------------------------------


async def test_a_sandbox_has_a_bound_on_open_connections() -> None:
    async with websocket_upstream() as (upstream_port, _):
        context, gateway, port = await _gateway_in_front_of(upstream_port, max_connections_per_sandbox=2)
        try:
            url = f"ws://127.0.0.1:{port}/{RID}/ws"
            async with connect(url) as first, connect(url):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url):
                        pass
                assert refused.value.response.status_code == 503
                assert "2 connections open" in json.loads(refused.value.response.body)["detail"]
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    assert (await http.get(f"/{RID}/alive")).status_code == 503  # plain requests count too
                    assert (await http.get("/health")).status_code == 200  # the gateway itself is not bounded
                await first.close()
                async with asyncio.timeout(TIMEOUT):
                    while gateway.connections.open(RID) > 1:
                        await asyncio.sleep(0.01)
                async with connect(url) as third:
                    await third.send("again")
                    assert await third.recv() == "echo:again"
        finally:
            await context.__aexit__(None, None, None)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict]:
    async with asyncio.timeout(TIMEOUT):
        raw = await reader.read()  # the gateway closes after a refusal
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


async def test_request_heads_are_bounded_while_they_arrive() -> None:
    async with websocket_upstream() as (upstream_port, _):
        context, _, port = await _gateway_in_front_of(upstream_port, max_header_bytes=4096)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\nx-endless: ")
            refused = asyncio.ensure_future(_read_answer(reader))
            while not refused.done():  # an endless header: never finished, refused once past the bound
                writer.write(b"a" * 1024)
                await writer.drain()
                await asyncio.wait([refused], timeout=0.01)
            status, body = refused.result()
            assert status == 431 and "larger than 4096 bytes" in body["detail"]
            writer.close()
        finally:
            await context.__aexit__(None, None, None)


async def test_a_head_must_arrive_within_the_deadline() -> None:
    async with websocket_upstream() as (upstream_port, _):
        context, _, port = await _gateway_in_front_of(upstream_port, head_timeout_seconds=0.5)
        try:
            silent = await asyncio.open_connection("127.0.0.1", port)
            slow = await asyncio.open_connection("127.0.0.1", port)
            slow[1].write(b"GET /health HTTP/1.1\r\n")
            started = asyncio.get_running_loop().time()
            for reader, _ in (silent, slow):
                status, body = await _read_answer(reader)
                assert status == 408 and "within 0.5 s" in body["detail"]
            assert asyncio.get_running_loop().time() - started < 2
            # a connection that keeps sending bytes is not a head that arrives
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\n")
            answer = asyncio.ensure_future(_read_answer(reader))
            while not answer.done():
                writer.write(b"x")
                await asyncio.wait([answer], timeout=0.05)
            assert answer.result()[0] == 408
            for _, writer in (silent, slow):
                writer.close()
        finally:
            await context.__aexit__(None, None, None)


async def test_connections_are_bounded_per_port() -> None:
    async with websocket_upstream() as (upstream_port, _):
        context, _, port = await _gateway_in_front_of(upstream_port, max_connections_per_port=4)
        try:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            reader, _ = await asyncio.open_connection("127.0.0.1", port)
            status, body = await _read_answer(reader)
            assert status == 503 and f"too many connections to port {port}" in body["detail"]
            for _, writer in held[:2]:
                writer.close()
                await writer.wait_closed()
            async with asyncio.timeout(TIMEOUT):
                while True:  # the gateway counts the closed ones down as it sees them go
                    async with httpx.AsyncClient() as http:
                        if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                            break
            for _, writer in held[2:]:
                writer.close()
        finally:
            await context.__aexit__(None, None, None)
