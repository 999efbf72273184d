"""A relayed WebSocket finds a peer that vanished without closing (a lost node, a dropped laptop) by TCP keepalive:
both of the gateway's sockets of the relay, the client's and the sandbox's, carry SO_KEEPALIVE with 30 s idle,
probes 10 s apart, 3 of them (server/tunnel.py `keep_alive_probes`). Read back from the real sockets with
getsockopt, on a gateway served in-process as `kubehands gateway` serves it."""

import asyncio
import socket
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect

from kubehands.api.server import protocol, tunnel
from kubehands.api.settings import Settings
from tests.helpers.api import sandbox_object, serve_gateway
from tests.helpers.relay_upstreams import websocket_upstream

pytestmark = pytest.mark.unit

RID = "kh-keepalive001"
TIMEOUT = 10.0
WANTED = {
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE): 1,
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE): 30,
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL): 10,
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT): 3,
}


def options(sock: socket.socket) -> dict[tuple[int, int], int]:
    return {(level, name): sock.getsockopt(level, name) for level, name in WANTED}


async def test_both_sockets_of_a_relayed_websocket_probe_a_silent_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    given: list[asyncio.BaseTransport] = []  # the transports keep_alive_probes set up, in order

    def recording(original: Callable[[asyncio.BaseTransport], None]) -> Callable[[asyncio.BaseTransport], None]:
        def probes(transport: asyncio.BaseTransport) -> None:
            given.append(transport)
            original(transport)

        return probes

    monkeypatch.setattr(tunnel, "keep_alive_probes", recording(tunnel.keep_alive_probes))
    monkeypatch.setattr(protocol, "keep_alive_probes", recording(protocol.keep_alive_probes))

    async with websocket_upstream() as (upstream_port, _):
        async with serve_gateway(Settings(activity_interval_seconds=3600)) as (gateway, port):
            gateway.caches.sandboxes.upsert(sandbox_object(RID, "team-a", "s1", upstream_port))
            async with asyncio.timeout(TIMEOUT):
                while not gateway.alive.is_alive(gateway.caches.sandbox(RID)):
                    await gateway.caches.sandboxes.wait_changed(0.5)
            given.clear()  # the /alive checks are plain HTTP; only the relay's sockets count
            async with connect(f"ws://127.0.0.1:{port}/{RID}/ws") as ws:
                await ws.send("hi")
                assert await ws.recv() == "echo:hi"  # relayed both ways: the tunnel is spliced
                client_end = ws.transport.get_extra_info("sockname")
                sockets = {
                    "client": [t for t in given if t.get_extra_info("peername") == client_end],
                    "sandbox": [t for t in given if t.get_extra_info("peername") == ("127.0.0.1", upstream_port)],
                }
                assert [len(found) for found in sockets.values()] == [1, 1], given
                for side, (transport,) in sockets.items():
                    sock = transport.get_extra_info("socket")
                    assert sock is not None and not transport.is_closing(), side
                    assert options(sock) == WANTED, side
