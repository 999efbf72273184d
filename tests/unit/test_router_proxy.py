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
from kubehands.crd.model import DesiredState
from kubehands.spec.urls import is_runtime_id
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


# ---- wake and activity only for the sandbox's own clients ------------------------------------------

SESSION_KEY = "sk-of-the-sandbox"
PAUSED_RID = "kh-paused000001"


def _keyed_requests() -> list[tuple[str, dict[str, str]]]:
    """Every way the clients carry the session key: (path suffix, headers)."""
    return [
        ("/alive", {"X-Session-API-Key": SESSION_KEY}),  # agent-server calls
        (f"/vscode/?tkn={SESSION_KEY}", {}),  # VS Code's first load
        (f"/sockets/events/c1?session_api_key={SESSION_KEY}", {}),  # browser WebSockets
        ("/vscode/static/x.js", {"Cookie": f"other=1; vscode-tkn={SESSION_KEY}"}),  # VS Code afterwards
    ]


@pytest.fixture
async def paused_gateway(upstream_port: int):
    settings = Settings(activity_interval_seconds=3600, wake_timeout_seconds=5)
    async with serve_gateway(settings) as (gateway, port):
        gateway.caches.sandboxes.upsert(
            sandbox_object(PAUSED_RID, TENANT, "sp", upstream_port, state=DesiredState.PAUSED, session_key=SESSION_KEY)
        )
        yield gateway, port


@pytest.mark.parametrize(
    ("suffix", "headers"),
    [
        ("/alive", {}),
        ("/alive", {"X-Session-API-Key": "not-the-key"}),
        ("/alive?tkn=wrong&session_api_key=", {"Cookie": "vscode-tkn=wrong"}),
        ("/alive", {"X-API-Key": SESSION_KEY}),  # the runtime-API header is not the session key
    ],
)
async def test_a_request_without_the_session_key_never_wakes_a_paused_sandbox(
    paused_gateway, suffix: str, headers: dict[str, str]
) -> None:
    gateway, port = paused_gateway
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        response = await http.get(f"/{PAUSED_RID}{suffix}", headers=headers)
    assert response.status_code == 503
    assert "session key" in response.json()["detail"]
    assert int(response.headers["retry-after"]) > 0
    assert gateway.caches.sandbox(PAUSED_RID)["spec"]["state"] == "Paused"
    assert gateway.activity._last == {}  # no activity either
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{port}/{PAUSED_RID}/sockets/events/c1"):
            pass
    assert refused.value.response.status_code == 503


@pytest.mark.parametrize(("suffix", "headers"), _keyed_requests())
async def test_a_request_with_the_session_key_wakes_the_sandbox(
    paused_gateway, suffix: str, headers: dict[str, str]
) -> None:
    """The wake is attempted (no API server is behind this gateway, so the resume itself fails: a 503 that
    says so, never a 500)."""
    _, port = paused_gateway
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        response = await http.get(f"/{PAUSED_RID}{suffix}", headers=headers)
    assert response.status_code == 503
    assert response.json() == {"detail": "the Kubernetes API server is not reachable; retry shortly"}


async def test_a_sandbox_without_the_digest_is_checked_against_its_secret(upstream_port: int) -> None:
    """Sandboxes created before the annotation: the session-key Secret decides where the gateway has it;
    a router without the control API (and without Secrets) never wakes them."""
    from tests.helpers.api import add_session_secret

    for control_api, expected in ((True, "the Kubernetes API server is not reachable"), (False, "session key")):
        settings = Settings(activity_interval_seconds=3600, enable_control_api=control_api)
        async with serve_gateway(settings) as (gateway, port):
            gateway.caches.sandboxes.upsert(
                sandbox_object(PAUSED_RID, TENANT, "sp", upstream_port, state=DesiredState.PAUSED)
            )
            if control_api:
                add_session_secret(gateway, PAUSED_RID, TENANT, "sp", SESSION_KEY)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                keyed = await http.get(f"/{PAUSED_RID}/alive", headers={"X-Session-API-Key": SESSION_KEY})
                wrong = await http.get(f"/{PAUSED_RID}/alive", headers={"X-Session-API-Key": "nope"})
        assert keyed.status_code == 503 and expected in keyed.json()["detail"], control_api
        assert wrong.status_code == 503 and "session key" in wrong.json()["detail"]


async def test_only_requests_with_the_session_key_count_as_activity(upstream_port: int) -> None:
    settings = Settings(activity_interval_seconds=3600)
    async with serve_gateway(settings) as (gateway, port):
        gateway.caches.sandboxes.upsert(sandbox_object(RID, TENANT, "s1", upstream_port, session_key=SESSION_KEY))
        await _ready(gateway, RID)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for path in ("/alive", "/health", "/api/x", "/vscode/?tkn=guess"):
                assert (await http.get(f"/{RID}{path}")).status_code == 200  # still proxied
            assert gateway.activity._last == {}
            keyed = await http.get(f"/{RID}/api/x", headers={"X-Session-API-Key": SESSION_KEY})
        assert keyed.status_code == 200
        assert list(gateway.activity._last) == [RID]


