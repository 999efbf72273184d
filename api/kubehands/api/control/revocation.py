"""A revoked key's sandboxes stop holding resources: the gateway's side of `kubehands keys revoke`.

`kubehands keys revoke` does the work itself (it marks the key's admission ledger revoked, deletes the key and
pauses, or deletes, its sandboxes), so revocation holds with no gateway running. Each control-API replica backs it
up: when its watch sees a key Secret go (revoked by the command, or deleted by hand), it pauses that key's sandboxes
that still hold resources; and an admitted write that lands after the key went (`SandboxService`) is paused again
at once. Pausing is idempotent, so replicas doing it together do no harm.
"""

import asyncio
import logging
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api.keys import LABEL_KEY_NAME
from kubehands.api.limits import holds_resources
from kubehands.api.observe.caches import Caches
from kubehands.api.settings import Settings
from kubehands.crd.model import DesiredState
from kubehands.kube import NOT_FOUND, Kube, labels

log = logging.getLogger(__name__)
Obj = dict[str, Any]


async def pause_holding(settings: Settings, caches: Caches, kube: Kube, tenant: str) -> list[str]:
    """Pause the key's sandboxes the cache shows holding resources; their names."""
    paused: list[str] = []
    for sandbox in caches.owned_sandboxes(tenant):
        if not holds_resources(sandbox):
            continue
        name = sandbox["metadata"]["name"]
        try:
            patch = {"spec": {"state": DesiredState.PAUSED.value}}
            caches.sandboxes.upsert(await kube.patch_sandbox(settings.namespace, name, patch))
            paused.append(name)
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                raise
    if paused:
        log.info("paused sandboxes %s of revoked key %s", ", ".join(paused), tenant)
    return paused


class Revocations:
    """Pauses the sandboxes of a key as soon as this replica's watch sees the key deleted."""

    def __init__(self, settings: Settings, caches: Caches, kube: Kube) -> None:
        self._settings = settings
        self._caches = caches
        self._kube = kube
        self._tasks: set[asyncio.Task[None]] = set()
        caches.api_keys.add_listener(self._on_key_event)

    def _on_key_event(self, kind: str, secret: Obj) -> None:
        tenant = labels(secret).get(LABEL_KEY_NAME)
        if kind != "DELETED" or not tenant or self._caches.key_record(tenant) is not None:
            return
        task = asyncio.get_running_loop().create_task(self._pause(tenant), name=f"revoke-{tenant}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pause(self, tenant: str) -> None:
        try:
            await pause_holding(self._settings, self._caches, self._kube, tenant)
        except Exception as exc:  # the command paused them already, or the next event or replica will
            log.warning("could not pause the sandboxes of revoked key %s: %s", tenant, exc)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
