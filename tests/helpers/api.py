"""Support for the gateway unit tests: real loopback servers, an upstream "agent server" and the
gateway app, both served by uvicorn on 127.0.0.1 in the test's event loop. No Kubernetes API is
involved: the gateway's watch caches are not started; they hold the objects the test puts in them."""

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from kubernetes_asyncio import client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from kubehands.api.gateway import Gateway
from kubehands.api.keys import Profile, build_key_secret, hash_key
from kubehands.api.main import create_app
from kubehands.api.settings import Settings
from kubehands.crd.model import DesiredState, Phase, PodStatus
from kubehands.crd.names import session_label
from kubehands.kube import Kube, TimeoutApiClient


async def _echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": [[k, v] for k, v in request.headers.items()],
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    )


async def _alive(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _stream(request: Request) -> Response:
    count = int(request.query_params.get("chunks", "10"))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(count):
            yield f"chunk-{i}\n".encode() * 1000

    return StreamingResponse(chunks(), media_type="text/plain", headers={"x-upstream": "yes"})


async def _ws_echo(websocket: WebSocket) -> None:
    protocols = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=protocols[0] if protocols else None)
    await websocket.send_json(
        {"path": websocket.url.path, "query": websocket.url.query, "headers": dict(websocket.headers)}
    )
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            if message["text"] == "close-please":
                await websocket.close(code=4001, reason="asked")
                return
            await websocket.send_text("echo:" + message["text"])
        elif message.get("bytes") is not None:
            await websocket.send_bytes(message["bytes"][::-1])


def upstream_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/alive", _alive),
            Route("/stream", _stream),
            WebSocketRoute("/ws", _ws_echo),
            WebSocketRoute("/{prefix:path}/ws", _ws_echo),
            Route("/{path:path}", _echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ]
    )


@asynccontextmanager
async def serve(app: Any, timeout: float = 10.0) -> AsyncIterator[int]:
    """Serve `app` with uvicorn on 127.0.0.1 (a free port) for the duration of the block."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + timeout
    while not server.started:
        if task.done():
            task.result()
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("uvicorn did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout)


def sandbox_object(
    runtime_id: str,
    tenant: str,
    session_id: str,
    port: int,
    state: DesiredState = DesiredState.RUNNING,
    ready: bool = True,
) -> dict[str, Any]:
    """A Sandbox as the operator leaves it once its pod is ready, with every port on `port`."""
    return {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": {
            "name": runtime_id,
            "namespace": "default",
            "uid": f"uid-{runtime_id}",
            "resourceVersion": "1",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"kubehands.dev/owner": tenant, "kubehands.dev/session": session_label(session_id)},
        },
        "spec": {
            "image": "example/agent:1",
            "state": state.value,
            "sessionID": session_id,
            "sessionKeySecretRef": {"name": f"{runtime_id}-session", "key": "session-api-key"},
            "ports": [{"name": n, "containerPort": port} for n in ("agent", "vscode", "work-1", "work-2")],
        },
        "status": (
            {"phase": Phase.RUNNING.value, "podStatus": PodStatus.READY.value, "podIP": "127.0.0.1",
             "podName": runtime_id, "observedGeneration": 1}
            if ready and state == DesiredState.RUNNING
            else {"phase": (Phase.PAUSED if state == DesiredState.PAUSED else Phase.STARTING).value,
                  "podStatus": PodStatus.NOT_FOUND.value, "observedGeneration": 1}
        ),
    }


def offline_gateway(settings: Settings, api_server: str = "http://127.0.0.1:9") -> Gateway:
    """A Gateway whose caches are filled by the test instead of a watch. By default no API server is
    behind it (nothing listens on port 9), so a call that reaches the API fails at once."""
    api = TimeoutApiClient(client.Configuration(host=api_server), settings.kube_request_timeout_seconds)
    http = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=5), trust_env=False)
    gateway = Gateway.assemble(settings, Kube.from_api(api), http)
    for reflector in (gateway.caches.sandboxes, gateway.caches.session_keys, gateway.caches.api_keys):
        reflector.synced.set()
    return gateway


def add_key(gateway: Gateway, name: str, raw: str, profile: Profile | None = None) -> None:
    secret = build_key_secret(name, hash_key(raw), profile or Profile(), gateway.settings.key_namespace)
    secret["metadata"]["resourceVersion"] = "1"
    gateway.caches.api_keys.upsert(json.loads(json.dumps(secret)))


@asynccontextmanager
async def serve_gateway(settings: Settings) -> AsyncIterator[tuple[Gateway, int]]:
    gateway = offline_gateway(settings)
    app = create_app(settings)
    app.state.gateway = gateway
    try:
        async with serve(app) as port:
            yield gateway, port
    finally:
        await gateway.activity.stop()
        await gateway.alive.stop()
        await gateway.upstream.close()
        await gateway.http.aclose()
        await gateway.kube.close()
