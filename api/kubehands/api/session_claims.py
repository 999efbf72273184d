"""The /start claim of a session: its session-key Secret, idempotent across concurrent calls and gateway replicas.

The session-key Secret of (tenant, session_id) has a deterministic name, `objects.claim_name()`. Creating it is the
claim: the API server lets exactly one create succeed, everyone else gets 409. The winner then creates the Sandbox
(or claims a pool member), records its runtime id in the claim's labels, and finally makes the Secret owned by the
Sandbox, so deleting the Sandbox removes the claim too. A loser reads the claim and answers with the runtime it
names. A claim is stale, and is deleted with a uid precondition (so only one caller can delete it) before the create
is retried, when its Sandbox is gone or being deleted, or when it never got an owner within `CLAIM_GRACE_SECONDS`
(its creator died between the two creates).

The Secret calls of both start paths (`control.service`, `pools.warm_start`); the choices are theirs. Also the
session key's rotation, shared by /resume and the router's wake.
"""

import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api.observe.caches import Caches
from kubehands.crd.times import parse_time
from kubehands.kube import CONFLICT, NOT_FOUND, Kube, json_body, owner_reference
from kubehands.spec import objects
from kubehands.spec.constants import LABEL_RUNTIME_ID, SESSION_KEY_SECRET_KEY
from kubehands.spec.settings import SpecSettings

log = logging.getLogger(__name__)

CLAIM_GRACE_SECONDS = 30.0
Obj = dict[str, Any]


def age_seconds(obj: Obj) -> float:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    if created is None:
        return 0.0
    return (datetime.now(UTC) - created).total_seconds()


def fresh_claim(claim: Obj) -> bool:
    """A claim whose Sandbox may still be on its way (older ones without a Sandbox are stale)."""
    return age_seconds(claim) < CLAIM_GRACE_SECONDS


async def json_of(response: Any) -> Obj:
    """The JSON of a `_preload_content=False` answer (the client's stubs name the model it would have built)."""
    return dict(await response.json())


class SessionClaims:
    def __init__(self, settings: SpecSettings, caches: Caches, kube: Kube) -> None:
        self._namespace = settings.namespace
        self._caches = caches
        self._core = kube.core

    async def create(self, name: str, tenant: str, session_id: str, runtime_id: str, session_key: str) -> Any:
        """The claim naming `runtime_id` (a `V1Secret`); `ApiException` 409 when another call holds it."""
        body = objects.build_session_secret(name, self._namespace, tenant, session_id, runtime_id, session_key)
        return await self._core.create_namespaced_secret(self._namespace, json_body(body, client.V1Secret))

    async def read(self, name: str) -> Obj | None:
        try:
            return await json_of(await self._core.read_namespaced_secret(name, self._namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise

    async def name_runtime(self, name: str, runtime_id: str) -> None:
        """Point the claim at another runtime: losers of the session's claim read the runtime id from it."""
        patch = {"metadata": {"labels": {LABEL_RUNTIME_ID: runtime_id}}}
        await self._core.patch_namespaced_secret(name, self._namespace, patch)

    async def own(self, name: str, sandbox: Obj) -> None:
        """Make the claim owned by its Sandbox, so it is garbage-collected with it."""
        # Not blocking the Sandbox's deletion: that would need `update` on sandboxes/finalizers, which
        # the gateway's RBAC does not grant.
        patch = {"metadata": {"ownerReferences": [owner_reference(sandbox, block_owner_deletion=False)]}}
        try:
            owned = await self._core.patch_namespaced_secret(name, self._namespace, patch, _preload_content=False)
            self._caches.session_keys.upsert(await json_of(owned))
        except ApiException as exc:  # the claim still works; only GC on stop is affected
            log.warning("could not make session secret of %s owned: %s", sandbox["metadata"]["name"], exc.status)

    async def rotate_key(self, sandbox: Obj) -> str:
        """Write a new session key into the sandbox's Secret; returns it. Called before the Sandbox's state says
        Running: its pod may start at once, and must get the new key."""
        name = str(((sandbox.get("spec") or {}).get("sessionKeySecretRef") or {}).get("name") or "")
        key = objects.mint_session_key()
        patched = await self._core.patch_namespaced_secret(
            name, self._namespace, {"stringData": {SESSION_KEY_SECRET_KEY: key}}, _preload_content=False
        )
        self._caches.session_keys.upsert(await json_of(patched))
        return key

    async def release(self, name: str, uid: str) -> None:
        """Give up a claim this call made and could not use (logged, never raised: the start's own error matters)."""
        try:
            await self._delete(name, uid)
        except ApiException as exc:
            log.warning("could not release claim %s: %s", name, exc.status)

    async def delete_stale(self, name: str, uid: str) -> None:
        """Delete another call's stale claim, so the create can be retried."""
        await self._delete(name, uid)
        self._caches.session_keys.discard(name)

    async def _delete(self, name: str, uid: str) -> None:
        """Delete the claim `uid` (a newer claim of the same name stays); gone already or replaced is fine."""
        try:
            await self._core.delete_namespaced_secret(
                name, self._namespace, body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
            )
        except ApiException as exc:
            if exc.status not in (NOT_FOUND, CONFLICT):
                raise
