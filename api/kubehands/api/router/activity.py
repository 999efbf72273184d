"""`status.lastActivityTime` refresh for idle culling, throttled per sandbox."""

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api.observe import metrics
from kubehands.api.observe.caches import Caches
from kubehands.api.settings import Settings
from kubehands.crd.times import parse_time, rfc3339
from kubehands.kube import Kube

log = logging.getLogger(__name__)


def _last_activity(sandbox: dict[str, Any]) -> datetime | None:
    value = (sandbox.get("status") or {}).get("lastActivityTime")
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:  # unreadable: write a fresh one
        return None


class ActivityRecorder:
    """At most one merge patch of the status subresource per sandbox per interval, across replicas
    too: a fresh enough `lastActivityTime` in the cache (written by any replica) counts as written."""

    def __init__(self, settings: Settings, caches: Caches, kube: Kube) -> None:
        self._settings = settings
        self._caches = caches
        self._kube = kube
        self._last: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        caches.sandboxes.add_listener(self._on_event)

    def _on_event(self, kind: str, sandbox: dict[str, Any]) -> None:
        if kind == "DELETED":  # one entry per sandbox ever touched would otherwise stay for ever
            self._last.pop(sandbox["metadata"]["name"], None)

    def touch(self, runtime_id: str) -> None:
        interval = self._settings.activity_interval_seconds
        now = time.monotonic()
        last = self._last.get(runtime_id)
        if last is not None and now - last < interval:
            return
        seen = _last_activity(self._caches.sandbox(runtime_id) or {})
        if seen is not None:
            age = (datetime.now(UTC) - seen).total_seconds()
            if 0 <= age < interval:
                self._last[runtime_id] = now - age
                return
        self._last[runtime_id] = now
        task = asyncio.get_running_loop().create_task(self._write(runtime_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, runtime_id: str) -> None:
        status = {"lastActivityTime": rfc3339(datetime.now(UTC))}
        try:
            patched = await self._kube.patch_sandbox_status(self._settings.namespace, runtime_id, status)
            written = patched is not None  # None: the sandbox is gone, nothing to warn about
        except ApiException as exc:
            written = False
            log.warning("activity write for %s failed: %s", runtime_id, exc.status)
        except Exception as exc:  # a lost activity write only delays culling; never break a request
            written = False
            log.warning("activity write for %s failed: %s", runtime_id, exc)
        metrics.ACTIVITY_WRITES.labels("ok" if written else "error").inc()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
