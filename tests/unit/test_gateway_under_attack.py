"""`kubehands gateway` in a process of its own under hostile clients: its memory stays bounded and other
clients are served while a sandbox floods non-reading WebSocket clients, while connections stream endless
headers, and while hundreds of slowloris connections trickle bytes (docs/gateway.md#connection-bounds)."""

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from tests.helpers.relay_upstreams import _process_request

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
RSS_BOUND = 64 * MiB
FLOOD_MESSAGE = 15 * MiB


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class GatewayProcess:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process, self.port = process, port
        self.url = f"http://127.0.0.1:{port}"

    def rss(self) -> int:
        return rss(self.process.pid)

    async def health_latency(self) -> float:
        """Seconds GET /health takes on a new connection (a new connection: what any other client does)."""
        started = time.perf_counter()
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{self.url}/health")).status_code == 200
        return time.perf_counter() - started


async def start_gateway(spec: dict) -> GatewayProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.helpers.offline_gateway_main",
        json.dumps(spec),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        line = (await process.stdout.readline()).decode()
    assert line.startswith("port "), f"the gateway did not start: {line!r}"
    return GatewayProcess(process, int(line.split()[1]))


async def stop_gateway(gateway: GatewayProcess) -> None:
    if gateway.process.returncode is None:
        gateway.process.terminate()
        try:
            async with asyncio.timeout(30):
                await gateway.process.wait()
        except TimeoutError:
            gateway.process.kill()
            await gateway.process.wait()


async def _settled_rss(gateway: GatewayProcess) -> int:
    """RSS after a few requests of each kind (the first ones load code and fill pools)."""
    for _ in range(5):
        await gateway.health_latency()
    return gateway.rss()


# ---- a sandbox floods clients that never read ------------------------------------------------------------


@pytest.fixture
async def flooding_sandbox() -> AsyncIterator[tuple[int, list[ServerConnection]]]:
    """A WebSocket upstream that sends 15 MiB messages for as long as the connection lasts."""
    connections: list[ServerConnection] = []

    async def flood(ws: ServerConnection) -> None:
        connections.append(ws)
        message = b"x" * FLOOD_MESSAGE
        while True:
            await ws.send(message)

    async with serve(flood, "127.0.0.1", 0, process_request=_process_request, max_size=None) as server:
        yield next(iter(server.sockets)).getsockname()[1], connections


async def _non_reading_client(port: int, path: str) -> asyncio.StreamWriter:
    """Completes a WebSocket handshake, then never reads again."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    writer.write(
        f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n".encode()
    )
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    return writer


async def test_two_non_reading_clients_of_a_flooding_sandbox(flooding_sandbox) -> None:
    flood_port, upstreams = flooding_sandbox
    gateway = await start_gateway({"sandboxes": {"kh-flood0000001": flood_port, "kh-other0000001": flood_port}})
    try:
        before = await _settled_rss(gateway)
        clients = [await _non_reading_client(gateway.port, "/kh-flood0000001/") for _ in range(2)]
        # Backpressure has reached the sandbox: each of its connections holds part of a 15 MiB message that not
        # even the kernel's socket buffers (a few MiB) could take, because the gateway stopped reading from it.
        async with asyncio.timeout(60):
            while len(upstreams) < 2 or min(u.transport.get_write_buffer_size() for u in upstreams) < MiB:
                await asyncio.sleep(0.05)
        peak = 0
        latencies = []
        for _ in range(10):  # sampled while the flood goes on
            peak = max(peak, gateway.rss())
            latencies.append(await gateway.health_latency())
            async with httpx.AsyncClient(timeout=10) as http:  # another sandbox, through the router
                assert (await http.get(f"{gateway.url}/kh-other0000001/alive")).status_code == 200
        print(
            f"gateway RSS {before / MiB:.0f} MiB before, {peak / MiB:.0f} MiB peak under the flood; "
            f"/health max {max(latencies) * 1000:.0f} ms"
        )
        assert peak - before <= RSS_BOUND
        assert max(latencies) < 1.0
        for client in clients:
            client.close()
    finally:
        await stop_gateway(gateway)


# ---- endless headers and slowloris ------------------------------------------------------------------------


async def _endless_header(port: int, stop: asyncio.Event, refusals: list[int]) -> None:
    """Streams one header without end; when the gateway refuses and closes, starts over."""
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\nx-endless: ")
        try:
            while not stop.is_set() and not reader.at_eof():
                writer.write(b"a" * 16384)
                await writer.drain()
                await asyncio.sleep(0)
                if reader._buffer:  # type: ignore[attr-defined]  # the refusal has arrived
                    break
        except (ConnectionError, OSError):
            pass
        if stop.is_set():
            writer.close()
            return
        try:
            answer = await reader.read()
        except (ConnectionError, OSError):
            answer = b""  # a reset can overtake the answer; the test counts the answers that arrived
        if answer:
            refusals.append(int(answer.split(b" ")[1]))
        writer.close()


async def test_endless_headers() -> None:
    gateway = await start_gateway({})
    try:
        before = await _settled_rss(gateway)
        stop, refusals = asyncio.Event(), []
        attackers = [asyncio.create_task(_endless_header(gateway.port, stop, refusals)) for _ in range(10)]
        latencies, peak = [], 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline or len(refusals) < 10:
            latencies.append(await gateway.health_latency())
            peak = max(peak, gateway.rss())
        stop.set()
        await asyncio.gather(*attackers)
        print(
            f"{len(refusals)} endless headers refused; /health max {max(latencies) * 1000:.0f} ms over "
            f"{len(latencies)}; RSS {before / MiB:.0f} -> {peak / MiB:.0f} MiB"
        )
        assert set(refusals) == {431}
        assert max(latencies) < 1.0
        assert peak - before <= RSS_BOUND
    finally:
        await stop_gateway(gateway)


async def test_five_hundred_slowloris_connections_are_closed_at_the_deadline() -> None:
    deadline_seconds = 3.0
    gateway = await start_gateway({"settings": {"head_timeout_seconds": deadline_seconds}})
    try:
        before = await _settled_rss(gateway)
        connections = []
        for _ in range(500):
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(b"GET /health HTTP/1.1\r\nx-slow: ")
            connections.append((reader, writer, time.monotonic()))

        async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opened: float) -> float:
            """One byte a second until the gateway closes the connection; returns how long it stayed open."""
            try:
                while not reader.at_eof():
                    writer.write(b"a")
                    try:
                        async with asyncio.timeout(1):
                            await reader.read()
                    except TimeoutError:
                        continue
            except (ConnectionError, OSError):
                pass
            return time.monotonic() - opened

        started = time.monotonic()
        closing = [asyncio.create_task(trickle(*connection)) for connection in connections]
        latencies = []
        while not all(task.done() for task in closing):
            latencies.append(await gateway.health_latency())
            if time.monotonic() - started > deadline_seconds + 10:
                break
        closed_after = [await task for task in closing]
        peak = gateway.rss()
        print(
            f"500 slowloris connections closed after {min(closed_after):.1f}-{max(closed_after):.1f} s; "
            f"/health max {max(latencies) * 1000:.0f} ms; RSS {before / MiB:.0f} -> {peak / MiB:.0f} MiB"
        )
        assert deadline_seconds - 0.5 < min(closed_after) and max(closed_after) < deadline_seconds + 2
        assert max(latencies) < 1.0
        for _, writer, _ in connections:
            writer.close()
    finally:
        await stop_gateway(gateway)
