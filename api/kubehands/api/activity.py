"""`status.lastActivityTime` refresh for idle culling, throttled per sandbox."""

import asyncio
import logging
import time
from datetime import UTC, datetime

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api import metrics
from kubehands.api.cache import Caches
from kubehands.api.constants import GROUP, PLURAL, VERSION
from kubehands.api.settings import Settings

log = logging.getLogger(__name__)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class ActivityRecorder:
    """At most one merge patch of the status subresource per sandbox per interval, across replicas
    too: a fresh enough `lastActivityTime` in the cache (written by any replica) counts as written."""

    def __init__(self, settings: Settings, caches: Caches, api: client.ApiClient) -> None:
        self._settings = settings
        self._caches = caches
        self._custom = client.CustomObjectsApi(api)
        self._last: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def touch(self, runtime_id: str) -> None:
        interval = self._settings.activity_interval_seconds
        now = time.monotonic()
        last = self._last.get(runtime_id)
        if last is not None and now - last < interval:
            return
        sandbox = self._caches.sandbox(runtime_id) or {}
        seen = parse_time((sandbox.get("status") or {}).get("lastActivityTime"))
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
        body = {"status": {"lastActivityTime": rfc3339(datetime.now(UTC))}}
        try:
            await self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self._settings.namespace,
                PLURAL,
                runtime_id,
                body,
                _content_type="application/merge-patch+json",
            )
            metrics.ACTIVITY_WRITES.labels("ok").inc()
        except ApiException as exc:
            metrics.ACTIVITY_WRITES.labels("error").inc()
            if exc.status != 404:
                log.warning("activity write for %s failed: %s", runtime_id, exc.status)
        except Exception as exc:  # a lost activity write only delays culling; never break a request
            metrics.ACTIVITY_WRITES.labels("error").inc()
            log.warning("activity write for %s failed: %s", runtime_id, exc)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
