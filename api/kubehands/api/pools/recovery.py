"""Claimed warm-pool sandboxes that can no longer become warm starts are restarted cold, by any replica.

The gateway that claims a member restarts it cold itself when the member's init fails. Two cases are left to
this loop (`claims.cold_restart_reason`): that gateway died between the claim and the end of the init (the
sandbox would stay `starting` for ever), and the claimed pod's container restarted after the init (it boots
dormant again and answers no session request). Every replica runs it; the restart patch carries the
resourceVersion the decision was made on, so only one of them acts.
"""

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api.observe.caches import Caches
from kubehands.api.pools import claims
from kubehands.api.pools.warm_start import WarmStarts
from kubehands.crd.constants import ANNOTATION_CLAIMED_POD

log = logging.getLogger(__name__)

# How often the claimed sandboxes are checked: well within INIT_GRACE, and cheap (a dict lookup each).
CHECK_INTERVAL_SECONDS = 5.0


class ClaimRecovery:
    def __init__(self, caches: Caches, sandboxes: WarmStarts) -> None:
        self._caches = caches
        self._sandboxes = sandboxes
        self._claimed: set[str] = set()  # names of the Sandboxes that carry `claimed-pod`
        self._task: asyncio.Task[None] | None = None
        caches.sandboxes.add_listener(self._on_event)

    def _on_event(self, kind: str, sandbox: dict[str, Any]) -> None:
        name = sandbox["metadata"]["name"]
        annotations = sandbox["metadata"].get("annotations") or {}
        if kind != "DELETED" and annotations.get(ANNOTATION_CLAIMED_POD):
            self._claimed.add(name)
        else:
            self._claimed.discard(name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="claim-recovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL_SECONDS)
            try:
                await self.check(datetime.now(UTC))
            except Exception:  # the loop must outlive any one failure
                log.exception("checking claimed sandboxes failed")

    async def check(self, now: datetime) -> list[str]:
        """Restart cold every claimed sandbox that needs it now; returns the names restarted."""
        restarted = []
        for name in sorted(self._claimed):
            sandbox = self._caches.sandbox(name)
            reason = claims.cold_restart_reason(sandbox, now) if sandbox is not None else None
            if reason is None or sandbox is None:
                continue
            version = sandbox["metadata"].get("resourceVersion")
            try:
                # its init never finished: the session's start was cold after all (a restarted container is not)
                init_failed = claims.init_pending(sandbox)
                restarted_cold = await self._sandboxes.restart_claimed_cold(
                    name, reason, version, init_failed=init_failed
                )
                if restarted_cold is not None:
                    restarted.append(name)
            except ApiException as exc:
                if exc.status != 409:  # 409: it changed meanwhile (another replica acted): decide again later
                    log.warning("could not restart claimed sandbox %s cold: %s", name, exc.status)
            except (OSError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("could not restart claimed sandbox %s cold: %s", name, exc)
        return restarted
