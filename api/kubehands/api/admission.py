"""Admission: the running limit decided atomically, whatever the concurrency and however many gateway replicas.

Every action that makes a sandbox hold resources (a new session's /start, warm or cold; /resume and /start of a
paused session; the re-/start of a failed one; the router's wake) is admitted first, before it writes anything to
the Sandbox. Each API key has an **admission ledger**, a ConfigMap `kh-admission-<key>` in the sandbox namespace,
whose entries are the admissions of the last `limits.IN_FLIGHT_SECONDS` (`<slot>.<token>: <unix time>`). An
admission reads it (GET), counts the key's slots the cache shows holding resources together with the ledger's
in-flight entries, and either answers 429 (writing nothing) or writes the ledger back with its own entry, under the
resourceVersion it read (PUT; a 409 means another admission came first: read again and recount). The API server
accepts one write per version, so admissions of one key are serialised across replicas: none can miss another
that came before it, while the caches, which may lag, only have to show what is older than the in-flight window.
Admissions of one key on one replica queue behind a lock, so they do not spend their tries conflicting with each
other. Cost: one GET and one PUT per admission; a refusal costs one GET, or nothing when the cache alone shows the
key at its limit.

The ledger also carries the key's revocation (`kubehands keys revoke` writes `revoked`): every admission reads it,
so no request wakes, resumes or starts a sandbox of a revoked key, whatever a replica's cache still shows.
"""

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api import limits
from kubehands.api.errors import Forbidden, LimitExceeded, Unavailable
from kubehands.crd.constants import GROUP, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_OWNER, LABEL_PART_OF, PART_OF
from kubehands.kube import CONFLICT, NOT_FOUND, json_body
from kubehands.spec.constants import MANAGED_BY_GATEWAY

log = logging.getLogger(__name__)

LEDGER_PREFIX = "kh-admission-"
LABEL_LEDGER = f"{GROUP}/admission-ledger"
COMPONENT_LEDGER = "admission-ledger"
REVOKED = "revoked"  # the ledger's field naming when the key was revoked
# Tries of one admission (each a GET and a PUT); only admissions of other replicas make it retry.
MAX_TRIES = 25
Obj = dict[str, Any]


def ledger_name(tenant: str) -> str:
    return LEDGER_PREFIX + tenant