async def test_a_wake_over_the_owners_limit_is_429(upstream_port: int) -> None:
    """Resuming adds a sandbox that holds a pod: the owner's limit (here from the annotation the control API
    wrote, as a router without API keys reads it) is checked first. Starting and failed sandboxes count."""
    settings = Settings(activity_interval_seconds=3600, enable_control_api=False)
    async with serve_gateway(settings) as (gateway, port):
        gateway.caches.sandboxes.upsert(
            sandbox_object(
                PAUSED_RID,
                TENANT,
                "sp",
                upstream_port,
                state=DesiredState.PAUSED,
                session_key=SESSION_KEY,
                annotations={"kubehands.dev/max-running": "2"},
            )
        )
        gateway.caches.sandboxes.upsert(sandbox_object("kh-starting00001", TENANT, "s2", 1, ready=False))
        gateway.caches.sandboxes.upsert(sandbox_object("kh-failed000001", TENANT, "s3", 1, failed=True))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await http.get(f"/{PAUSED_RID}/alive", headers={"X-Session-API-Key": SESSION_KEY})
            assert response.status_code == 429
            assert "limit" in response.json()["detail"]
            assert gateway.caches.sandbox(PAUSED_RID)["spec"]["state"] == "Paused"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    f"ws://127.0.0.1:{port}/{PAUSED_RID}/sockets/events/c1?session_api_key={SESSION_KEY}"
                ):
                    pass
            assert refused.value.response.status_code == 429
            # another tenant's sandboxes do not count
            gateway.caches.sandboxes.discard("kh-failed000001")
            gateway.caches.sandboxes.upsert(sandbox_object("kh-failed000001", "team-b", "s3", 1, failed=True))
            response = await http.get(f"/{PAUSED_RID}/alive", headers={"X-Session-API-Key": SESSION_KEY})
        assert response.status_code == 503 and "not reachable" in response.json()["detail"]


async def test_an_api_server_that_stalls_during_a_wake_is_503(upstream_port: int) -> None:
    from tests.unit.test_api_kube import silent_api_server

    settings = Settings(activity_interval_seconds=3600, kube_request_timeout_seconds=0.5)
    async with silent_api_server() as api, serve_gateway(settings, api) as (gateway, port):
        gateway.caches.sandboxes.upsert(
            sandbox_object(PAUSED_RID, TENANT, "sp", upstream_port, state=DesiredState.PAUSED, session_key=SESSION_KEY)
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            response = await http.get(f"/{PAUSED_RID}/alive", headers={"X-Session-API-Key": SESSION_KEY})
            assert (await http.get("/health")).status_code == 200  # and the gateway goes on serving
    assert response.status_code == 503
    assert response.json() == {"detail": "the Kubernetes API server is not reachable; retry shortly"}
    assert response.headers["retry-after"]


# ---- WebSocket bytes and bounded heads -------------------------------------------------------------


async def test_websocket_messages_pass_as_bytes_whatever_their_size(path_gateway) -> None:
    """The router relays an upgraded connection's bytes: it holds no message, so it sets no message limit of its
    own (the two ends do)."""
    _, port = path_gateway
    async with connect(f"ws://127.0.0.1:{port}/{RID}/big-ws?bytes={15 * 1024 * 1024}", max_size=None) as ws:
        assert await ws.recv() == b"x" * (15 * 1024 * 1024)
        await ws.send(b"y" * (15 * 1024 * 1024))
        assert await ws.recv() == str(15 * 1024 * 1024)


def test_kubehands_gateway_serves_with_its_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import uvicorn

    from kubehands.api import settings
    from kubehands.api.cli import gateway as cli
    from kubehands.api.server.protocol import GatewayHttpProtocol, ServerLimits

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options, app=app))
    monkeypatch.setenv("KUBEHANDS_MAX_HEADER_BYTES", "4096")
    monkeypatch.setenv("KUBEHANDS_HEAD_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("KUBEHANDS_MAX_CONNECTIONS_PER_PORT", "77")
    settings.get_settings.cache_clear()
    try:
        args = argparse.Namespace(host="127.0.0.1", port=1, log_level="info", proxy_headers=False)
        assert cli.run(args) == 0
    finally:
        settings.get_settings.cache_clear()
    assert issubclass(seen["http"], GatewayHttpProtocol) and seen["ws"] == "none" and seen["factory"] is True
    assert seen["http"].limits == ServerLimits(max_head_bytes=4096, head_timeout_seconds=3, max_connections_per_port=77)


async def test_huge_request_headers_are_431_everywhere(path_gateway) -> None:
    """uvicorn with httptools passes a 1 MiB header to the app; the gateway refuses it, on the control API
    and on the router (which would copy it to the sandbox), with JSON."""
    _, port = path_gateway
    big = {"X-Big": "a" * (1024 * 1024)}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for method, path in (("GET", "/health"), ("POST", "/start"), ("GET", f"/{RID}/alive")):
            response = await http.request(method, path, headers=big)
            assert response.status_code == 431, path
            assert "header" in response.json()["detail"]
        many = {f"X-H{i}": "v" * 100 for i in range(700)}  # many small ones add up too
        assert (await http.get(f"/{RID}/alive", headers=many)).status_code == 431
        assert (await http.get(f"/{RID}/alive", headers={"X-Fine": "a" * 30_000})).status_code == 200
    # A WebSocket handshake is a request like any other: the same bound, the same JSON answer.
    for headers in (big, many):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{port}/{RID}/ws", additional_headers=headers, open_timeout=10):
                pass
        assert refused.value.response.status_code == 431
        assert "head" in json.loads(refused.value.response.body)["detail"]
    fine = {f"X-Line-{i}": "a" * 7_000 for i in range(5)}  # (the upstream's WebSocket library allows 8 KiB a line)
    async with connect(f"ws://127.0.0.1:{port}/{RID}/ws", additional_headers=fine) as ws:
        assert json.loads(await ws.recv())["path"] == "/ws"
