"""Sandbox operations behind the control API: start (idempotent), read, pause, resume, stop, wake.

Idempotent /start across concurrent calls and gateway replicas
-------------------------------------------------------------
The session-key Secret of (tenant, session_id) has a deterministic name, `objects.claim_name()`. Creating it
is the claim: the API server lets exactly one create succeed, everyone else gets 409. The winner
then creates the Sandbox (random runtime_id, recorded in the claim's labels) and finally makes the
Secret owned by the Sandbox, so deleting the Sandbox removes the claim too. A loser reads the
claim and answers with the runtime it names. A claim is stale, and is deleted with a uid
precondition (so only one caller can delete it) before the create is retried, when its Sandbox
is gone or being deleted, or when it never got an owner within `CLAIM_GRACE_SECONDS` (its creator
died between the two creates).

A session whose Sandbox failed (`error`) is restarted in place by /start: same Sandbox, runtime_id, session
key and workspace PVC (a transient failure, like a lost node, must not lose the user's files).

Warm pools
----------
Before a cold start, /start looks for a ready member of a pool whose template matches the request
(`claims.candidates`). It creates the session's claim Secret as for a cold start, naming the member as the
runtime, then claims the member with one merge patch that carries the member's resourceVersion (`claims.claim_patch`;
a 409 means another start took it: the next member is tried, and after `MAX_CLAIM_TRIES` the claim Secret is
released and the start goes cold). The member becomes the session's Sandbox, keeping its dormant pod, which then
gets the session through POST /api/init. Any failure after the claim restarts the sandbox cold in place (the pod
is never reused); `recovery.py` does the same for a claim whose gateway died mid-init.

Running limit
-------------
A key may hold `maxRunning` sandboxes that have a pod or are getting one: starting, running and in error
(a failed pod may still hold its node's resources, and a re-/start brings it back). /start of a new session,
/start or /resume of a paused one and the router's wake are refused with 429 at the limit; a re-/start of a
failed session adds nothing and is allowed.
"""

import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api.errors import LimitExceeded, SandboxConflict, SandboxNotFound, api_exception_detail
from kubehands.api.keys import KeyRecord
from kubehands.api.observe import metrics
from kubehands.api.observe.alive import AliveTracker
from kubehands.api.observe.caches import Caches
from kubehands.api.observe.pod_details import PodDetails
from kubehands.api.pools import claims, init
from kubehands.api.ports import PortSlots
from kubehands.api.runtime import (
    is_pool_member,
    runtime_object,
    runtime_status,
    sandbox_session_id,
    secret_session_key,
)
from kubehands.api.schemas import RuntimeObject, RuntimeStatus
from kubehands.api.settings import Settings
from kubehands.crd.constants import AGENT_PORT_NAME, ANNOTATION_SESSION_KEY_SHA256, KIND, LABEL_OWNER
from kubehands.crd.model import DesiredState
from kubehands.crd.names import session_label
from kubehands.crd.times import parse_time
from kubehands.kube import CONFLICT, NOT_FOUND, Kube, json_body, labels, owner_reference
from kubehands.spec import objects
from kubehands.spec import pools as pool_rule
from kubehands.spec.constants import (
    ANNOTATION_MAX_RUNNING,
    ANNOTATION_SESSION_ID,
    LABEL_RUNTIME_ID,
    SESSION_KEY_SECRET_KEY,
)
from kubehands.spec.errors import InvalidRequest
from kubehands.spec.request import StartRequest
from kubehands.spec.urls import service_port, upstream_base

log = logging.getLogger(__name__)

CLAIM_GRACE_SECONDS = 30.0
# Members one warm /start tries to claim before it starts cold; each try is one GET and one PATCH.
MAX_CLAIM_TRIES = 3
INIT_PATH = "/api/init"
INIT_KEY_HEADER = "X-Init-API-Key"
Obj = dict[str, Any]
_LIVE = (RuntimeStatus.STARTING, RuntimeStatus.RUNNING)
# What counts against the running limit: everything that holds a pod or is getting one (paused and
# stopped sandboxes hold only their PVC).
_HOLDING = (RuntimeStatus.STARTING, RuntimeStatus.RUNNING, RuntimeStatus.ERROR)


