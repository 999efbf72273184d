"""The API calls behind the control API: start (idempotent), read, pause, resume, stop.

A /start derives its Sandbox once (`objects.derive`: a request the settings or the key refuse is refused before
anything is written), then takes the path `start.start_path` chooses from what the caches show: the session's live
runtime as it is, its paused one resumed, its failed one restarted in place, or a new one, warm from a pool
(`WarmStarts`, which this class extends) or cold. The claim that makes /start idempotent across calls and replicas
is the session's Secret (`session_claims`); a caller that loses it resolves the claim the same way. Every path that
makes a sandbox hold resources (new, resumed, restarted) is admitted first (`admission`: the running limit, decided
atomically, and the key's revocation); an admission whose write the API server refused is released again.
"""

import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api import limits
from kubehands.api.admission import Admission, Admissions, revoked_detail
from kubehands.api.control.revocation import pause_holding
from kubehands.api.control.start import StartPath, start_path
from kubehands.api.errors import Forbidden, GatewayError, SandboxConflict, SandboxNotFound, api_exception_detail
from kubehands.api.keys import KeyRecord
from kubehands.api.limits import is_live
from kubehands.api.observe import metrics
from kubehands.api.observe.alive import AliveTracker
from kubehands.api.observe.caches import Caches
from kubehands.api.observe.pod_details import PodDetails
from kubehands.api.pools import claims
from kubehands.api.pools.warm_start import WarmStarts
from kubehands.api.runtime import (
    COLD,
    is_pool_member,
    runtime_object,
    runtime_status,
    sandbox_session_id,
    secret_session_key,
    start_annotations,
)
from kubehands.api.schemas import RuntimeObject
from kubehands.api.session_claims import CLAIM_GRACE_SECONDS, age_seconds, fresh_claim
from kubehands.api.settings import Settings
from kubehands.crd.constants import ANNOTATION_SESSION_KEY_SHA256, KIND, LABEL_OWNER
from kubehands.crd.model import DesiredState
from kubehands.crd.names import session_label
from kubehands.kube import CONFLICT, NOT_FOUND, Kube, labels
from kubehands.spec import objects
from kubehands.spec.constants import ANNOTATION_MAX_RUNNING, ANNOTATION_SESSION_ID, LABEL_RUNTIME_ID
from kubehands.spec.errors import InvalidRequest
from kubehands.spec.request import StartRequest

log = logging.getLogger(__name__)

# Tries to create the session's claim, each after deleting a stale one.
CLAIM_TRIES = 5
Obj = dict[str, Any]


