"""Readiness as the clients see it: a sandbox is `running` only once its agent server answered
`/alive` on the address the router forwards to. Checked once per pod (name, IP) and cached."""

import asyncio
import logging
from typing import Any

import httpx

from kubehands.api.cache import Caches
from kubehands.api.runtime import pod_identity
from kubehands.api.settings import Settings
from kubehands.api.urls import service_port, upstream_base
from kubehands.crd.constants import AGENT_PORT_NAME

log = logging.getLogger(__name__)


class AliveTracker:
    def __init__(self, settings: Settings, caches: Caches, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._caches = caches
        self._http = http
        self._ok: dict[str, tuple[str, str]] = {}  # runtime_id -> pod identity that answered /alive
        self._tasks: dict[str, asyncio.Task[None]] = {}
        caches.sandboxes.add_listener(self.on_event)

    def is_alive(self, sandbox: dict[str, Any] | None) -> bool:
        if not sandbox:
            return False
        identity = pod_identity(sandbox)
        return identity is not None and self._ok.get(sandbox["metadata"]["name"]) == identity

    def on_event(self, kind: str, sandbox: dict[str, Any]) -> None:
        name = sandbox["metadata"]["name"]
        identity = pod_identity(sandbox) if kind != "DELETED" else None
        if identity is None:
            self._ok.pop(name, None)
            return
        if self._ok.get(name) == identity:
            return
        self._ok.pop(name, None)
        task = self._tasks.get(name)
        if task is None or task.done():
            self._tasks[name] = asyncio.get_running_loop().create_task(
                self._probe(name), name=f"alive-{name}"
            )

    async def _probe(self, name: str) -> None:
        while True:
            sandbox = self._caches.sandbox(name)
            identity = pod_identity(sandbox) if sandbox else None
            if identity is None:
                return
            url = upstream_base(identity[1], service_port(sandbox, AGENT_PORT_NAME)) + "/alive"
            try:
                response = await self._http.get(url, timeout=self._settings.alive_timeout_seconds)
                if response.is_success:
                    self._ok[name] = identity
                    log.info("sandbox %s answers /alive", name)
                    self._caches.sandboxes.notify_waiters()
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(self._settings.alive_retry_seconds)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
