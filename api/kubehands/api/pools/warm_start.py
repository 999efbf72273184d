"""A /start served from a warm pool: a ready member whose template matches the request is claimed and becomes the
session's Sandbox, keeping its dormant pod, which then gets the session through POST /api/init.

The claim is one merge patch carrying the member's resourceVersion (`claims.claim_patch`; a 409 means another start
took it: the next member is tried, and after `MAX_CLAIM_TRIES` the session's claim Secret is released and the start
goes cold). Any failure after the claim restarts the sandbox cold in place (the pod is never reused);
`recovery.py` does the same for a claim whose gateway died mid-init.

`WarmStarts` makes these API calls; `kubehands.api.control.service.SandboxService` extends it with the other paths
of a /start and decides which one a request takes.
"""

import asyncio
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api.errors import api_exception_detail
from kubehands.api.keys import KeyRecord
from kubehands.api.observe import metrics
from kubehands.api.observe.alive import AliveTracker
from kubehands.api.observe.caches import Caches
from kubehands.api.pools import claims, init
from kubehands.api.ports import PortSlots
from kubehands.api.runtime import runtime_object, secret_session_key
from kubehands.api.schemas import RuntimeObject
from kubehands.api.session_claims import SessionClaims, json_of
from kubehands.api.settings import Settings
from kubehands.crd.constants import AGENT_PORT_NAME
from kubehands.crd.names import pod_name
from kubehands.kube import CONFLICT, NOT_FOUND, Kube
from kubehands.spec import objects
from kubehands.spec import pools as pool_rule
from kubehands.spec.constants import SESSION_KEY_SECRET_KEY
from kubehands.spec.errors import InvalidRequest
from kubehands.spec.pools import member_secret_name
from kubehands.spec.request import StartRequest
from kubehands.spec.urls import service_port, upstream_base

log = logging.getLogger(__name__)

# Members one warm /start tries to claim before it starts cold; each try is one GET and one PATCH.
MAX_CLAIM_TRIES = 3
INIT_PATH = "/api/init"
INIT_KEY_HEADER = "X-Init-API-Key"
Obj = dict[str, Any]