def _annotations(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def refused(exc: BaseException) -> bool:
    """The API server (or the gateway) refused the write: nothing was written. A timeout or a lost connection may
    have written, so its admission stays (it ages out) rather than let the limit be exceeded."""
    if isinstance(exc, ApiException):
        return exc.status < 500
    return isinstance(exc, GatewayError | InvalidRequest)


def _belongs(sandbox: Obj, tenant: str, claim_name: str) -> bool:
    """`sandbox` is the one the session's claim Secret was made for: the tenant's, and using that Secret. (While a
    warm start is under way, the claim names a pool member that may still be unclaimed, or claimed by another.)"""
    ref = (sandbox.get("spec") or {}).get("sessionKeySecretRef") or {}
    return labels(sandbox).get(LABEL_OWNER) == tenant and ref.get("name") == claim_name


class SandboxService(WarmStarts):
    def __init__(
        self,
        settings: Settings,
        caches: Caches,
        kube: Kube,
        alive: AliveTracker,
        http: httpx.AsyncClient,
        details: PodDetails,
    ) -> None:
        super().__init__(settings, caches, kube, alive, http)
        self.details = details
        self.admissions = Admissions(kube.core, settings.namespace, partial(limits.holding_slots, caches))

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
            if claim is not None and fresh_claim(claim) and labels(claim).get(LABEL_OWNER) == caller.name:
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
        if claim is not None and fresh_claim(claim) and labels(claim).get(LABEL_RUNTIME_ID):
            return self._claim_runtime(claim)
        return None

    def list_runtimes(self, caller: KeyRecord) -> list[RuntimeObject]:
        """docs/runtime-api.md §8.13: starting and running sandboxes only (V1-app counts every entry as
        running)."""
        return [self.to_runtime(s, fetch=False) for s in self.caches.owned_sandboxes(caller.name) if is_live(s)]

    def running_count(self, caller: KeyRecord) -> int:
        return limits.holding(self.caches, caller.name)

    # ---- /start ---------------------------------------------------------------------------------

    async def start(self, caller: KeyRecord, req: StartRequest) -> RuntimeObject:
        if caller.profile_error:
            raise InvalidRequest(
                f"the profile of API key {caller.name!r} is invalid ({caller.profile_error}); an administrator "
                "must recreate the key"
            )
        derived = objects.derive(req, caller, self.settings)  # refused before anything is written
        claim_name = objects.claim_name(caller.name, req.session_id)
        existing = self.find_session(caller, req.session_id)
        failed = self.caches.sandbox(existing.runtime_id) if existing is not None else None
        path = start_path(
            existing.status if existing is not None else None,
            failed_sandbox_seen=failed is not None,
            pools_served=self.caches.secrets,
        )
        if path == StartPath.LIVE and existing is not None:
            return existing
        if path == StartPath.RESUME and existing is not None:
            return await self.resume(caller, existing.runtime_id)  # checks the limit
        if path == StartPath.RESTART and failed is not None:
            restarted = await self._restart(caller, req, derived, failed)
            if restarted is not None:
                return restarted
            path = StartPath.WARM if self.caches.secrets else StartPath.COLD  # gone meanwhile: a new one
        admission = await self.admissions.admit(caller.name, claim_name, objects.running_limit(caller, self.settings))
        try:
            started: RuntimeObject | None = None
            reason: str | None = claims.MISS_NO_POOL  # a gateway that serves no pools: none could serve it
            if path == StartPath.WARM:
                started, reason = await self._start_warm(caller, req, derived, claim_name)
            if started is None:
                started = await self._start_cold(caller, req, derived, claim_name, reason)
        except BaseException as exc:
            if refused(exc):
                await self.admissions.release(admission)
            raise
        await self._unless_revoked(caller.name)
        return started

    async def _admitted(self, admission: Admission, write: Awaitable[Obj]) -> Obj:
        """Await `write`, the write an admission allowed; the admission is released when it was refused."""
        try:
            return await write
        except BaseException as exc:
            if refused(exc):
                await self.admissions.release(admission)
            raise

    async def _unless_revoked(self, tenant: str) -> None:
        """After an admitted write: when the key went meanwhile (revoked while the write was on its way, after the
        revocation paused what the cache showed), pause what it holds and refuse."""
        if self.caches.secrets and self.caches.key_record(tenant) is None:
            await pause_holding(self.settings, self.caches, self._kube, tenant)
            raise Forbidden(revoked_detail(tenant))

    async def _start_cold(
        self, caller: KeyRecord, req: StartRequest, derived: objects.Derived, claim_name: str, reason: str | None
    ) -> RuntimeObject:
        """A new Sandbox; `reason`: why no pool served the /start, which it records (`runtime.start_annotations`)."""
        for _ in range(CLAIM_TRIES):
            runtime_id = self.ports.mint_runtime_id()
            session_key = objects.mint_session_key()
            try:
                secret = await self.claims.create(claim_name, caller.name, req.session_id, runtime_id, session_key)
            except ApiException as exc:
                if exc.status != CONFLICT:
                    raise
                answer = await self._resolve_claim(caller, claim_name, req, derived)
                if answer is not None:
                    return answer
                continue  # the stale claim is gone: try again
            return await self._create_sandbox(caller, req, derived, runtime_id, session_key, secret, reason)
        raise SandboxConflict("could not claim the session; retry")

    async def _resolve_claim(
        self, caller: KeyRecord, claim_name: str, req: StartRequest, derived: objects.Derived
    ) -> RuntimeObject | None:
        """Another call holds the claim. Its runtime if still usable (the same paths as a /start: as it is, resumed
        when paused, restarted in place when failed); else delete the stale claim (None: retry the claim)."""
        claim = await self.claims.read(claim_name)
        if claim is None:
            return None
        runtime_id = labels(claim).get(LABEL_RUNTIME_ID, "")
        sandbox = await self._kube.get_sandbox(self.settings.namespace, runtime_id)
        if sandbox is not None and not _belongs(sandbox, caller.name, claim_name):
            sandbox = None  # a pool member a warm start has not claimed (yet): never another session's sandbox
        owned = bool((claim.get("metadata") or {}).get("ownerReferences"))
        if sandbox is None and not owned and age_seconds(claim) < CLAIM_GRACE_SECONDS:
            return self._claim_runtime(claim)  # its creator is between the two creates
        status = runtime_status(sandbox, alive=False)[0] if sandbox is not None else None
        path = start_path(status, failed_sandbox_seen=sandbox is not None, pools_served=False)
        if sandbox is not None and path != StartPath.COLD:
            self.caches.sandboxes.upsert(sandbox)
        if path == StartPath.LIVE and sandbox is not None:
            return self.to_runtime(sandbox)
        if path == StartPath.RESUME:  # the session's runtime: resume it rather than start another
            return await self.resume(caller, runtime_id)
        if path == StartPath.RESTART and sandbox is not None:  # failed: restart it in place, keeping its workspace
            restarted = await self._restart(caller, req, derived, sandbox)
            if restarted is not None:
                return restarted
        await self.claims.delete_stale(claim_name, claim["metadata"]["uid"])
        return None

    async def _create_sandbox(
        self, caller: KeyRecord, req: StartRequest, derived: objects.Derived, runtime_id: str, session_key: str,
        secret: Any,
        reason: str | None,
    ) -> RuntimeObject:
        ns = self.settings.namespace
        digest = objects.session_key_digest(session_key)
        body = objects.sandbox(derived, runtime_id, secret.metadata.name, session_key_sha256=digest)
        recorded = start_annotations(COLD, reason)
        body["metadata"]["annotations"] |= {k: v for k, v in recorded.items() if v is not None}
        try:
            created = await self._kube.create_sandbox(ns, body)
        except ApiException as exc:
            await self.claims.release(secret.metadata.name, secret.metadata.uid)
            if exc.status in (400, 422):
                raise InvalidRequest(api_exception_detail(exc)) from exc
            raise
        except BaseException:
            await self.claims.release(secret.metadata.name, secret.metadata.uid)
            raise
        await self.claims.own(secret.metadata.name, created)
        self.caches.sandboxes.upsert(created)
        metrics.SANDBOXES_STARTED.inc()
        log.info("started sandbox %s for key %s", runtime_id, caller.name)
        return runtime_object(self.settings, runtime_id, req.session_id, created, session_key, alive=False)

    async def _restart(
        self, caller: KeyRecord, req: StartRequest, derived: objects.Derived, sandbox: Obj
    ) -> RuntimeObject | None:
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
        fresh = objects.sandbox(derived, runtime_id, secret, session_key_sha256=digest)
        # Admitted like a new one: at the limit it adds nothing (its failed self already counts), but a key over its
        # limit (lowered meanwhile), or a sandbox paused since the cache saw it fail, is refused.
        admission = await self.admissions.admit(
            caller.name, limits.slot_of(sandbox), objects.running_limit(caller, self.settings)
        )
        try:
            patch = objects.restart_patch(sandbox, fresh, datetime.now(UTC))
            patched = await self._admitted(admission, self._kube.patch_sandbox(ns, runtime_id, patch))
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                self.caches.sandboxes.discard(runtime_id)
                return None
            if exc.status in (400, 422):
                raise InvalidRequest(api_exception_detail(exc)) from exc
            raise
        cleared = await self._mark_status_outdated(patched)  # it answers `starting` until the operator reports
        await self._unless_revoked(caller.name)
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
        began = time.time()
        paused = await self._set_state(runtime_id, DesiredState.PAUSED)
        await self.admissions.forget(caller.name, limits.slot_of(sandbox), began)  # it no longer counts
        return self.to_runtime(paused)

    async def resume(self, caller: KeyRecord, runtime_id: str) -> RuntimeObject:
        sandbox = self.owned(caller, runtime_id)
        if sandbox["metadata"].get("deletionTimestamp"):
            raise SandboxNotFound(f"runtime {runtime_id} is stopped")
        if (sandbox.get("spec") or {}).get("state") != DesiredState.PAUSED:
            return self.to_runtime(sandbox)
        limit = objects.running_limit(caller, self.settings)
        admission = await self.admissions.admit(caller.name, limits.slot_of(sandbox), limit)  # it gets a pod again
        resumed = await self._admitted(admission, self._resume(sandbox, limit))
        await self._unless_revoked(caller.name)
        return self.to_runtime(resumed)

    async def _resume(self, sandbox: Obj, limit: int) -> Obj:
        annotations = {ANNOTATION_MAX_RUNNING: str(limit)}
        if self.settings.rotate_session_key_on_resume:
            # The Secret first: the pod may start as soon as the state says Running, and must get the new key.
            # The digest follows in the same patch as the state, so the router knows the new key when it runs.
            key = await self.claims.rotate_key(sandbox)
            annotations[ANNOTATION_SESSION_KEY_SHA256] = objects.session_key_digest(key)
        elif ANNOTATION_SESSION_KEY_SHA256 not in _annotations(sandbox):
            key = self.caches.session_key(sandbox) or ""  # a sandbox from before the annotation: add it now
            if key:
                annotations[ANNOTATION_SESSION_KEY_SHA256] = objects.session_key_digest(key)
        return await self._set_state(sandbox["metadata"]["name"], DesiredState.RUNNING, annotations)

    async def stop(self, caller: KeyRecord, runtime_id: str) -> None:
        sandbox = self.owned(caller, runtime_id)
        began = time.time()
        await self._delete_sandbox(runtime_id)
        await self.admissions.forget(caller.name, limits.slot_of(sandbox), began)
        name = str(((sandbox.get("spec") or {}).get("sessionKeySecretRef") or {}).get("name") or "")
        if name:
            try:
                await self._kube.core.delete_namespaced_secret(name, self.settings.namespace)
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
