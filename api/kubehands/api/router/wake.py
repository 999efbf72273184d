"""Wake on request: a request that carries a paused sandbox's session key resumes it, and waits until its agent
server answers (`middleware.py` decides when; this makes the calls).

Only the data plane wakes sandboxes; the control API resumes them through /resume and /start.
"""

from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api import limits
from kubehands.api.observe.alive import AliveTracker
from kubehands.api.observe.caches import Caches
from kubehands.api.settings import Settings
from kubehands.crd.constants import LABEL_OWNER
from kubehands.crd.model import DesiredState
from kubehands.kube import NOT_FOUND, Kube, labels

Obj = dict[str, Any]


class Waker:
    def __init__(self, settings: Settings, caches: Caches, kube: Kube, alive: AliveTracker) -> None:
        self.settings = settings
        self.caches = caches
        self.alive = alive
        self._kube = kube

    async def wake(self, runtime_id: str, timeout: float) -> Obj | None:
        """Resume a paused sandbox and wait until its agent server answers; None on timeout.

        The router calls it only for requests that carry the sandbox's session key. `LimitExceeded` when
        resuming would put the owner over its running limit; Kubernetes errors propagate (the router maps them).
        """
        loop_deadline = datetime.now(UTC).timestamp() + timeout
        sandbox = self.caches.sandbox(runtime_id)
        if sandbox is not None and (sandbox.get("spec") or {}).get("state") == DesiredState.PAUSED:
            tenant = labels(sandbox).get(LABEL_OWNER, "")
            limits.check_limit(self.caches, tenant, limits.limit_of(self.caches, self.settings, sandbox))
            try:
                patch = {"spec": {"state": DesiredState.RUNNING.value}}
                self.caches.sandboxes.upsert(await self._kube.patch_sandbox(self.settings.namespace, runtime_id, patch))
            except ApiException as exc:
                if exc.status == NOT_FOUND:
                    return None
                raise
        while True:
            sandbox = self.caches.sandbox(runtime_id)
            if sandbox is None or sandbox["metadata"].get("deletionTimestamp"):
                return None
            if self.alive.is_alive(sandbox):
                return sandbox
            remaining = loop_deadline - datetime.now(UTC).timestamp()
            if remaining <= 0:
                return None
            await self.caches.sandboxes.wait_changed(min(remaining, 5.0))