def _age_seconds(obj: Obj) -> float:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    if created is None:
        return 0.0
    return (datetime.now(UTC) - created).total_seconds()


def _fresh_claim(claim: Obj) -> bool:
    """A claim whose Sandbox may still be on its way (older ones without a Sandbox are stale)."""
    return _age_seconds(claim) < CLAIM_GRACE_SECONDS


def is_live(sandbox: Obj | None) -> bool:
    """Starting or running: listed by /list and answered as is by /start (not deleted, failed or paused)."""
    if not sandbox:
        return False
    status, _ = runtime_status(sandbox, alive=False)
    return status in _LIVE


def holds_resources(sandbox: Obj | None) -> bool:
    """Counts against the running limit: starting, running or in error (not paused, not being deleted)."""
    if not sandbox:
        return False
    status, _ = runtime_status(sandbox, alive=False)
    return status in _HOLDING


async def _json_of(response: Any) -> Obj:
    """The JSON of a `_preload_content=False` answer (the client's stubs name the model it would have built)."""
    return dict(await response.json())


def _annotations(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _belongs(sandbox: Obj, tenant: str, claim_name: str) -> bool:
    """`sandbox` is the one the session's claim Secret was made for: the tenant's, and using that Secret. (While a
    warm start is under way, the claim names a pool member that may still be unclaimed, or claimed by another.)"""
    ref = (sandbox.get("spec") or {}).get("sessionKeySecretRef") or {}
    return labels(sandbox).get(LABEL_OWNER) == tenant and ref.get("name") == claim_name


class SandboxService:
    def __init__(
        self,
        settings: Settings,
        caches: Caches,
        kube: Kube,
        alive: AliveTracker,
        http: httpx.AsyncClient,
        details: PodDetails,
    ) -> None:
        self.settings = settings
        self.caches = caches
        self.alive = alive
        self.details = details
        # Members this replica is claiming right now: concurrent /starts on one replica never race each other
        # for a member (the cache shows a member unclaimed until its claim patch comes back).
        self._claiming: set[str] = set()
        self.ports = PortSlots(settings, caches)  # port mode: runtime ids whose block of gateway ports is free
        self._kube = kube
        self._core = kube.core
        self._http = http  # POST /api/init of claimed pool members

    # ---- reads (cache only) -------------------------------------------------------------------

    def to_runtime(self, sandbox: Obj, *, fetch: bool = True) -> RuntimeObject:
        """The runtime object of a cached sandbox. `fetch`: refresh its events and log lines when they are older
        than their TTL (single-runtime reads; lists and batches show what was fetched last)."""
        runtime_id = sandbox["metadata"]["name"]
        alive = self.alive.is_alive(sandbox)
        status, _ = runtime_status(sandbox, alive)
        return runtime_object(
            self.settings,
            runtime_id,
            sandbox_session_id(sandbox),
            sandbox,
            self.caches.session_key(sandbox),
            alive,
            self.details.details(runtime_id, status, fetch=fetch),
        )

    def _claim_runtime(self, claim: Obj) -> RuntimeObject:
        """A runtime whose Sandbox this replica has not seen yet: answer `starting` from the claim."""
        meta = claim.get("metadata") or {}
        runtime_id = labels(claim).get(LABEL_RUNTIME_ID, "")
        session_id = (meta.get("annotations") or {}).get(ANNOTATION_SESSION_ID, "")
        return runtime_object(self.settings, runtime_id, session_id, None, secret_session_key(claim), alive=False)

    def owned(self, caller: KeyRecord, runtime_id: str) -> Obj:
        """The caller's sandbox; 404 whether it is missing or another tenant's (existence never leaks)."""
        sandbox = self.caches.sandbox(runtime_id)
        if sandbox is None or labels(sandbox).get(LABEL_OWNER) != caller.name:
            raise SandboxNotFound(f"runtime {runtime_id} not found")
        return sandbox

    def get_runtime(self, caller: KeyRecord, runtime_id: str) -> RuntimeObject:
        sandbox = self.caches.sandbox(runtime_id)
        if sandbox is None or is_pool_member(sandbox):  # a member: answer from the claim of a warm start under way
            claim = self.caches.claim_for_runtime(runtime_id)
            if claim is not None and _fresh_claim(claim) and labels(claim).get(LABEL_OWNER) == caller.name:
                return self._claim_runtime(claim)
        return self.to_runtime(self.owned(caller, runtime_id))

    def find_session(self, caller: KeyRecord, session_id: str, *, fetch: bool = True) -> RuntimeObject | None:
        """The newest sandbox of (caller, session_id); else a claim whose Sandbox is on its way."""
        label = session_label(session_id)
        candidates = [
            s for s in self.caches.session_sandboxes(caller.name, label) if sandbox_session_id(s) == session_id
        ]
        if candidates:
            live = [s for s in candidates if not (s["metadata"].get("deletionTimestamp"))]
            newest = max(live or candidates, key=lambda s: str(s["metadata"].get("creationTimestamp") or ""))
            return self.to_runtime(newest, fetch=fetch)
        claim = self.caches.claim(objects.claim_name(caller.name, session_id))
        if claim is not None and _fresh_claim(claim) and labels(claim).get(LABEL_RUNTIME_ID):
            return self._claim_runtime(claim)
        return None

    def list_runtimes(self, caller: KeyRecord) -> list[RuntimeObject]:
        """docs/runtime-api.md §8.13: starting and running sandboxes only (V1-app counts every entry as
        running)."""
        return [self.to_runtime(s, fetch=False) for s in self.caches.owned_sandboxes(caller.name) if is_live(s)]

    def running_count(self, caller: KeyRecord) -> int:
        return self._holding(caller.name)

    def _holding(self, tenant: str) -> int:
        return sum(1 for s in self.caches.owned_sandboxes(tenant) if holds_resources(s))

    def _check_limit(self, tenant: str, limit: int) -> None:
        """429 when one more sandbox would exceed the tenant's limit. The count comes from the cache, so
        replicas racing can exceed it by a little: a soft limit (docs/gateway.md)."""
        holding = self._holding(tenant)
        if holding >= limit:
            raise LimitExceeded(
                f"API key {tenant!r} already has {holding} sandboxes starting, running or in error (its limit "
                f"is {limit}); pause or stop one first"
            )

    def _limit_of(self, sandbox: Obj) -> int:
        """The running limit of a sandbox's owner: its key's profile when this gateway reads API keys, else
        the limit the control API recorded on the Sandbox, else the default."""
        record = self.caches.key_record(labels(sandbox).get(LABEL_OWNER, ""))
        if record is not None:
            return objects.running_limit(record, self.settings)
        try:
            return max(0, int(_annotations(sandbox)[ANNOTATION_MAX_RUNNING]))
        except (KeyError, ValueError):
            return self.settings.default_max_running

    # ---- /start ---------------------------------------------------------------------------------

    async def start(self, caller: KeyRecord, req: StartRequest) -> RuntimeObject:
        if caller.profile_error:
            raise InvalidRequest(
                f"the profile of API key {caller.name!r} is invalid ({caller.profile_error}); an administrator "
                "must recreate the key"
            )
        claim_name = objects.claim_name(caller.name, req.session_id)
        # validate everything before writing anything (never a half-created sandbox)
        objects.build_sandbox(req, caller, self.settings, objects.mint_runtime_id(), claim_name)
        existing = self.find_session(caller, req.session_id)
        if existing is not None and existing.status in _LIVE:
            return existing
        if existing is not None and existing.status == RuntimeStatus.PAUSED:
            return await self.resume(caller, existing.runtime_id)  # checks the limit
        if existing is not None and existing.status == RuntimeStatus.ERROR:
            failed = self.caches.sandbox(existing.runtime_id)
            restarted = await self._restart(caller, req, failed) if failed is not None else None
            if restarted is not None:
                return restarted
        self._check_limit(caller.name, objects.running_limit(caller, self.settings))
        warm = await self._start_warm(caller, req, claim_name)
        if warm is not None:
            return warm
        for _ in range(5):
            runtime_id = self.ports.mint_runtime_id()
            session_key = objects.mint_session_key()
            secret = objects.build_session_secret(
                claim_name, self.settings.namespace, caller.name, req.session_id, runtime_id, session_key
            )
            try:
                created_secret = await self._core.create_namespaced_secret(
                    self.settings.namespace, json_body(secret, client.V1Secret)
                )
            except ApiException as exc:
                if exc.status != CONFLICT:
                    raise
                answer = await self._resolve_claim(caller, claim_name, req)
                if answer is not None:
                    return answer
                continue  # the stale claim is gone: try again
            return await self._create_sandbox(caller, req, runtime_id, session_key, created_secret)
        raise SandboxConflict("could not claim the session; retry")

    # ---- /start from a warm pool ----------------------------------------------------------------

    async def _start_warm(self, caller: KeyRecord, req: StartRequest, claim_name: str) -> RuntimeObject | None:
        """The session started on a claimed pool member; None when no member could be claimed (start cold).

        Raises only what a cold start would raise as well (e.g. the API server refusing the spec)."""
        if not self.caches.secrets:
            return None
        spec = objects.build_sandbox(req, caller, self.settings, objects.mint_runtime_id(), claim_name)["spec"]
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
        ns = self.settings.namespace
        session_key = objects.mint_session_key()
        body = objects.build_session_secret(
            claim_name, ns, caller.name, req.session_id, tries[0][1]["metadata"]["name"], session_key
        )
        try:
            secret = await self._core.create_namespaced_secret(ns, json_body(body, client.V1Secret))
        except BaseException as exc:
            self._claiming -= mine
            if isinstance(exc, ApiException) and exc.status == CONFLICT:
                return None  # another call holds the session's claim: the cold path resolves it
            raise
        claimed: tuple[Obj, str] | None = None
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
                    # losers of the session's claim read the runtime id from it
                    await self._core.patch_namespaced_secret(
                        secret.metadata.name, ns, {"metadata": {"labels": {LABEL_RUNTIME_ID: name}}}
                    )
                claimed = await self._claim_member(caller, req, claim_name, session_key, pool, member)
                if claimed is not None:
                    break
        except BaseException:  # nothing claimed: the session's claim goes, and nothing half-made remains
            await self._release(secret.metadata.name, secret.metadata.uid)
            raise
        finally:
            self._claiming -= mine
        if claimed is None:
            metrics.POOL_MISSES.labels(claims.MISS_CONFLICT).inc()
            await self._release(secret.metadata.name, secret.metadata.uid)
            return None
        return await self._finish_claim(caller, req, secret.metadata.name, session_key, pool, *claimed)

    async def _claim_member(
        self, caller: KeyRecord, req: StartRequest, claim_name: str, session_key: str, pool: str, member: Obj
    ) -> tuple[Obj, str] | None:
        """(the claimed Sandbox, the member's init key); None when the member is gone or another start took it."""
        ns = self.settings.namespace
        name = member["metadata"]["name"]
        init_key = await self._init_key(member)
        if init_key is None:
            log.info("pool %s member %s has no readable init key; skipping it", pool, name)
            return None
        fresh = objects.build_sandbox(
            req,
            caller,
            self.settings,
            name,
            claim_name,
            session_key_sha256=objects.session_key_digest(session_key),
        )
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
        return claimed, init_key

    async def _init_key(self, member: Obj) -> str | None:
        """The member's init key: its throw-away session key, read once from its Secret (the gateway caches
        only session-key Secrets)."""
        ref = (member.get("spec") or {}).get("sessionKeySecretRef") or {}
        try:
            secret = await _json_of(
                await self._core.read_namespaced_secret(
                    str(ref.get("name") or ""), self.settings.namespace, _preload_content=False
                )
            )
        except ApiException as exc:  # gone with its member, or unreadable: this member cannot be claimed
            if exc.status != NOT_FOUND:
                log.warning("could not read the init key of pool member %s: %s", member["metadata"]["name"], exc.status)
            return None
        return secret_session_key(secret, str(ref.get("key") or SESSION_KEY_SECRET_KEY))

    async def _finish_claim(
        self,
        caller: KeyRecord,
        req: StartRequest,
        secret_name: str,
        session_key: str,
        pool: str,
        claimed: Obj,
        init_key: str,
    ) -> RuntimeObject:
        """After the claim: own the Secret, hand the dormant server its session, and mark the init done. Never
        raises for the init: on any failure the sandbox restarts cold in place, and is answered `starting`."""
        name = claimed["metadata"]["name"]
        self.caches.sandboxes.upsert(claimed)
        metrics.POOL_CLAIMS.labels(pool).inc()
        metrics.SANDBOXES_STARTED.inc()
        await self._own_secret(secret_name, claimed)
        env = init.pod_environment(claimed.get("spec") or {}, name, session_key)
        began = time.monotonic()
        problem = await self._post_init(claimed, init_key, init.init_request(session_key, env))
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

    async def _post_init(self, sandbox: Obj, init_key: str, body: Obj) -> str | None:
        """POST /api/init to the claimed pod; None when the server answered that it is ready, else why not."""
        status = sandbox.get("status") or {}
        url = upstream_base(str(status.get("podIP") or ""), service_port(sandbox, AGENT_PORT_NAME)) + INIT_PATH
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
        # As after a re-/start of a failed sandbox: the status still describes the pod being replaced (the patch
        # changes no generation), so it is marked as describing none, which reads `starting` until the operator
        # reports on the new pod.
        try:
            cleared = await self._kube.patch_sandbox_status(ns, name, {"observedGeneration": None})
        except (ApiException, OSError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not mark the status of sandbox %s as outdated: %s", name, exc)
            cleared = None
        if cleared is None:
            cleared = {**patched, "status": {**(patched.get("status") or {}), "observedGeneration": None}}
        self.caches.sandboxes.upsert(cleared)
        log.info("restarting claimed sandbox %s cold: %s", name, reason)
        return cleared

    async def _resolve_claim(self, caller: KeyRecord, claim_name: str, req: StartRequest) -> RuntimeObject | None:
        """Another call holds the claim. Its runtime if still usable (resumed when paused, restarted in place
        when failed); else delete the stale claim."""
        ns = self.settings.namespace
        try:
            claim = await _json_of(await self._core.read_namespaced_secret(claim_name, ns, _preload_content=False))
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        runtime_id = labels(claim).get(LABEL_RUNTIME_ID, "")
        sandbox = await self._kube.get_sandbox(ns, runtime_id)
        if sandbox is not None and not _belongs(sandbox, caller.name, claim_name):
            sandbox = None  # a pool member a warm start has not claimed (yet): never another session's sandbox
        owned = bool((claim.get("metadata") or {}).get("ownerReferences"))
        if sandbox is not None and is_live(sandbox):
            self.caches.sandboxes.upsert(sandbox)
            return self.to_runtime(sandbox)
        if sandbox is None and not owned and _age_seconds(claim) < CLAIM_GRACE_SECONDS:
            return self._claim_runtime(claim)  # its creator is between the two creates
        if sandbox is not None and not sandbox["metadata"].get("deletionTimestamp"):
            status, _ = runtime_status(sandbox, alive=False)
            self.caches.sandboxes.upsert(sandbox)
            if status == RuntimeStatus.PAUSED:  # the session's runtime: resume it rather than start another
                return await self.resume(caller, runtime_id)
            if status == RuntimeStatus.ERROR:  # failed: restart it in place, keeping its workspace
                restarted = await self._restart(caller, req, sandbox)
                if restarted is not None:
                    return restarted
        uid = claim["metadata"]["uid"]
        try:
            await self._core.delete_namespaced_secret(
                claim_name, ns, body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
            )
        except ApiException as exc:
            if exc.status not in (NOT_FOUND, CONFLICT):
                raise
        self.caches.session_keys.discard(claim_name)
        return None

    async def _create_sandbox(
        self, caller: KeyRecord, req: StartRequest, runtime_id: str, session_key: str, secret: Any
    ) -> RuntimeObject:
        ns = self.settings.namespace
        body = objects.build_sandbox(
            req,
            caller,
            self.settings,
            runtime_id,
            secret.metadata.name,
            session_key_sha256=objects.session_key_digest(session_key),
        )
        try:
            created = await self._kube.create_sandbox(ns, body)
        except ApiException as exc:
            await self._release(secret.metadata.name, secret.metadata.uid)
            if exc.status in (400, 422):
                raise InvalidRequest(api_exception_detail(exc)) from exc
            raise
        except BaseException:
            await self._release(secret.metadata.name, secret.metadata.uid)
            raise
        await self._own_secret(secret.metadata.name, created)
        self.caches.sandboxes.upsert(created)
        metrics.SANDBOXES_STARTED.inc()
        log.info("started sandbox %s for key %s", runtime_id, caller.name)
        return runtime_object(self.settings, runtime_id, req.session_id, created, session_key, alive=False)

    async def _own_secret(self, name: str, sandbox: Obj) -> None:
        """Make the session's claim Secret owned by its Sandbox, so it is garbage-collected with it."""
        # Not blocking the Sandbox's deletion: that would need `update` on sandboxes/finalizers, which
        # the gateway's RBAC does not grant.
        patch = {"metadata": {"ownerReferences": [owner_reference(sandbox, block_owner_deletion=False)]}}
        try:
            owned_secret = await self._core.patch_namespaced_secret(
                name, self.settings.namespace, patch, _preload_content=False
            )
            self.caches.session_keys.upsert(await _json_of(owned_secret))
        except ApiException as exc:  # the claim still works; only GC on stop is affected
            log.warning("could not make session secret of %s owned: %s", sandbox["metadata"]["name"], exc.status)

    async def _release(self, name: str, uid: str) -> None:
        try:
            await self._core.delete_namespaced_secret(
                name,
                self.settings.namespace,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)),
            )
        except ApiException as exc:
            if exc.status not in (NOT_FOUND, CONFLICT):
                log.warning("could not release claim %s: %s", name, exc.status)

    async def _restart(self, caller: KeyRecord, req: StartRequest, sandbox: Obj) -> RuntimeObject | None:
        """Re-/start of a failed session: the same Sandbox (runtime_id, session key, workspace PVC) with the
        spec the request asks for, `state: Running` and a fresh `restarted-at` annotation, which the operator
        puts into the pod's spec hash so that the pod is replaced even when nothing else changed. None when the
        Sandbox is gone meanwhile (the caller then starts a new one)."""
        ns = self.settings.namespace
        runtime_id = sandbox["metadata"]["name"]
        spec = sandbox.get("spec") or {}
        session_key = self.caches.session_key(sandbox)
        digest = (
            objects.session_key_digest(session_key)
            if session_key
            else _annotations(sandbox).get(ANNOTATION_SESSION_KEY_SHA256)
        )
        secret = str((spec.get("sessionKeySecretRef") or {}).get("name") or "")
        fresh = objects.build_sandbox(req, caller, self.settings, runtime_id, secret, session_key_sha256=digest)
        try:
            patched = await self._kube.patch_sandbox(
                ns, runtime_id, objects.restart_patch(sandbox, fresh, datetime.now(UTC))
            )
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                self.caches.sandboxes.discard(runtime_id)
                return None
            if exc.status in (400, 422):
                raise InvalidRequest(api_exception_detail(exc)) from exc
            raise
        # The status still describes the failed attempt, at the same generation when the spec did not change.
        # Without observedGeneration it describes no generation, so the sandbox answers `starting` (as after
        # a resume, docs/runtime-api.md §2.3) until the operator reports on the restart and writes it back.
        try:
            cleared = await self._kube.patch_sandbox_status(ns, runtime_id, {"observedGeneration": None})
        except (ApiException, OSError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not mark the status of restarted sandbox %s as outdated: %s", runtime_id, exc)
            cleared = None
        if cleared is None:  # answer `starting` all the same; the cache catches up with the watch
            cleared = {**patched, "status": {**(patched.get("status") or {}), "observedGeneration": None}}
        self.caches.sandboxes.upsert(cleared)
        log.info("restarted failed sandbox %s for key %s in place", runtime_id, caller.name)
        return runtime_object(self.settings, runtime_id, req.session_id, cleared, session_key, alive=False)

    # ---- pause / resume / stop ------------------------------------------------------------------

    async def _set_state(self, runtime_id: str, state: DesiredState, annotations: dict[str, str] | None = None) -> Obj:
        """One merge patch of `spec.state` (and of annotations that must change with it)."""
        patch: dict[str, Any] = {"spec": {"state": state.value}}
        if annotations:
            patch["metadata"] = {"annotations": annotations}
        patched = await self._kube.patch_sandbox(self.settings.namespace, runtime_id, patch)
        self.caches.sandboxes.upsert(patched)
        return patched

    async def pause(self, caller: KeyRecord, runtime_id: str) -> RuntimeObject:
        sandbox = self.owned(caller, runtime_id)
        if (
            sandbox["metadata"].get("deletionTimestamp")
            or (sandbox.get("spec") or {}).get("state") == DesiredState.PAUSED
        ):
            return self.to_runtime(sandbox)
        return self.to_runtime(await self._set_state(runtime_id, DesiredState.PAUSED))

    async def resume(self, caller: KeyRecord, runtime_id: str) -> RuntimeObject:
        sandbox = self.owned(caller, runtime_id)
        if sandbox["metadata"].get("deletionTimestamp"):
            raise SandboxNotFound(f"runtime {runtime_id} is stopped")
        if (sandbox.get("spec") or {}).get("state") != DesiredState.PAUSED:
            return self.to_runtime(sandbox)
        limit = objects.running_limit(caller, self.settings)
        self._check_limit(caller.name, limit)  # a resumed sandbox gets a pod again
        annotations = {ANNOTATION_MAX_RUNNING: str(limit)}
        if self.settings.rotate_session_key_on_resume:
            # The Secret first: the pod may start as soon as the state says Running, and must get the new key.
            # The digest follows in the same patch as the state, so the router knows the new key when it runs.
            annotations[ANNOTATION_SESSION_KEY_SHA256] = objects.session_key_digest(await self._rotate_key(sandbox))
        elif ANNOTATION_SESSION_KEY_SHA256 not in _annotations(sandbox):
            key = self.caches.session_key(sandbox)  # a sandbox from before the annotation: add it now
            if key:
                annotations[ANNOTATION_SESSION_KEY_SHA256] = objects.session_key_digest(key)
        return self.to_runtime(await self._set_state(runtime_id, DesiredState.RUNNING, annotations))

    async def _rotate_key(self, sandbox: Obj) -> str:
        """Write a new session key into the sandbox's Secret; returns it."""
        ref = (sandbox.get("spec") or {}).get("sessionKeySecretRef") or {}
        name = str(ref.get("name") or "")
        key = objects.mint_session_key()
        patched = await self._core.patch_namespaced_secret(
            name,
            self.settings.namespace,
            {"stringData": {SESSION_KEY_SECRET_KEY: key}},
            _preload_content=False,
        )
        self.caches.session_keys.upsert(await _json_of(patched))
        return key

    async def stop(self, caller: KeyRecord, runtime_id: str) -> None:
        sandbox = self.owned(caller, runtime_id)
        await self._delete_sandbox(runtime_id)
        name = str(((sandbox.get("spec") or {}).get("sessionKeySecretRef") or {}).get("name") or "")
        if name:
            try:
                await self._core.delete_namespaced_secret(name, self.settings.namespace)
            except ApiException as exc:
                if exc.status != NOT_FOUND:
                    raise
            self.caches.session_keys.discard(name)

    async def _delete_sandbox(self, runtime_id: str) -> None:
        result = await self._kube.delete_sandbox(self.settings.namespace, runtime_id)
        # A Sandbox that finalizers still hold stays cached, marked as being deleted, until the watch drops it.
        if result is not None and result.get("kind") == KIND and result["metadata"].get("deletionTimestamp"):
            self.caches.sandboxes.upsert(result)
        else:
            self.caches.sandboxes.discard(runtime_id)

    # ---- router: wake on request ------------------------------------------------------------------

    async def wake(self, runtime_id: str, timeout: float) -> Obj | None:
        """Resume a paused sandbox and wait until its agent server answers; None on timeout.

        The router calls it only for requests that carry the sandbox's session key. `LimitExceeded` when
        resuming would put the owner over its running limit; Kubernetes errors propagate (the router maps them).
        """
        loop_deadline = datetime.now(UTC).timestamp() + timeout
        sandbox = self.caches.sandbox(runtime_id)
        if sandbox is not None and (sandbox.get("spec") or {}).get("state") == DesiredState.PAUSED:
            self._check_limit(labels(sandbox).get(LABEL_OWNER, ""), self._limit_of(sandbox))
            try:
                await self._set_state(runtime_id, DesiredState.RUNNING)
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
