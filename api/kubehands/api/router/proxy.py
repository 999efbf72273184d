"""Streaming HTTP and WebSocket proxying to sandbox pods (raw ASGI, no buffering).

Hop-by-hop headers and `X-API-Key` (the runtime-API key, which V0 sends to the sandbox too) are
removed; `X-Session-API-Key` and everything else pass through.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable

import aiohttp
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from yarl import URL

from kubehands.api.router.upstream import Upstream

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
MESSAGE_TOO_BIG = 1009  # WebSocket close code
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "host",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)


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


async def send_json(
    send: Send, status: int, detail: str, headers: list[tuple[str, str]] | None = None
) -> None:
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
    headers = [
        (k, v) for k, v in filter_request_headers(scope_headers(scope)) if k.lower() != "x-forwarded-for"
    ]
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


def _ws_headers(scope: Scope) -> tuple[list[tuple[str, str]], list[str]]:
    raw = scope_headers(scope)
    protocols = [
        p.strip() for k, v in raw if k.lower() == "sec-websocket-protocol" for p in v.split(",") if p.strip()
    ]
    keep = [
        (k, v)
        for k, v in filter_request_headers(raw)
        if k.lower() not in WEBSOCKET_HANDSHAKE and k.lower() != "x-forwarded-for"
    ]
    return keep + forwarded_headers(scope), protocols


async def _client_to_upstream(receive: Receive, upstream: ClientConnection) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "websocket.receive":
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])
        elif message["type"] == "websocket.disconnect":
            await upstream.close(code=message.get("code", 1000) or 1000)
            return


async def _upstream_to_client(send: Send, upstream: ClientConnection) -> None:
    too_big = False
    try:
        async for data in upstream:
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": data})
    except ConnectionClosed as exc:
        # The sandbox sent a message above max_size: the client library refused it (closing with 1009)
        # before holding it in memory. The client learns why, with the same code.
        too_big = exc.sent is not None and exc.sent.code == MESSAGE_TOO_BIG
    if too_big:
        code, reason = MESSAGE_TOO_BIG, "the sandbox sent a message larger than the gateway relays"
    else:
        code, reason = upstream.close_code or 1000, upstream.close_reason or ""
    await send({"type": "websocket.close", "code": 1000 if code in (1005, 1006) else code, "reason": reason})


async def proxy_websocket(
    scope: Scope, receive: Receive, send: Send, url: str, open_timeout: float, max_size: int
) -> str:
    """Connect upstream first, then accept the client with the upstream's subprotocol, then pump.
    The caller has already received the client's `websocket.connect` message.

    `max_size` bounds one message from the sandbox: a sandbox runs untrusted code, and the gateway is
    shared, so one huge message must end that connection (1009), not exhaust the gateway's memory. The
    other direction is bounded by the server (`kubehands gateway` gives uvicorn the same ws_max_size)."""
    headers, protocols = _ws_headers(scope)
    try:
        upstream = await connect(
            url,
            additional_headers=headers,
            subprotocols=protocols or None,  # type: ignore[arg-type]
            open_timeout=open_timeout,
            max_size=max_size,
            ping_interval=None,
            compression=None,
        )
    except InvalidStatus as exc:
        await reject_websocket(scope, send, exc.response.status_code, "the sandbox refused the WebSocket")
        return "refused"
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        log.debug("websocket upstream %s failed: %s", url, exc)
        await reject_websocket(scope, send, 502, "the sandbox is not reachable")
        return "unreachable"
    async with upstream:
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol, "headers": []})
        pumps = [
            asyncio.create_task(_client_to_upstream(receive, upstream)),
            asyncio.create_task(_upstream_to_client(send, upstream)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
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