def build_ledger(namespace: str, tenant: str, data: dict[str, str], resource_version: str | None) -> Obj:
    metadata: Obj = {
        "name": ledger_name(tenant),
        "namespace": namespace,
        "labels": {
            LABEL_PART_OF: PART_OF,
            LABEL_MANAGED_BY: MANAGED_BY_GATEWAY,
            LABEL_COMPONENT: COMPONENT_LEDGER,
            LABEL_LEDGER: "true",
            LABEL_OWNER: tenant,
        },
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def revoked_detail(tenant: str) -> str:
    return f"API key {tenant!r} was revoked: its sandboxes are paused and cannot be woken, resumed or started"


@dataclass(frozen=True)
class Admission:
    """One admission's ledger entry, removed again when what it admitted was not done."""

    tenant: str
    entry: str


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(random.uniform(0, min(0.2, 0.01 * (attempt + 1))))


class Ledgers:
    """The ledger ConfigMaps of one namespace: read, and written under a resourceVersion (shared by the gateway's
    admissions and `kubehands keys`)."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self._core = core
        self.namespace = namespace

    async def read(self, tenant: str) -> tuple[dict[str, str], str | None]:
        """(data, resourceVersion); ({}, None) when the key has no ledger yet."""
        try:
            found = await self._core.read_namespaced_config_map(ledger_name(tenant), self.namespace)
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return {}, None
            raise
        return dict(found.data or {}), found.metadata.resource_version

    async def write(self, tenant: str, data: dict[str, str], resource_version: str | None) -> None:
        """Create the ledger (`resource_version` None) or replace the version read; ApiException 409 when another
        write came first."""
        body = build_ledger(self.namespace, tenant, data, resource_version)
        if resource_version is None:
            await self._core.create_namespaced_config_map(self.namespace, json_body(body, client.V1ConfigMap))
        else:
            await self._core.replace_namespaced_config_map(
                ledger_name(tenant), self.namespace, json_body(body, client.V1ConfigMap)
            )

    async def update(
        self, tenant: str, change: Callable[[dict[str, str]], dict[str, str] | None], *, create: bool = True
    ) -> bool:
        """Apply `change(data) -> data | None` (None: nothing to write) until it is written on the current version;
        False when there was nothing to write (or no ledger, with `create` False)."""
        for attempt in range(MAX_TRIES):
            data, version = await self.read(tenant)
            if version is None and not create:
                return False
            changed = change(dict(data))
            if changed is None:
                return False
            try:
                await self.write(tenant, changed, version)
                return True
            except ApiException as exc:
                if exc.status != CONFLICT:
                    raise
            await _backoff(attempt)
        raise Unavailable(f"the admission ledger of API key {tenant!r} is too busy; retry")

    async def mark_revoked(self, tenant: str) -> None:
        await self.update(tenant, lambda data: data | {REVOKED: str(time.time())})

    async def clear_revoked(self, tenant: str) -> bool:
        """Take the revocation back (a new key of the same name owns the name's sandboxes again)."""
        def without(data: dict[str, str]) -> dict[str, str] | None:
            return {k: v for k, v in data.items() if k != REVOKED} if REVOKED in data else None

        return await self.update(tenant, without, create=False)


class Admissions:
    def __init__(self, core: client.CoreV1Api, namespace: str, holding_slots: Callable[[str], set[str]]) -> None:
        """`holding_slots(tenant)`: the key's slots the cache shows holding resources (`limits.holding_slots`)."""
        self.ledgers = Ledgers(core, namespace)
        self._holding_slots = holding_slots
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, tenant: str) -> asyncio.Lock:
        return self._locks.setdefault(tenant, asyncio.Lock())  # one per key that ever admitted: a few bytes each

    async def admit(self, tenant: str, slot: str, limit: int) -> Admission:
        """Admit `slot` (it will hold resources) for `tenant`: its ledger entry, written; `LimitExceeded` (429, nothing
        written) when the key's other slots already reach `limit`; `Forbidden` (403) when the key was revoked."""
        count = limits.count_others(self._holding_slots(tenant), {}, slot)
        if count >= limit:  # what the ledger's count would say too (it only adds to the cache's): no call needed
            raise limits_exceeded(tenant, count, limit)
        async with self._lock(tenant):
            return await self._admit(tenant, slot, limit)

    async def _admit(self, tenant: str, slot: str, limit: int) -> Admission:
        for attempt in range(MAX_TRIES):
            data, version = await self.ledgers.read(tenant)
            if REVOKED in data:
                raise Forbidden(revoked_detail(tenant))
            now = time.time()
            admitted = limits.in_flight(data, now)
            count = limits.count_others(self._holding_slots(tenant), admitted, slot)
            if count >= limit:
                raise limits_exceeded(tenant, count, limit)
            entry = limits.entry_key(slot, secrets.token_hex(4))
            kept = {key: data[key] for key in admitted}  # older entries are pruned: the caches show them now
            try:
                await self.ledgers.write(tenant, kept | {entry: f"{now:.3f}"}, version)
            except ApiException as exc:
                if exc.status != CONFLICT:
                    raise
                await _backoff(attempt)
                continue
            return Admission(tenant, entry)
        raise Unavailable(f"too many concurrent admissions for API key {tenant!r}; retry")

    async def release(self, admission: Admission) -> None:
        """Remove an admission whose write was refused (logged, never raised: the caller's own error matters)."""
        await self._drop(admission.tenant, lambda data: {admission.entry} & set(data))

    async def forget(self, tenant: str, slot: str, before: float) -> None:
        """A slot that stopped holding resources (paused, stopped): its in-flight entries admitted before `before` no
        longer count (logged, never raised: they age out anyway). Later ones, of an admission racing the pause,
        stay."""

        def stale(data: dict[str, str]) -> set[str]:
            admitted = limits.in_flight(data, time.time())
            return {key for key, at in admitted.items() if limits.entry_slot(key) == slot and at < before}

        await self._drop(tenant, stale)

    async def _drop(self, tenant: str, pick: Callable[[dict[str, str]], set[str]]) -> None:
        """Remove the entries `pick(data)` names, if any (one GET, and a PUT only when there are some)."""

        def without(data: dict[str, str]) -> dict[str, str] | None:
            gone = pick(data)
            return {k: v for k, v in data.items() if k not in gone} if gone else None

        try:
            await self.ledgers.update(tenant, without, create=False)
        except (ApiException, OSError, TimeoutError, Unavailable) as exc:
            log.warning("could not update the admission ledger of %s: %s", tenant, exc)


def limits_exceeded(tenant: str, count: int, limit: int) -> LimitExceeded:
    return LimitExceeded(limits.over_limit_detail(tenant, count, limit))
