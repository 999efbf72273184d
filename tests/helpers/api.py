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

from kubehands.api.cli.gateway import server_limits, uvicorn_options
from kubehands.api.gateway import Gateway
from kubehands.api.keys import build_key_secret, hash_key
from kubehands.api.main import create_app
from kubehands.api.settings import Settings
from kubehands.crd.constants import ANNOTATION_SESSION_KEY_SHA256
from kubehands.crd.model import DesiredState, Phase, PodStatus
from kubehands.crd.names import session_label
from kubehands.kube import Kube, TimeoutApiClient
from kubehands.spec.objects import build_session_secret
from kubehands.spec.profile import Profile


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


async def _ws_big(websocket: WebSocket) -> None:
    """A sandbox that answers with one message of `?bytes=N` bytes, then echoes message sizes."""
    await websocket.accept()
    await websocket.send_bytes(b"x" * int(websocket.query_params.get("bytes", "0")))
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        await websocket.send_text(str(len(message.get("bytes") or b"") + len(message.get("text") or "")))


def upstream_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/alive", _alive),
            Route("/stream", _stream),
            WebSocketRoute("/ws", _ws_echo),
            WebSocketRoute("/big-ws", _ws_big),
            WebSocketRoute("/{prefix:path}/ws", _ws_echo),
            Route("/{path:path}", _echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ]
    )


