"""The sandbox router: ASGI middleware in front of the control API.

Requests whose path (path mode), Host (subdomain mode) or gateway port (port mode) names a sandbox are
proxied to its pod; everything else falls through to the FastAPI app. The router authenticates nothing for
the sandbox: the agent server checks `X-Session-API-Key` (so `/alive`, `/health`, `/ready` pass without
one). But only a request that carries the sandbox's session key (`session_keys.py`) may wake it (resume it when paused,
wait for it while it starts) and counts as activity for the idle culler.
"""

import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from kubehands.api.errors import GatewayError, kube_error
from kubehands.api.observe import metrics
from kubehands.api.router import proxy
from kubehands.api.router.session_keys import carries_session_key
from kubehands.api.runtime import is_pool_member
from kubehands.crd.model import DesiredState
from kubehands.spec import urls

log = logging.getLogger(__name__)

WEBSOCKET_NEEDS_OUR_SERVER = (
    "this server does not relay WebSockets to sandboxes: serve the gateway with `kubehands gateway` "
    "(docs/gateway.md#connection-bounds)"
)


def _host(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"host":
            return str(value.decode("latin-1"))
    return None


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return str(raw.decode("latin-1") if raw else scope["path"])


class RouterMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = getattr(getattr(scope.get("app"), "state", None), "gateway", None)
        if scope["type"] not in ("http", "websocket") or gateway is None or not gateway.settings.enable_router:
            await self.app(scope, receive, send)
            return
        if gateway.settings.routing_mode == "port":
            await self._by_port(gateway, scope, receive, send)
            return
        target = urls.match(gateway.settings, _host(scope), _raw_path(scope))
        if target is None:
            await self.app(scope, receive, send)
            return
        await route(gateway, target, scope, receive, send)

    async def _by_port(self, gateway: Any, scope: Scope, receive: Receive, send: Send) -> None:
        """Port mode: the port a request came in on names the sandbox and its service; the path is the upstream's."""
        server = scope.get("server")
        local_port = server[1] if server else None
        matched = urls.match_port(gateway.settings, local_port)
        if matched is None:  # the control API's own port
            await self.app(scope, receive, send)
            return
        slot, service = matched
        found = gateway.caches.sandboxes_in_slot(slot)
        if len(found) > 1:  # only Sandboxes written outside the gateway can collide
            # The caller may be anyone: the names go to the gateway's log, for its operator, not to the answer.
            names = ", ".join(sorted(s["metadata"]["name"] for s in found))
            log.warning("sandboxes %s share port %s; delete all but one", names, local_port)
            await _deny(scope, send, 409, f"more than one sandbox has port {local_port}; the gateway's log names them")
            return
        runtime_id = found[0]["metadata"]["name"] if found else gateway.caches.claimed_in_slot(slot)
        if runtime_id is None:
            await _deny(scope, send, 404, f"no sandbox on port {local_port}")
            return
        await route(gateway, urls.Target(runtime_id, service, _raw_path(scope)), scope, receive, send)


async def _deny(
    scope: Scope, send: Send, status: int, detail: str, headers: list[tuple[str, str]] | None = None
) -> None:
    if scope["type"] == "websocket":
        await proxy.reject_websocket(scope, send, status, detail)
    else:
        await proxy.send_json(send, status, detail, headers)


def _error_answer(exc: Exception) -> tuple[int, str]:
    """(status, detail) of an exception raised while waking, as the control API would answer it."""
    if isinstance(exc, GatewayError):
        return exc.status_code, exc.detail
    mapped = kube_error(exc)
    if mapped is None:
        raise exc
    return mapped


async def route(gateway: Any, target: urls.Target, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":  # a server other than `kubehands gateway` (server/protocol.py)
        if (await receive())["type"] == "websocket.connect":
            await proxy.reject_websocket(scope, send, 501, WEBSOCKET_NEEDS_OUR_SERVER)
        metrics.PROXY_REQUESTS.labels(target.service, "websocket", "unsupported").inc()
        return
    kind = "websocket" if proxy.can_relay_upgrade(scope) else "http"
    outcome = await _route(gateway, target, scope, receive, send, kind)
    metrics.PROXY_REQUESTS.labels(target.service, kind, outcome).inc()


async def _route(gateway: Any, target: urls.Target, scope: Scope, receive: Receive, send: Send, kind: str) -> str:
    settings = gateway.settings
    caches = gateway.caches
    sandbox = caches.sandbox(target.runtime_id)
    if is_pool_member(sandbox):  # an unclaimed warm-pool member serves no session: it does not exist for clients
        await _deny(scope, send, 404, f"no sandbox {target.runtime_id}")
        return "not_found"
    if sandbox is None or sandbox["metadata"].get("deletionTimestamp"):
        if sandbox is None and caches.claim_for_runtime(target.runtime_id) is not None:
            await _deny(scope, send, 503, "the sandbox is starting", [("retry-after", "2")])
            return "starting"
        await _deny(scope, send, 404, f"no sandbox {target.runtime_id}")
        return "not_found"
    keyed = carries_session_key(scope, sandbox, lambda: caches.session_key(sandbox))
    paused = (sandbox.get("spec") or {}).get("state") == DesiredState.PAUSED
    if paused and not settings.wake_on_request:
        await _deny(scope, send, 503, "the sandbox is paused; POST /resume to resume it")
        return "paused"
    if not gateway.alive.is_alive(sandbox):
        if not settings.wake_on_request:
            await _deny(scope, send, 503, "the sandbox is starting", [("retry-after", "2")])
            return "starting"
        if not keyed:  # anonymous requests must not start pods, nor hold connections open waiting for one
            state = "paused" if paused else "starting"
            detail = f"the sandbox is {state}; only a request with its session key wakes it or waits for it"
            await _deny(scope, send, 503, detail, [("retry-after", "5" if paused else "2")])
            return state
        try:
            woken = await gateway.waker.wake(target.runtime_id, settings.wake_timeout_seconds)
        except Exception as exc:  # a limit, or the API server failing: an answer, never a 500
            status, detail = _error_answer(exc)
            if paused:
                metrics.WAKES.labels("limit" if status == 429 else "error").inc()
            headers = [("retry-after", "5")] if status == 503 else None
            await _deny(scope, send, status, detail, headers)
            return "wake_refused" if status == 429 else "wake_failed"
        if paused:
            metrics.WAKES.labels("ok" if woken else "timeout").inc()
        if woken is None:
            await _deny(scope, send, 503, "the sandbox did not become ready in time", [("retry-after", "5")])
            return "wake_timeout"
        sandbox = woken
    if keyed:  # only the sandbox's own clients keep it from being culled
        gateway.activity.touch(target.runtime_id)
    pod_ip, port = sandbox["status"]["podIP"], urls.service_port(sandbox, target.service)
    query = scope.get("query_string", b"").decode("latin-1")
    path_and_query = target.path + (f"?{query}" if query else "")
    with gateway.connections.hold(target.runtime_id) as admitted:
        if not admitted:
            await _deny(scope, send, 503, gateway.connections.refusal(target.runtime_id), [("retry-after", "2")])
            return "too_many_connections"
        if kind == "websocket":
            return await proxy.relay_upgrade(
                scope, send, pod_ip, port, path_and_query, settings.proxy_connect_timeout_seconds
            )
        return await proxy.proxy_http(
            scope, receive, send, gateway.upstream, urls.upstream_base(pod_ip, port) + path_and_query
        )
