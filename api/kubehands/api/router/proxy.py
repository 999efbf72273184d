"""Streaming HTTP proxying and WebSocket relaying to sandbox pods (raw ASGI, no buffering).

Hop-by-hop headers and `X-API-Key` (the runtime-API key, which V0 sends to the sandbox too) are
removed; `X-Session-API-Key` and everything else pass through.
"""

import json
import logging
from collections.abc import AsyncIterator, Iterable

import aiohttp
from starlette.types import Receive, Scope, Send
from yarl import URL

from kubehands.api.router.upstream import Upstream
from kubehands.api.server import tunnel
from kubehands.api.server.protocol import UPGRADE_EXTENSION

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
REQUEST_ONLY_STRIPPED = frozenset({"x-api-key"})


def _connection_listed(headers: Iterable[tuple[str, str]]) -> set[str]:
    listed: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            listed.update(token.strip().lower() for token in value.split(",") if token.strip())
    return listed


def filter_request_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    headers = list(headers)
    drop = HOP_BY_HOP | REQUEST_ONLY_STRIPPED | _connection_listed(headers)
    return [(k, v) for k, v in headers if k.lower() not in drop]


def filter_response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    headers = list(headers)
    drop = HOP_BY_HOP | _connection_listed(headers)
    return [(k, v) for k, v in headers if k.lower() not in drop]


def scope_headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])]


def forwarded_headers(scope: Scope) -> list[tuple[str, str]]:
    client = scope.get("client")
    headers = {k.lower(): v for k, v in scope_headers(scope)}
    out: list[tuple[str, str]] = []
    if client:
        prior = headers.get("x-forwarded-for")
        out.append(("x-forwarded-for", f"{prior}, {client[0]}" if prior else str(client[0])))
    scheme = str(scope.get("scheme", "http"))
    out.append(("x-forwarded-proto", {"ws": "http", "wss": "https"}.get(scheme, scheme)))
    if "host" in headers:
        out.append(("x-forwarded-host", headers["host"]))
    return out


async def send_json(send: Send, status: int, detail: str, headers: list[tuple[str, str]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers or []]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def proxy_http(scope: Scope, receive: Receive, send: Send, upstream: Upstream, url: str) -> str:
    """Forward one HTTP request to `url`, streaming both bodies. Returns an outcome for metrics."""
    headers = [(k, v) for k, v in filter_request_headers(scope_headers(scope)) if k.lower() != "x-forwarded-for"]
    headers += forwarded_headers(scope)
    has_body = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in scope_headers(scope))
    try:
        response = await upstream.session().request(
            scope["method"],
            URL(url, encoded=True),
            headers=headers,
            data=_request_body(receive) if has_body else None,
            allow_redirects=False,
        )
    except TimeoutError:
        await send_json(send, 504, "the sandbox did not answer in time")
        return "timeout"
    except aiohttp.ClientError as exc:
        log.debug("upstream %s failed: %s", url, exc)
        await send_json(send, 502, "the sandbox is not reachable")
        return "unreachable"
    try:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in filter_response_headers(
                        (k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers
                    )
                ],
            }
        )
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except (aiohttp.ClientError, TimeoutError) as exc:  # the upstream broke mid-body: nothing else can be sent
        log.debug("upstream %s broke mid-response: %s", url, exc)
        return "broken"
    finally:
        response.release()
    return "ok"


def upgrade_request_head(scope: Scope, host: str, port: int, path_and_query: str) -> bytes:
    """The client's upgrade request as the sandbox gets it: the WebSocket handshake headers (key, version,
    subprotocols, extensions) pass through unchanged, so the two ends negotiate with each other."""
    netloc = f"[{host}]" if ":" in host else host
    upgrade = next((v for k, v in scope_headers(scope) if k.lower() == "upgrade"), "websocket")
    lines = [
        f"{scope['method']} {path_and_query} HTTP/1.1",
        f"host: {netloc}:{port}",
        "connection: Upgrade",
        f"upgrade: {upgrade}",
    ]
    lines += [
        f"{k}: {v}"
        for k, v in filter_request_headers(scope_headers(scope))
        if k.lower() not in ("host", "x-forwarded-for")
    ]
    lines += [f"{k}: {v}" for k, v in forwarded_headers(scope)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def can_relay_upgrade(scope: Scope) -> bool:
    return UPGRADE_EXTENSION in (scope.get("extensions") or {})


async def relay_upgrade(scope: Scope, send: Send, host: str, port: int, path_and_query: str, timeout: float) -> str:
    """Relay a WebSocket upgrade to the sandbox and, once it answers 101, the connection's bytes
    (server/tunnel.py). Any other answer of the sandbox reaches the client as an HTTP status."""
    try:
        upstream, answer = await tunnel.open_upstream(
            host, port, upgrade_request_head(scope, host, port, path_and_query), timeout
        )
    except TimeoutError:
        await send_json(send, 504, "the sandbox did not answer in time")
        return "timeout"
    except (OSError, tunnel.HandshakeFailed) as exc:
        log.debug("websocket upstream %s:%s failed: %s", host, port, exc)
        await send_json(send, 502, "the sandbox is not reachable")
        return "unreachable"
    if answer.status != 101:
        assert upstream.transport is not None
        upstream.transport.close()
        await send_json(send, answer.status, "the sandbox refused the WebSocket")
        return "refused"
    client = scope["extensions"][UPGRADE_EXTENSION]["take_over"]()
    pending = upstream.take_pending()
    relay = tunnel.Tunnel(client.transport, upstream)
    client.transport.write(answer.head + answer.rest + pending)
    if client.early:
        relay.data_received(client.early)
    client.attach(relay)
    try:
        await relay.closed
    finally:
        relay.shutdown()  # a no-op when both ends closed; ends them when the task is cancelled
    return "ok"


async def reject_websocket(scope: Scope, send: Send, status: int, detail: str) -> None:
    """Refuse a WebSocket handshake: a real HTTP status with the ASGI denial-response extension,
    else a close (which servers turn into 403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008 if status < 500 else 1011})