@asynccontextmanager
async def serve(app: Any, timeout: float = 10.0, **options: Any) -> AsyncIterator[int]:
    """Serve `app` with uvicorn on 127.0.0.1 (a free port) for the duration of the block; `options` are
    further uvicorn.Config settings (e.g. `kubehands gateway`'s own, `cli.uvicorn_options`)."""
    defaults = {"host": "127.0.0.1", "port": 0, "log_level": "warning", "ws": "websockets-sansio"}
    config = uvicorn.Config(app, **{**defaults, **options, "host": "127.0.0.1", "port": 0}, lifespan="off")
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
    session_key: str | None = None,
    failed: bool = False,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Sandbox as the operator leaves it once its pod is ready, with every port on `port`.

    `session_key`: the gateway's sha256 annotation of that key (what the router checks); `failed`: the pod
    crash-loops (`error`)."""
    notes = dict(annotations or {})
    if session_key is not None:
        notes[ANNOTATION_SESSION_KEY_SHA256] = hashlib.sha256(session_key.encode()).hexdigest()
    status: dict[str, Any] = (
        {"phase": Phase.RUNNING.value, "podStatus": PodStatus.READY.value, "podIP": "127.0.0.1",
         "podName": runtime_id, "observedGeneration": 1}
        if ready and state == DesiredState.RUNNING
        else {"phase": (Phase.PAUSED if state == DesiredState.PAUSED else Phase.STARTING).value,
              "podStatus": PodStatus.NOT_FOUND.value, "observedGeneration": 1}
    )
    if failed:
        status = {"phase": Phase.FAILED.value, "podStatus": PodStatus.CRASH_LOOP_BACK_OFF.value,
                  "podName": runtime_id, "observedGeneration": 1}
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
            "annotations": notes,
        },
        "spec": {
            "image": "example/agent:1",
            "state": state.value,
            "sessionID": session_id,
            "sessionKeySecretRef": {"name": f"{runtime_id}-session", "key": "session-api-key"},
            "ports": [{"name": n, "containerPort": port} for n in ("agent", "vscode", "work-1", "work-2")],
        },
        "status": status,
    }


def offline_gateway(settings: Settings, api_server: str = "http://127.0.0.1:9") -> Gateway:
    """A Gateway whose caches are filled by the test instead of a watch. By default no API server is
    behind it (nothing listens on port 9), so a call that reaches the API fails at once (503)."""
    api = TimeoutApiClient(client.Configuration(host=api_server), settings.kube_request_timeout_seconds)
    http = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=5), trust_env=False)
    gateway = Gateway.assemble(settings, Kube.from_api(api), http)
    for reflector in (gateway.caches.sandboxes, gateway.caches.session_keys, gateway.caches.api_keys):
        reflector.synced.set()
    return gateway


def add_session_secret(gateway: Gateway, runtime_id: str, tenant: str, session_id: str, key: str) -> None:
    """The session-key Secret `sandbox_object` names (`{runtime_id}-session`), as the cache holds it."""
    secret = build_session_secret(f"{runtime_id}-session", "default", tenant, session_id, runtime_id, key)
    secret["metadata"]["resourceVersion"] = "1"
    gateway.caches.session_keys.upsert(secret)


def add_key(gateway: Gateway, name: str, raw: str, profile: Profile | None = None) -> None:
    secret = build_key_secret(name, hash_key(raw), profile or Profile(), gateway.settings.key_namespace)
    secret["metadata"]["resourceVersion"] = "1"
    gateway.caches.api_keys.upsert(json.loads(json.dumps(secret)))


@asynccontextmanager
async def serve_gateway(
    settings: Settings, api_server: str = "http://127.0.0.1:9"
) -> AsyncIterator[tuple[Gateway, int]]:
    """An offline gateway served by uvicorn with `kubehands gateway`'s options (and its metrics endpoint, when
    `settings.gateway_metrics_port` is set)."""
    gateway = offline_gateway(settings, api_server)
    app = create_app(settings)
    app.state.gateway = gateway
    options = uvicorn_options("127.0.0.1", 0, "warning", limits=server_limits(settings))
    try:
        await gateway.serve_metrics()
        async with serve(app, **options) as port:
            yield gateway, port
    finally:
        await gateway.close()


@asynccontextmanager
async def serve_port_mode_gateway(
    settings: Settings, timeout: float = 10.0
) -> AsyncIterator[tuple[Gateway, int]]:
    """An offline gateway in port mode as `kubehands gateway` serves it: one server on the public port (a free one)
    and every sandbox port of `settings.sandbox_ports` (on 127.0.0.1, or each slot's loopback address)."""
    from kubehands.api.cli.gateway import listening_sockets
    from kubehands.spec.urls import sandbox_listen_addresses

    assert settings.routing_mode == "port"
    gateway = offline_gateway(settings)
    app = create_app(settings)
    app.state.gateway = gateway
    options = uvicorn_options("127.0.0.1", 0, "warning", limits=server_limits(settings))
    sockets = listening_sockets("127.0.0.1", [0, *sandbox_listen_addresses(settings, "127.0.0.1")])
    server = uvicorn.Server(uvicorn.Config(app, **options, lifespan="off"))
    try:
        await gateway.serve_metrics()
        task = asyncio.create_task(server.serve(sockets=sockets))
        async with asyncio.timeout(timeout):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        try:
            yield gateway, sockets[0].getsockname()[1]
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout)
    finally:
        for sock in sockets:
            sock.close()
        await gateway.close()


# ---- hostile /start requests ----------------------------------------------------------------------------

HOSTILE_IMAGE = "ghcr.io/openhands/agent-server:1.34.0-python"


def _body(**fields: Any) -> dict[str, Any]:
    return {"image": HOSTILE_IMAGE, "session_id": "hostile", "image_pull_policy": "Never", **fields}


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _nested(depth: int) -> bytes:
    return b'{"image": "python", "session_id": "n", "environment": ' + b"[" * depth + b"]" * depth + b"}"


