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
# How long a warm /start waits, after the init, for the operator to report on the claim's spec before it answers
# `starting` rather than `running` (it reports within tens of ms on an idle cluster, a few hundred in a burst).
RUNNING_WAIT_SECONDS = 2.0
INIT_PATH = "/api/init"
INIT_KEY_HEADER = "X-Init-API-Key"
Obj = dict[str, Any]


class _Timings:
    """Where a warm /start's time goes: the time of each stage since the previous mark, logged with the start and
    observed in kubehands_pool_warm_start_stage_seconds{stage}."""

    def __init__(self) -> None:
        self._last = self._began = time.monotonic()
        self._stages: list[tuple[str, float]] = []

    def mark(self, stage: str) -> None:
        now = time.monotonic()
        self._stages.append((stage, now - self._last))
        metrics.WARM_START_STAGE_SECONDS.labels(stage).observe(now - self._last)
        self._last = now

    def __str__(self) -> str:
        stages = ", ".join(f"{stage} {seconds * 1000:.1f} ms" for stage, seconds in self._stages)
        return f"{(self._last - self._began) * 1000:.1f} ms ({stages})"


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
    ) -> tuple[RuntimeObject | None, str | None]:
        """The session started on a claimed pool member; (None, why not) when no member could be claimed (start
        cold). The reason is a miss reason (`claims.MISS_REASONS`), or `mismatch: <field>` for a `no_pool` miss while
        pools exist (`claims.cold_start_reason`): the cold Sandbox records it for the client.

        Raises only what a cold start would raise as well (e.g. the API server refusing the spec)."""
        spec = derived.spec
        timings = _Timings()
        pool_list = self.caches.pool_list()
        found, miss = claims.candidates(pool_list, self.caches.claimable_members, caller.profile.pools, spec)
        if not found:
            return None, self._missed(miss or claims.MISS_EMPTY, pool_list, caller, spec)
        found = [
            (pool, member)
            for pool, member in found
            if member["metadata"]["name"] not in self._claiming and self.ports.is_free(member["metadata"]["name"])
        ]
        if not found:
            return None, self._missed(claims.MISS_EMPTY, pool_list, caller, spec)
        # Replicas pick in different orders, so that they rarely race for one member.
        tries = random.sample(found, min(len(found), MAX_CLAIM_TRIES))
        first = tries[0][1]["metadata"]["name"]
        self._claiming.add(first)  # at once: the awaits below let other /starts of this replica choose
        self.ports.reserve(first)
        mine = {first}
        session_key = objects.mint_session_key()
        # The session's claim and the first member's evidence (its init Secret and pod) at once: independent reads
        # and writes, so the claim waits for the slower of them, not for both in turn.
        created: Any
        evidence: tuple[str, str] | None | BaseException
        created, evidence = await asyncio.gather(
            self.claims.create(claim_name, caller.name, req.session_id, first, session_key),
            self._membership(tries[0][1], tries[0][0]),
            return_exceptions=True,
        )
        if isinstance(created, BaseException):
            self._claiming -= mine
            if isinstance(created, ApiException) and created.status == CONFLICT:
                return None, claims.MISS_CONFLICT  # another call holds the session's claim: the cold path resolves it
            raise created
        secret = created
        timings.mark("claim")
        claimed: tuple[Obj, str, str] | None = None
        try:
            if isinstance(evidence, BaseException):
                raise evidence
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
                    evidence = await self._membership(member, pool)
                claimed = await self._claim_member(derived, claim_name, session_key, pool, member, evidence)
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
            return None, claims.MISS_CONFLICT
        timings.mark("claim_patch")
        return await self._finish_claim(caller, req, secret.metadata.name, session_key, pool, *claimed, timings), None

    def _missed(self, miss: str, pool_list: list[Obj], caller: KeyRecord, spec: dict[str, Any]) -> str:
        """Count a miss before any claim; the reason the cold Sandbox records."""
        metrics.POOL_MISSES.labels(miss).inc()
        reason = claims.cold_start_reason(miss, pool_list, caller.profile.pools, spec)
        if reason.startswith(claims.MISMATCH_PREFIX):
            field = claims.closest_mismatch(pool_list, caller.profile.pools, spec) or ""
            metrics.POOL_MISMATCHES.labels(claims.mismatch_label(field)).inc()
            if log.isEnabledFor(logging.DEBUG):
                for unmatched in pool_list:
                    differs = pool_rule.difference(claims.pool_template(unmatched), spec)
                    log.debug("pool %s does not serve this /start: %s differs", unmatched["metadata"]["name"], differs)
        return reason

    async def _claim_member(
        self,
        derived: objects.Derived,
        claim_name: str,
        session_key: str,
        pool: str,
        member: Obj,
        evidence: tuple[str, str] | None,
    ) -> tuple[Obj, str, str] | None:
        """(the claimed Sandbox, the member's init key, its pod's IP); None when the member is gone, another start
        took it, or it is no genuine member (`evidence`, from `_membership`, is None)."""
        ns = self.settings.namespace
        name = member["metadata"]["name"]
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
        timings: _Timings,
    ) -> RuntimeObject:
        """After the claim: own the Secret, hand the dormant server its session, mark the init done, and answer
        `running` once the router can reach it (`_until_running`). Never raises for the init: on any failure the
        sandbox restarts cold in place, and is answered `starting`."""
        name = claimed["metadata"]["name"]
        self.caches.sandboxes.upsert(claimed)
        metrics.POOL_CLAIMS.labels(pool).inc()
        metrics.SANDBOXES_STARTED.inc()
        env = init.pod_environment(claimed.get("spec") or {}, name, session_key)
        began = time.monotonic()
        # The Secret's owner, the init and the init Secret's deletion are independent: all at once. The init Secret
        # goes while the init runs: from the claim on, the sandbox is the session's.
        owned, problem, _ = await asyncio.gather(
            self.claims.own(secret_name, claimed),
            self._post_init(claimed, pod_ip, init_key, init.init_request(session_key, env)),
            self._forget_init_key(name),
            return_exceptions=True,
        )
        timings.mark("init")
        sandbox: Obj | None = claimed
        alive = False
        if isinstance(problem, BaseException):  # `_post_init` answers every HTTP failure; anything else is a bug
            problem = f"{type(problem).__name__}: {problem}"
        if problem is None:
            metrics.POOL_INIT_SECONDS.observe(time.monotonic() - began)
            # The operator's report on the claim is awaited while the init is marked done: the cache update of
            # either wakes the wait, which answers `running` once both are in.
            running = asyncio.create_task(self._until_running(name, pod_ip))
            try:
                try:
                    sandbox = await self._kube.patch_sandbox(self.settings.namespace, name, claims.init_done_patch())
                except BaseException:
                    running.cancel()
                    raise
                self.caches.sandboxes.upsert(sandbox)
                timings.mark("init_mark")
                sandbox, alive = await running
                timings.mark("operator")
            except (ApiException, OSError, aiohttp.ClientError, TimeoutError) as exc:
                # The session works; without the mark it reads `starting`, and is restarted cold after the grace.
                log.warning("could not mark the init of claimed sandbox %s done: %s", name, exc)
            log.info(
                "started sandbox %s for key %s from pool %s (warm, answered %s): %s",
                name, caller.name, pool, "running" if alive else "starting", timings,
            )
        else:
            metrics.POOL_MISSES.labels(claims.MISS_INIT_FAILED).inc()
            log.warning("init of sandbox %s claimed from pool %s failed (%s); starting it cold", name, pool, problem)
            try:
                sandbox = (
                    await self.restart_claimed_cold(name, f"its init failed: {problem}", init_failed=True) or claimed
                )
            except (ApiException, OSError, aiohttp.ClientError, TimeoutError) as exc:
                # Still `starting` (the init is not done); recovery.py restarts it cold once the grace is over.
                log.warning("could not restart claimed sandbox %s cold: %s", name, exc)
        if isinstance(owned, BaseException):
            raise owned  # as before the init ran in parallel: the /start fails, the recovery restarts it cold
        return runtime_object(self.settings, name, req.session_id, sandbox, session_key, alive)

    async def _until_running(self, name: str, pod_ip: str) -> tuple[Obj | None, bool]:
        """The claimed sandbox once its status is current (the operator has seen the claim's spec: it keeps the
        claimed pod) and the router forwards to `pod_ip`, whose server just answered the init: then it is alive
        without an /alive probe, and the /start answers `running` (and every read after it). Waits on the cache,
        at most `RUNNING_WAIT_SECONDS`; (the cached sandbox, False) if the operator has not caught up by then."""
        deadline = time.monotonic() + RUNNING_WAIT_SECONDS
        while True:
            sandbox = self.caches.sandbox(name)
            if sandbox is not None and self.alive.confirm(sandbox, pod_ip):
                return sandbox, True
            left = deadline - time.monotonic()
            if sandbox is None or left <= 0:
                return sandbox, False
            await self.caches.sandboxes.wait_changed(left)

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

    async def restart_claimed_cold(
        self, name: str, reason: str, resource_version: str | None = None, *, init_failed: bool = False
    ) -> Obj | None:
        """Give up a claimed sandbox's dormant pod: the operator replaces it, and the session starts cold on the
        same Sandbox (`claims.cold_restart_patch`; `init_failed`: its start is recorded as cold). None when the
        Sandbox is gone; with `resource_version`, a 409 when it changed since (another replica acted first)
        propagates."""
        ns = self.settings.namespace
        try:
            patch = claims.cold_restart_patch(datetime.now(UTC), resource_version, init_failed=init_failed)
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