class WarmStarts:
    def __init__(
        self, settings: Settings, caches: Caches, kube: Kube, alive: AliveTracker, http: httpx.AsyncClient
    ) -> None:
        self.settings = settings
        self.caches = caches
        self.alive = alive
        self.claims = SessionClaims(settings, caches, kube)
        self.ports = PortSlots(settings, caches)  # port mode: runtime ids whose block of gateway ports is free
        # Members this replica is claiming right now: concurrent /starts on one replica never race each other
        # for a member (the cache shows a member unclaimed until its claim patch comes back).
        self._claiming: set[str] = set()
        self._kube = kube
        self._http = http  # POST /api/init of claimed pool members

    async def _start_warm(
        self, caller: KeyRecord, req: StartRequest, derived: objects.Derived, claim_name: str
    ) -> RuntimeObject | None:
        """The session started on a claimed pool member; None when no member could be claimed (start cold).

        Raises only what a cold start would raise as well (e.g. the API server refusing the spec)."""
        spec = derived.spec
        found, miss = claims.candidates(
            self.caches.pool_list(), self.caches.claimable_members, caller.profile.pools, spec
        )
        if not found:
            metrics.POOL_MISSES.labels(miss).inc()
            if miss == claims.MISS_NO_POOL and log.isEnabledFor(logging.DEBUG):
                for unmatched in self.caches.pool_list():
                    field = pool_rule.difference(claims.pool_template(unmatched), spec)
                    log.debug("pool %s does not serve this /start: %s differs", unmatched["metadata"]["name"], field)
            return None
        found = [
            (pool, member)
            for pool, member in found
            if member["metadata"]["name"] not in self._claiming and self.ports.is_free(member["metadata"]["name"])
        ]
        if not found:
            metrics.POOL_MISSES.labels(claims.MISS_EMPTY).inc()
            return None
        # Replicas pick in different orders, so that they rarely race for one member.
        tries = random.sample(found, min(len(found), MAX_CLAIM_TRIES))
        first = tries[0][1]["metadata"]["name"]
        self._claiming.add(first)  # at once: the awaits below let other /starts of this replica choose
        self.ports.reserve(first)
        mine = {first}
        session_key = objects.mint_session_key()
        try:
            secret = await self.claims.create(claim_name, caller.name, req.session_id, first, session_key)
        except BaseException as exc:
            self._claiming -= mine
            if isinstance(exc, ApiException) and exc.status == CONFLICT:
                return None  # another call holds the session's claim: the cold path resolves it
            raise
        claimed: tuple[Obj, str, str] | None = None
        try:
            for attempt, (pool, member) in enumerate(tries):
                name = member["metadata"]["name"]
                if attempt:
                    if name in self._claiming:
                        continue  # another /start of this replica is claiming it
                    if not self.ports.is_free(name):
                        continue
                    self._claiming.add(name)
                    self.ports.reserve(name)
                    mine.add(name)
                    await self.claims.name_runtime(secret.metadata.name, name)
                claimed = await self._claim_member(derived, claim_name, session_key, pool, member)
                if claimed is not None:
                    break
        except BaseException:  # nothing claimed: the session's claim goes, and nothing half-made remains
            await self.claims.release(secret.metadata.name, secret.metadata.uid)
            raise
        finally:
            self._claiming -= mine
        if claimed is None:
            metrics.POOL_MISSES.labels(claims.MISS_CONFLICT).inc()
            await self.claims.release(secret.metadata.name, secret.metadata.uid)
            return None
        return await self._finish_claim(caller, req, secret.metadata.name, session_key, pool, *claimed)

    async def _claim_member(
        self, derived: objects.Derived, claim_name: str, session_key: str, pool: str, member: Obj
    ) -> tuple[Obj, str, str] | None:
        """(the claimed Sandbox, the member's init key, its pod's IP); None when the member is gone, another start
        took it, or it is no genuine member (`claims.forgery`)."""
        ns = self.settings.namespace
        name = member["metadata"]["name"]
        evidence = await self._membership(member, pool)
        if evidence is None:
            return None
        init_key, pod_ip = evidence
        fresh = objects.sandbox(derived, name, claim_name, session_key_sha256=objects.session_key_digest(session_key))
        try:
            patch = claims.claim_patch(member, fresh, pool, datetime.now(UTC))
            claimed = await self._kube.patch_sandbox(ns, name, patch)
        except ApiException as exc:
            if exc.status in (CONFLICT, NOT_FOUND):
                log.info("pool %s member %s was taken or removed meanwhile (%s)", pool, name, exc.status)
                return None
            if exc.status in (400, 422):
                raise InvalidRequest(api_exception_detail(exc)) from exc
            raise
        self.caches.sandboxes.upsert(claimed)  # no longer claimable here, before the watch says so
        return claimed, init_key, pod_ip

    async def _membership(self, member: Obj, pool: str) -> tuple[str, str] | None:
        """(the member's init key, its dormant pod's IP), read from what only the operator writes (its init Secret,
        its pod) and checked by `claims.forgery`; None when it cannot be claimed."""
        name = member["metadata"]["name"]
        pool_object = self.caches.pools.items.get(pool)
        secret, pod = await asyncio.gather(
            self._read(self._kube.core.read_namespaced_secret, member_secret_name(name)),
            self._read(self._kube.core.read_namespaced_pod, pod_name(name)),
        )
        problem = "its pool is gone" if pool_object is None else claims.forgery(member, pool_object, secret, pod)
        if problem is not None:
            log.warning("pool %s: not claiming %s, which carries the pool's label: %s", pool, name, problem)
            return None
        assert secret is not None and pod is not None  # `forgery` checked both
        init_key = secret_session_key(secret, SESSION_KEY_SECRET_KEY)
        if init_key is None:
            log.info("pool %s member %s has no readable init key; skipping it", pool, name)
            return None
        return init_key, str(pod["status"]["podIP"])

    async def _read(self, read: Any, name: str) -> Obj | None:
        """A Secret or Pod of the sandbox namespace as JSON; None when it does not exist or cannot be read."""
        try:
            return await json_of(await read(name, self.settings.namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                log.warning("could not read %s: %s", name, exc.status)
            return None

    async def _forget_init_key(self, name: str) -> None:
        """Delete a claimed member's init Secret: its pod no longer needs it (a restarted container boots dormant,
        and is restarted cold anyway), and without it the sandbox never passes for a member again."""
        try:
            await self._kube.core.delete_namespaced_secret(member_secret_name(name), self.settings.namespace)
        except ApiException as exc:
            if exc.status != NOT_FOUND:
                log.warning("could not delete the init Secret of claimed sandbox %s: %s", name, exc.status)
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not delete the init Secret of claimed sandbox %s: %s", name, exc)

    async def _finish_claim(
        self,
        caller: KeyRecord,
        req: StartRequest,
        secret_name: str,
        session_key: str,
        pool: str,
        claimed: Obj,
        init_key: str,
        pod_ip: str,
    ) -> RuntimeObject:
        """After the claim: own the Secret, hand the dormant server its session, and mark the init done. Never
        raises for the init: on any failure the sandbox restarts cold in place, and is answered `starting`."""
        name = claimed["metadata"]["name"]
        self.caches.sandboxes.upsert(claimed)
        metrics.POOL_CLAIMS.labels(pool).inc()
        metrics.SANDBOXES_STARTED.inc()
        await self.claims.own(secret_name, claimed)
        env = init.pod_environment(claimed.get("spec") or {}, name, session_key)
        began = time.monotonic()
        # The init Secret goes while the init runs: from the claim on, the sandbox is the session's.
        problem, _ = await asyncio.gather(
            self._post_init(claimed, pod_ip, init_key, init.init_request(session_key, env)),
            self._forget_init_key(name),
        )
        sandbox: Obj | None = claimed
        if problem is None:
            metrics.POOL_INIT_SECONDS.observe(time.monotonic() - began)
            try:
                sandbox = await self._kube.patch_sandbox(self.settings.namespace, name, claims.init_done_patch())
                self.caches.sandboxes.upsert(sandbox)
            except (ApiException, OSError, aiohttp.ClientError, TimeoutError) as exc:
                # The session works; without the mark it reads `starting`, and is restarted cold after the grace.
                log.warning("could not mark the init of claimed sandbox %s done: %s", name, exc)
            log.info("started sandbox %s for key %s from pool %s (warm)", name, caller.name, pool)
        else:
            metrics.POOL_MISSES.labels(claims.MISS_INIT_FAILED).inc()
            log.warning("init of sandbox %s claimed from pool %s failed (%s); starting it cold", name, pool, problem)
            try:
                sandbox = await self.restart_claimed_cold(name, f"its init failed: {problem}") or claimed
            except (ApiException, OSError, aiohttp.ClientError, TimeoutError) as exc:
                # Still `starting` (the init is not done); recovery.py restarts it cold once the grace is over.
                log.warning("could not restart claimed sandbox %s cold: %s", name, exc)
        return runtime_object(
            self.settings, name, req.session_id, sandbox, session_key, self.alive.is_alive(sandbox)
        )

    async def _post_init(self, sandbox: Obj, pod_ip: str, init_key: str, body: Obj) -> str | None:
        """POST /api/init to the claimed pod at `pod_ip` (read from the pod, not from the Sandbox's status, which the
        router may write); None when the server answered that it is ready, else why not."""
        url = upstream_base(pod_ip, service_port(sandbox, AGENT_PORT_NAME)) + INIT_PATH
        try:
            response = await self._http.post(
                url,
                json=body,
                headers={INIT_KEY_HEADER: init_key},
                timeout=self.settings.pool_init_timeout_seconds,
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {response.text[:300]}"
        try:
            state = response.json().get("state")
        except (ValueError, AttributeError):
            state = None
        return None if state == "ready" else f"the server answered state {state!r}"

    async def restart_claimed_cold(self, name: str, reason: str, resource_version: str | None = None) -> Obj | None:
        """Give up a claimed sandbox's dormant pod: the operator replaces it, and the session starts cold on the
        same Sandbox (`claims.cold_restart_patch`). None when the Sandbox is gone; with `resource_version`, a 409
        when it changed since (another replica acted first) propagates."""
        ns = self.settings.namespace
        try:
            patch = claims.cold_restart_patch(datetime.now(UTC), resource_version)
            patched = await self._kube.patch_sandbox(ns, name, patch)
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                self.caches.sandboxes.discard(name)
                return None
            raise
        cleared = await self._mark_status_outdated(patched)
        await self._forget_init_key(name)  # a gateway that died mid-claim left it
        log.info("restarting claimed sandbox %s cold: %s", name, reason)
        return cleared

    async def _mark_status_outdated(self, patched: Obj) -> Obj:
        """After a patch that makes the operator replace a sandbox's pod (a re-/start of a failed sandbox, a cold
        restart of a claimed one): its status still describes the old pod, at the same generation when the spec
        did not change. Marked as describing no generation, the sandbox answers `starting` (as after a resume,
        docs/runtime-api.md §2.3) until the operator reports on the new pod and writes it back. Cached either way
        (the watch catches up if the status patch failed); returns what was cached."""
        name = patched["metadata"]["name"]
        try:
            cleared = await self._kube.patch_sandbox_status(self.settings.namespace, name, {"observedGeneration": None})
        except (ApiException, OSError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not mark the status of sandbox %s as outdated: %s", name, exc)
            cleared = None
        if cleared is None:
            cleared = {**patched, "status": {**(patched.get("status") or {}), "observedGeneration": None}}
        self.caches.sandboxes.upsert(cleared)
        return cleared