# (id, body or a function making it, extra headers, which key: "good" | "none" | "wrong").
# Every one must be refused with a 4xx and a JSON `detail`, and nothing may be created. The runtime-class
# cases assume a gateway with runtime_class_map {"gvisor": "gvisor", "sysbox-runc": ""}.
HOSTILE_STARTS: list[tuple[str, Any, dict[str, str], str]] = [
    # root on request
    *[(f"{f}-{v}", _json(_body(**{f: v})), {}, "good") for f in ("run_as_user", "run_as_group", "fs_group")
      for v in (0, -1)],
    ("run_as_user-string-0", _json(_body(run_as_user="0")), {}, "good"),
    ("run_as_user-true", _json(_body(run_as_user=True)), {}, "good"),
    ("run_as_user-2^31", _json(_body(run_as_user=2**31)), {}, "good"),
    # environment
    ("env-10k-vars", lambda: _json(_body(environment={f"V{i}": "1" for i in range(10_000)})), {}, "good"),
    ("env-1MiB-value", lambda: _json(_body(environment={"BIG": "x" * (1024 * 1024)})), {}, "good"),
    ("env-200KiB-value", lambda: _json(_body(environment={"BIG": "x" * 200_000})), {}, "good"),
    ("env-dotdot-x", _json(_body(environment={"..x": "1"})), {}, "good"),
    ("env-dotdot", _json(_body(environment={"..": "1"})), {}, "good"),
    ("env-empty-name", _json(_body(environment={"": "1"})), {}, "good"),
    ("env-a=b", _json(_body(environment={"a=b": "1"})), {}, "good"),
    ("env-1-2", _json(_body(environment={"1 2": "1"})), {}, "good"),
    ("env-unicode", _json(_body(environment={"ÄPFEL": "1"})), {}, "good"),
    ("env-newline", _json(_body(environment={"A\nB": "1"})), {}, "good"),
    ("env-long-name", _json(_body(environment={"A" * 300: "1"})), {}, "good"),
    ("env-not-object", _json(_body(environment=["A=1"])), {}, "good"),
    ("env-nested-value", _json(_body(environment={"A": {"b": 1}})), {}, "good"),
    # working_dir
    ("workdir-relative", _json(_body(working_dir="workspace")), {}, "good"),
    ("workdir-traversal", _json(_body(working_dir="/workspace/../../etc")), {}, "good"),
    ("workdir-traversal-relative", _json(_body(working_dir="../../../../var/run")), {}, "good"),
    ("workdir-hostpath-ish", _json(_body(working_dir="hostPath:/var/run/docker.sock")), {}, "good"),
    ("workdir-windows", _json(_body(working_dir="C:\\Windows")), {}, "good"),
    ("workdir-nul", _json(_body(working_dir="/work\x00space")), {}, "good"),
    ("workdir-newline", _json(_body(working_dir="/work\nspace")), {}, "good"),
    ("workdir-huge", _json(_body(working_dir="/" + "a" * 5000)), {}, "good"),
    # runtime classes
    ("class-unknown", _json(_body(runtime_class="kata")), {}, "good"),
    ("class-case", _json(_body(runtime_class="GVISOR")), {}, "good"),
    ("class-space", _json(_body(runtime_class="gvisor ")), {}, "good"),
    ("class-traversal", _json(_body(runtime_class="../gvisor")), {}, "good"),
    ("class-long", _json(_body(runtime_class="g" * 300)), {}, "good"),
    ("class-number", _json(_body(runtime_class=5)), {}, "good"),
    ("class-list", _json(_body(runtime_class=["gvisor"])), {}, "good"),
    # resource_factor
    *[(f"factor-{v!r}", _json(_body(resource_factor=v)), {}, "good") for v in (0, -1, 3, 16, 10**6, 2**64)],
    ("factor-float", _json(_body(resource_factor=1.5)), {}, "good"),
    ("factor-float-integral", _json(_body(resource_factor=2.0)), {}, "good"),
    ("factor-string", _json(_body(resource_factor="2")), {}, "good"),
    ("factor-bool", _json(_body(resource_factor=True)), {}, "good"),
    # images
    ("image-invalid", _json(_body(image="Not A Valid Image")), {}, "good"),
    ("image-uppercase", _json(_body(image="UPPER/case")), {}, "good"),
    ("image-10KiB", _json(_body(image="a" * 10 * 1024)), {}, "good"),
    ("image-empty", _json(_body(image="")), {}, "good"),
    ("image-scheme", _json(_body(image="http://evil.example/x")), {}, "good"),
    ("image-missing", _json({"session_id": "hostile"}), {}, "good"),
    ("image-number", _json(_body(image=7)), {}, "good"),
    # session ids
    ("session-empty", _json(_body(session_id="")), {}, "good"),
    ("session-too-long", _json(_body(session_id="s" * 513)), {}, "good"),
    ("session-nonprintable", _json(_body(session_id="a\x00b")), {}, "good"),
    ("session-newline", _json(_body(session_id="a\nb")), {}, "good"),
    ("session-missing", _json({"image": HOSTILE_IMAGE}), {}, "good"),
    ("session-number", _json(_body(session_id=12)), {}, "good"),
    # commands
    ("command-number", _json(_body(command=5)), {}, "good"),
    ("command-object", _json(_body(command={"a": 1})), {}, "good"),
    ("command-mixed-list", _json(_body(command=["ls", 1])), {}, "good"),
    ("command-nested-list", _json(_body(command=[["ls"]])), {}, "good"),
    # other fields
    ("pull-policy-unknown", _json(_body(image_pull_policy="Sometimes")), {}, "good"),
    # bodies that are no start request
    ("body-10MiB", lambda: _json(_body(environment={"BIG": "x" * (10 * 1024 * 1024)})), {}, "good"),
    ("body-not-json", b"{not json", {}, "good"),
    ("body-array", _json([_body()]), {}, "good"),
    ("body-null", b"null", {}, "good"),
    ("body-number", b"42", {}, "good"),
    ("body-string", _json("start"), {}, "good"),
    ("body-empty", b"", {}, "good"),
    ("body-wrong-content-type", _json(_body()), {"Content-Type": "text/plain"}, "good"),
    ("body-form-content-type", b"image=python&session_id=x", {"Content-Type": "application/x-www-form-urlencoded"},
     "good"),
    ("body-duplicate-keys", b'{"image": "python", "session_id": "d", "run_as_user": 10001, "run_as_user": 0}', {},
     "good"),
    ("body-duplicate-session", b'{"image": "python", "session_id": "d", "session_id": "e"}', {}, "good"),
    ("body-deeply-nested", _nested(100_000), {}, "good"),
    ("body-nested-1000", _nested(1000), {}, "good"),
    ("body-invalid-utf8", b'{"image": "python", "session_id": "\xff\xfe"}', {}, "good"),
    ("body-nan", b'{"image": "python", "session_id": "n", "resource_factor": NaN}', {}, "good"),
    # headers and keys
    ("header-1MiB", _json(_body()), {"X-Big": "a" * (1024 * 1024)}, "good"),
    ("headers-many", _json(_body()), {f"X-H{i}": "v" * 100 for i in range(1000)}, "good"),
    ("key-missing", _json(_body()), {}, "none"),
    ("key-wrong", _json(_body()), {}, "wrong"),
    ("key-hash-of-a-key", _json(_body()), {}, "hash"),
    ("key-empty", _json(_body()), {"X-API-Key": ""}, "none"),
    ("key-latin1", _json(_body()), {"X-API-Key": b"khk_\xe9"}, "none"),  # type: ignore[dict-item]
    ("key-10KiB", _json(_body()), {"X-API-Key": "k" * 10 * 1024}, "none"),
]


def hostile_request(case: tuple[str, Any, dict[str, str], str], key: str) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a HOSTILE_STARTS case for a gateway whose good key is `key`."""
    _, body, extra, which = case
    headers = {"Content-Type": "application/json"}
    if which == "good":
        headers["X-API-Key"] = key
    elif which == "wrong":
        headers["X-API-Key"] = "khk_" + "A" * 43
    elif which == "hash":
        headers["X-API-Key"] = hash_key(key)
    headers.update(extra)
    return (body() if callable(body) else body), headers
