"""The router against a real upstream on 127.0.0.1: prefix stripping, sibling ports, streaming in
both directions, header filtering, WebSockets, and the paused/unknown/starting answers."""

import hashlib
import json
import os
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kubehands.api.settings import Settings
from kubehands.api.urls import is_runtime_id
from kubehands.crd.model import DesiredState
from tests.helpers.api import sandbox_object, serve, serve_gateway, upstream_app

pytestmark = pytest.mark.unit

RID = "kh-abcdefghij12"
TENANT = "team-a"


def _headers(echo: dict) -> dict[str, str]:
    return dict(echo["headers"])


@pytest.fixture
async def upstream_port() -> AsyncIterator[int]:
    async with serve(upstream_app()) as port:
        yield port


async def _ready(gateway, rid: str) -> None:
    """Wait (with a deadline) until the gateway's /alive check of the sandbox has passed."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + 10
    while not gateway.alive.is_alive(gateway.caches.sandbox(rid)):
        assert asyncio.get_running_loop().time() < deadline, "the /alive check never passed"
        await gateway.caches.sandboxes.wait_changed(0.5)


@pytest.fixture
async def path_gateway(upstream_port: int):
    settings = Settings(public_url="http://127.0.0.1:1", activity_interval_seconds=3600)
    async with serve_gateway(settings) as (gateway, port):
        gateway.caches.sandboxes.upsert(sandbox_object(RID, TENANT, "s1", upstream_port))
        await _ready(gateway, RID)
        yield gateway, port


async def test_runtime_id_shape() -> None:
    assert is_runtime_id(RID)


async def test_path_mode_strips_prefix_and_filters_headers(path_gateway) -> None:
    _, port = path_gateway
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        response = await http.get(
            f"/{RID}/api/conversations/search?limit=5",
            headers={
                "X-Session-API-Key": "sk",
                "X-API-Key": "runtime-api-key",
                "Connection": "keep-alive, X-Drop-Me",
                "X-Drop-Me": "1",
                "Proxy-Authorization": "secret",
            },
        )
    assert response.status_code == 200
    echo = response.json()
    headers = _headers(echo)
    assert echo["path"] == "/api/conversations/search"
    assert echo["query"] == "limit=5"
    assert headers["x-session-api-key"] == "sk"
    for dropped in ("x-api-key", "x-drop-me", "proxy-authorization"):
        assert dropped not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{port}"


async def test_path_mode_root_and_alive(path_gateway) -> None:
    _, port = path_gateway
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get(f"/{RID}")).json()["path"] == "/"
        alive = await http.get(f"/{RID}/alive")
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        (f"/{RID}/work-1/app/x", "/app/x"),
        (f"/{RID}/work-2", "/"),
        (f"/{RID}/vscode/static/a.js", f"/{RID}/vscode/static/a.js"),  # base path kept for VS Code
        (f"/{RID}/vscode/connection_token", "/vscode/connection_token"),  # V0's token: agent server
    ],
)
async def test_path_mode_services(path_gateway, path: str, upstream_path: str) -> None:
    _, port = path_gateway
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        response = await http.get(path)
    assert response.status_code == 200
    assert response.json()["path"] == upstream_path


async def test_streams_large_upload_and_download(path_gateway) -> None:
    _, port = path_gateway
    payload = os.urandom(5 * 1024 * 1024)  # above the control API's 1 MiB limit: the router has none

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        upload = await http.post(f"/{RID}/api/file/upload", content=body())
        assert upload.status_code == 200
        assert upload.json()["length"] == len(payload)
        assert upload.json()["sha256"] == hashlib.sha256(payload).hexdigest()
        async with http.stream("GET", f"/{RID}/stream", params={"chunks": "50"}) as response:
            assert response.headers["x-upstream"] == "yes"
            received = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert received == b"".join(f"chunk-{i}\n".encode() * 1000 for i in range(50))


async def test_websocket_both_directions(path_gateway) -> None:
    _, port = path_gateway
    async with connect(
        f"ws://127.0.0.1:{port}/{RID}/sockets/ws?session_api_key=k",
        additional_headers={"X-Session-API-Key": "sk", "X-API-Key": "nope"},
        subprotocols=["chat"],  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "chat"
        hello = json.loads(await ws.recv())
        assert hello["path"] == "/sockets/ws"
        assert hello["query"] == "session_api_key=k"
        assert hello["headers"]["x-session-api-key"] == "sk"
        assert "x-api-key" not in hello["headers"]
        await ws.send("ping")
        assert await ws.recv() == "echo:ping"
        await ws.send(b"\x01\x02\x03")
        assert await ws.recv() == b"\x03\x02\x01"
        await ws.send("close-please")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


async def test_unknown_runtime_is_404(path_gateway) -> None:
    _, port = path_gateway
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        response = await http.get("/kh-zzzzzzzzzzzz/alive")
    assert response.status_code == 404
    assert "detail" in response.json()


async def test_not_a_runtime_path_reaches_the_control_api(path_gateway) -> None:
    _, port = path_gateway
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/kh-short/alive")).status_code == 404


async def test_paused_sandbox_answers_503_without_wake(upstream_port: int) -> None:
    settings = Settings(wake_on_request=False, activity_interval_seconds=3600)
    async with serve_gateway(settings) as (gateway, port):
        gateway.caches.sandboxes.upsert(sandbox_object(RID, TENANT, "s1", upstream_port, state=DesiredState.PAUSED))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await http.get(f"/{RID}/alive")
        assert response.status_code == 503
        assert "paused" in response.json()["detail"]
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{port}/{RID}/ws"):
                pass
        assert refused.value.response.status_code == 503


async def test_starting_sandbox_answers_503_without_wake(upstream_port: int) -> None:
    settings = Settings(wake_on_request=False, activity_interval_seconds=3600)
    async with serve_gateway(settings) as (gateway, port):
        gateway.caches.sandboxes.upsert(sandbox_object(RID, TENANT, "s1", upstream_port, ready=False))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await http.get(f"/{RID}/alive")
        assert response.status_code == 503
        assert response.headers["retry-after"]


async def test_subdomain_mode_routes_by_host(upstream_port: int) -> None:
    settings = Settings(routing_mode="subdomain", domain="sbx.example.test", activity_interval_seconds=3600)
    async with serve_gateway(settings) as (gateway, port):
        gateway.caches.sandboxes.upsert(sandbox_object(RID, TENANT, "s1", upstream_port))
        await _ready(gateway, RID)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            agent = await http.get("/api/x", headers={"Host": f"{RID}.sbx.example.test"})
            vscode = await http.get("/?tkn=1", headers={"Host": f"vscode-{RID}.sbx.example.test:443"})
            other = await http.get("/health", headers={"Host": "gateway.example.test"})
        assert agent.json()["path"] == "/api/x"
        assert vscode.json()["path"] == "/" and vscode.json()["query"] == "tkn=1"
        assert other.status_code == 200
