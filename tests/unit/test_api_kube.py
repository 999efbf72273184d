"""The gateway's Kubernetes access: an API server that stalls or is gone answers 503 `{"detail": ...}`
within the request timeout, lastActivityTime writes go through the shared layer, and the gateway never
loads kopf."""

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from kubehands.api.main import create_app
from kubehands.api.router.activity import ActivityRecorder
from kubehands.api.settings import Settings
from kubehands.crd.times import parse_time, rfc3339
from tests.helpers.api import add_key, offline_gateway, sandbox_object

pytestmark = pytest.mark.unit

KEY = "khk_key-of-team-a"
RID = "kh-aaaaaaaaaaaa"


@asynccontextmanager
async def silent_api_server() -> AsyncIterator[str]:
    """A loopback "API server" that accepts connections and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def gateway_client(settings: Settings, api_server: str) -> AsyncIterator[httpx.AsyncClient]:
    gateway = offline_gateway(settings, api_server)
    add_key(gateway, "team-a", KEY)
    gateway.caches.sandboxes.upsert(sandbox_object(RID, "team-a", "S1", 1, ready=False))
    app = create_app(settings)
    app.state.gateway = gateway
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as http:
            yield http
    finally:
        await gateway.http.aclose()
        await gateway.kube.close()


async def test_a_stalled_api_server_is_503_after_the_request_timeout() -> None:
    settings = Settings(kube_request_timeout_seconds=0.5)
    async with silent_api_server() as url, gateway_client(settings, url) as http:
        started = time.monotonic()
        response = await http.post("/pause", json={"runtime_id": RID}, headers={"X-API-Key": KEY})
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json() == {"detail": "the Kubernetes API server is not reachable; retry shortly"}
    assert 0.4 < elapsed < 5  # the configured timeout, not kubernetes_asyncio's default of none


async def test_an_unreachable_api_server_is_503() -> None:
    async with gateway_client(Settings(), "http://127.0.0.1:9") as http:  # nothing listens on port 9
        response = await http.post("/stop", json={"runtime_id": RID}, headers={"X-API-Key": KEY})
    assert response.status_code == 503
    assert isinstance(response.json()["detail"], str)


def test_the_request_timeout_must_be_positive() -> None:
    assert Settings().kube_request_timeout_seconds == 10.0
    with pytest.raises(ValueError):
        Settings(kube_request_timeout_seconds=0)


class _RecordingKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    async def patch_sandbox_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((namespace, name, status))
        return {}


async def _settle(recorder: ActivityRecorder) -> None:
    await asyncio.gather(*recorder._tasks)


@pytest.mark.parametrize(
    ("age_seconds", "writes"),
    [
        (None, 1),
        ("unreadable", 1),  # replaced, never an error in the router
        (5, 0),  # another replica wrote it just now
        (3600, 1),
    ],
)
async def test_activity_writes_are_throttled(age_seconds: int | str | None, writes: int) -> None:
    settings = Settings(namespace="ns", activity_interval_seconds=30)
    gateway = offline_gateway(settings)
    sandbox = sandbox_object(RID, "team-a", "S1", 1)
    if isinstance(age_seconds, int):
        sandbox["status"]["lastActivityTime"] = rfc3339(datetime.now(UTC) - timedelta(seconds=age_seconds))
    elif age_seconds is not None:
        sandbox["status"]["lastActivityTime"] = age_seconds
    gateway.caches.sandboxes.upsert(sandbox)
    kube = _RecordingKube()
    recorder = ActivityRecorder(settings, gateway.caches, kube)  # type: ignore[arg-type]
    before = datetime.now(UTC).replace(microsecond=0)
    for _ in range(3):
        recorder.touch(RID)
        await _settle(recorder)
    assert len(kube.patches) == writes
    for namespace, name, status in kube.patches:
        assert (namespace, name) == ("ns", RID)
        written = parse_time(status["lastActivityTime"])
        assert written is not None and before <= written <= datetime.now(UTC)
        assert status["lastActivityTime"].endswith("Z")
    await gateway.http.aclose()
    await gateway.kube.close()


def test_the_gateway_does_not_load_kopf() -> None:
    code = "import sys, kubehands.api.main, kubehands.api.cli.keys; print('kopf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- every API-server failure is an answer, never a 500 ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [(404, 404), (409, 409), (422, 422), (400, 502), (401, 502), (403, 502), (500, 502), (429, 503), (503, 503),
     (504, 503)],
)
def test_api_errors_map_to_4xx_502_or_503(status: int, expected: int) -> None:
    from kubernetes_asyncio.client.exceptions import ApiException

    from kubehands.api.errors import kube_error

    mapped = kube_error(ApiException(status=status, reason="Reason"))
    assert mapped is not None and mapped[0] == expected
    for unreachable in (TimeoutError(), ConnectionRefusedError(), OSError("gone")):
        assert kube_error(unreachable) == (503, "the Kubernetes API server is not reachable; retry shortly")
    assert kube_error(ValueError("a bug")) is None  # not an API failure: not hidden


# ---- a router without Secrets -------------------------------------------------------------------------


async def test_a_router_without_the_control_api_watches_no_secrets() -> None:
    """The chart's router Deployment has no RBAC on Secrets: it must not start the session-key and API-key
    reflectors (they would fail for ever), and is ready once the Sandbox cache has synced."""
    from kubernetes_asyncio import client

    from kubehands.api.gateway import Gateway
    from kubehands.kube import Kube, TimeoutApiClient

    settings = Settings(enable_control_api=False)
    api = TimeoutApiClient(client.Configuration(host="http://127.0.0.1:9"), 1.0)
    gateway = Gateway.assemble(settings, Kube.from_api(api), httpx.AsyncClient())
    gateway.caches.start()
    app = create_app(settings)
    app.state.gateway = gateway
    try:
        assert gateway.caches.sandboxes._task is not None
        assert gateway.caches.session_keys._task is None and gateway.caches.api_keys._task is None
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as http:
            assert (await http.get("/health")).status_code == 503  # nothing listed yet
            gateway.caches.sandboxes.synced.set()  # what the first successful list of Sandboxes does
            assert (await http.get("/health")).json() == {"status": "ok", "cache_synced": True}
            assert (await http.post("/start", json={})).status_code == 404  # no control API here
    finally:
        await gateway.caches.stop()
        await gateway.http.aclose()
        await gateway.kube.close()
