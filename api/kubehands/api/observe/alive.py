"""Readiness as the clients see it: a sandbox is `running` only once its agent server answered
`/alive` on the address the router forwards to. Checked once per pod (name, IP) and cached."""

import asyncio
import logging
from typing import Any

import httpx

from kubehands.api.observe.caches import Caches
from kubehands.api.runtime import pod_identity
from kubehands.api.settings import Settings
from kubehands.crd.constants import AGENT_PORT_NAME
from kubehands.spec.urls import service_port, upstream_base

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

    def confirm(self, sandbox: dict[str, Any], pod_ip: str) -> bool:
        """Record that the agent server at `pod_ip` answered (a warm start's POST /api/init said `ready`), when that
        is the address the router forwards `sandbox` to: it is then alive without a probe. Whether it is now."""
        identity = pod_identity(sandbox)
        if identity is None or identity[1] != pod_ip:
            return False
        self._ok[sandbox["metadata"]["name"]] = identity
        return True

    def on_event(self, kind: str, sandbox: dict[str, Any]) -> None:
        name = sandbox["metadata"]["name"]
        if kind == "DELETED":  # forget the sandbox: these maps must not grow with every sandbox ever seen
            self._ok.pop(name, None)
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
            return
        identity = pod_identity(sandbox)
        if identity is None:
            self._ok.pop(name, None)
            return
        if self._ok.get(name) == identity:
            return
        self._ok.pop(name, None)
        task = self._tasks.get(name)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._probe(name), name=f"alive-{name}")
            self._tasks[name] = task
            task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        name = task.get_name().removeprefix("alive-")
        if self._tasks.get(name) is task:
            del self._tasks[name]

    async def _probe(self, name: str) -> None:
        while True:
            sandbox = self._caches.sandbox(name)
            identity = pod_identity(sandbox) if sandbox else None
            if sandbox is None or identity is None or self._ok.get(name) == identity:
                return  # gone, not routable, or confirmed meanwhile (`confirm`)
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
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
