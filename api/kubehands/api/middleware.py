"""Middleware: request-header size limit (all traffic), control-API body limit, Prometheus request metrics."""

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubehands.api.observe import metrics
from kubehands.api.router import proxy

_BODY_METHODS = {"POST", "PUT", "PATCH"}


class HeaderLimitMiddleware:
    """431 `{"detail": ...}` when a request's header names and values add up to more than `max_bytes`.

    Outermost, so the router's traffic is covered too: the router copies every header upstream. uvicorn with
    httptools sets no limit of its own (a 1 MiB header reaches the app), and h11 answers a bare 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        size = sum(len(name) + len(value) for name, value in scope.get("headers", []))
        if size <= self.max_bytes:
            await self.app(scope, receive, send)
            return
        detail = f"request headers larger than {self.max_bytes} bytes"
        if scope["type"] == "websocket":
            message = await receive()
            if message["type"] == "websocket.connect":
                await proxy.reject_websocket(scope, send, 431, detail)
            return
        await proxy.send_json(send, 431, detail, [("connection", "close")])


class BodyLimitMiddleware:
    """413 `{"detail": ...}` for control-API bodies above `max_bytes` (the router is not affected:
    it sits outside this middleware and streams uploads of any size)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    if int(value) > self.max_bytes:
                        await self._reject(send)
                        return
                except ValueError:
                    pass
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.API_REQUESTS.labels(route, scope["method"], str(status)).inc()
            metrics.API_LATENCY.labels(route).observe(time.perf_counter() - started)
