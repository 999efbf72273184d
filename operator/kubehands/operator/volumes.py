"""Create the pod only once its workspace claim is bound, when the storage class binds at once.

A pod whose claim is still unbound fails its first scheduling attempt and waits out the scheduler's
backoff (1 s and more) after the claim binds; a provisioner binds in tens of milliseconds. So with
`volumeBindingMode: Immediate` the operator waits, at most `volume_bind_wait_seconds`, then creates
the pod anyway. `WaitForFirstConsumer` classes bind only for a scheduled pod: no wait. Reading
StorageClasses needs a cluster-wide `get`; without it (403), or with no class, nothing waits.

This module reads claims and classes; whether to wait is `plan.binding_wait`.
"""

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.kube import Kube

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
IMMEDIATE = "Immediate"


def is_bound(pvc: Mapping[str, Any]) -> bool:
    return (pvc.get("status") or {}).get("phase") == "Bound"


def storage_class_of(pvc: Mapping[str, Any]) -> str | None:
    """The class the claim asked for, or the cluster default the API server filled in at create."""
    return (pvc.get("spec") or {}).get("storageClassName") or None


class BindingModes:
    """volumeBindingMode per StorageClass, read once per class (None: unknown, do not wait)."""

    def __init__(self) -> None:
        self._modes: dict[str, str | None] = {}

    async def get(self, kube: Kube, name: str | None) -> str | None:
        if name is None:
            return None
        if name not in self._modes:
            try:
                storage_class = await client.StorageV1Api(kube.api).read_storage_class(name)
                self._modes[name] = storage_class.volume_binding_mode or IMMEDIATE
            except ApiException as e:
                if e.status not in (403, 404):
                    raise
                log.info("StorageClass %s not readable (%s): pods are created without waiting", name, e.status)
                self._modes[name] = None
        return self._modes[name]


async def wait_until_bound(kube: Kube, pvc: Mapping[str, Any], timeout: float) -> bool:
    """Poll the claim until it is bound, for at most `timeout` seconds. True when it bound."""
    metadata = pvc["metadata"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
        current = await kube.core.read_namespaced_persistent_volume_claim(metadata["name"], metadata["namespace"])
        if current.status and current.status.phase == "Bound":
            return True
    log.info("PVC %s/%s not bound after %.1fs; creating the pod anyway", metadata["namespace"], metadata["name"],
             timeout)
    return False
