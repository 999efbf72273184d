"""kopf handlers: thin wrappers that find the Sandbox and its pod, then call `reconcile.converge`, or find the
SandboxPool, then call `pool_reconcile.converge_pool`.

Triggers, all level-based (each one recomputes everything from current state):
- Sandbox resume/create/update: the spec changed, or the operator (re)started;
- any event of a kubehands pod: the pod progressed, crashed, or vanished;
- SandboxPool resume/create/update (spec.size, also through `/scale`, or the template changed);
- any event of a pool member: it progressed, failed, was claimed (its pool label is gone) or deleted;
- the culling loop (`cull_forever`): maximum lifetime, idle culling, paused TTL, a safety net for missed pod
  events, and a resync of every pool (failed members past their grace, orphan member Secrets, missed member
  events).
"""

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.crd import constants
from kubehands.kube import SANDBOX_POOLS, SANDBOXES, Obj
from kubehands.operator import metrics, pool_reconcile, pools, reconcile
from kubehands.operator.culling import CullAction, cull_decision
from kubehands.operator.plan import drifted, start_deadline_passed
from kubehands.operator.status import api_error_message

log = logging.getLogger(__name__)
# After a timed-out API call (a slow or unreachable API server), kopf retries the handler this much later.
TIMEOUT_RETRY_SECONDS = 5
SANDBOX_PODS = {
    constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
    constants.LABEL_COMPONENT: constants.COMPONENT_SANDBOX,
}
# Both indexes: (namespace, Sandbox name) -> the bodies (Sandboxes, or their pods) as API JSON dicts.
SandboxKey = tuple[str, str]
SandboxIndex = kopf.Index[SandboxKey, Obj]
# (namespace, pool name) -> the pool's bodies; and -> the names of the Sandboxes claimed from it.
PoolKey = tuple[str, str]
PoolIndex = kopf.Index[PoolKey, Obj]
ClaimIndex = kopf.Index[PoolKey, str]


def _namespaced(namespace: str | None) -> str:
    """kopf passes `namespace=None` only for cluster-scoped objects; Sandboxes and pods are namespaced."""
    assert namespace is not None, "Sandboxes and pods are namespaced"
    return namespace


@kopf.index(**SANDBOXES.coordinates())
def sandbox_bodies(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[SandboxKey, Obj]:
    """Latest body of every Sandbox, for the culling loop (indexes need no finalizer, unlike timers)."""
    return {(_namespaced(namespace), name): dict(body)}


@kopf.index("pods", labels=SANDBOX_PODS)
def sandbox_pods(
    namespace: str | None, annotations: kopf.Annotations, body: kopf.Body, **_: Any
) -> dict[SandboxKey, Obj]:
    owner = annotations.get(constants.ANNOTATION_SANDBOX_NAME)
    return {(_namespaced(namespace), owner): dict(body)} if owner else {}


def _indexed_pod(index: SandboxIndex, namespace: str, name: str) -> Mapping[str, Any] | None:
    return next(iter(index.get((namespace, name), [])), None)


async def _converge(memo: kopf.Memo, index: SandboxIndex, namespace: str, name: str) -> list[str]:
    lock = memo.locks.get((namespace, name))
    if lock is None:
        lock = memo.locks[(namespace, name)] = asyncio.Lock()
    async with lock:  # `lock` stays referenced while held, so the weak dict keeps it
        try:
            problems = await reconcile.converge(
                memo.kube, memo.config, namespace, name, lambda: _indexed_pod(index, namespace, name)
            )
        except Exception:
            metrics.RECONCILES.labels(metrics.KIND_SANDBOX, metrics.OUTCOME_ERROR).inc()
            raise
    metrics.RECONCILES.labels(metrics.KIND_SANDBOX, metrics.OUTCOME_INVALID if problems else metrics.OUTCOME_OK).inc()
    return problems


def log_failure(action: str, namespace: str | None, name: str | None, error: BaseException) -> None:
    """Log a failed check of one Sandbox. A timeout, a lost connection or an error answer of the API server
    is expected and retried: one warning line, so an API server outage does not flood the log with a
    traceback per Sandbox and interval. Anything else is a bug and keeps its traceback."""
    if isinstance(error, TimeoutError):
        log.warning("%s %s/%s: a Kubernetes API call timed out; retrying later", action, namespace, name)
    elif isinstance(error, ApiException):
        log.warning(
            "%s %s/%s: the API server answered %s %s; retrying later",
            action,
            namespace,
            name,
            error.status,
            api_error_message(error.body, error.reason),
        )
    elif isinstance(error, aiohttp.ClientError):
        log.warning("%s %s/%s: %r; retrying later", action, namespace, name, error)
    else:
        log.error("%s %s/%s failed", action, namespace, name, exc_info=error)


def retry_timeouts(error: BaseException) -> BaseException:
    """The exception a kopf handler raises for `error`: a timeout becomes a TemporaryError, which kopf logs as
    one line (no traceback) and retries after TIMEOUT_RETRY_SECONDS; anything else is raised as it is."""
    if isinstance(error, TimeoutError):
        return kopf.TemporaryError("a Kubernetes API call timed out", delay=TIMEOUT_RETRY_SECONDS)
    return error


# kopf passes indexes (`sandbox_pods`, ...) as keyword arguments by name, which its handler protocols cannot
# declare: mypy sees an unexpected required argument.
@kopf.on.resume(**SANDBOXES.coordinates())
@kopf.on.create(**SANDBOXES.coordinates())
@kopf.on.update(**SANDBOXES.coordinates())  # type: ignore[arg-type]  # an index argument: see the comment above
async def reconcile_sandbox(
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    sandbox_pods: SandboxIndex,
    old: Mapping[str, Any] | None = None,
    new: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    try:
        with metrics.counting_errors("sandbox"):
            problems = await _converge(memo, sandbox_pods, _namespaced(namespace), name)
    except TimeoutError as e:
        raise retry_timeouts(e) from e
    # An update that carries the gateway's init mark ends a warm start; after the converge, as kopf repeats a
    # handler that failed.
    warm = metrics.warm_start(old, new, datetime.now(UTC)) if new is not None else None
    if warm is not None:
        metrics.START_SECONDS.labels(metrics.START_WARM).observe(warm)
    if problems:
        # Status already says Ready=False/InvalidSpec; retrying cannot help until the spec changes.
        raise kopf.PermanentError("invalid spec: " + "; ".join(problems))


# kopf passes indexes (`sandbox_pods`, ...) as keyword arguments by name, which its handler protocols cannot
# declare: mypy sees an unexpected required argument.
@kopf.on.event("pods", labels=SANDBOX_PODS)  # type: ignore[arg-type]  # an index argument: see the comment above
async def pod_changed(
    namespace: str | None, annotations: kopf.Annotations, memo: kopf.Memo, sandbox_pods: SandboxIndex, **_: Any
) -> None:
    owner = annotations.get(constants.ANNOTATION_SANDBOX_NAME)
    if owner and "kube" in memo:
        try:
            with metrics.counting_errors("pod_event"):
                await _converge(memo, sandbox_pods, _namespaced(namespace), owner)
        except TimeoutError as e:
            # kopf never retries event handlers; the culling loop's resync heals a missed pod change.
            log_failure("converging after a pod event", namespace, owner, e)


async def cull_and_resync(memo: kopf.Memo, body: Mapping[str, Any], pods: SandboxIndex) -> None:
    """One Sandbox's periodic check: delete it past its maximum lifetime, pause it when idle, delete it when paused
    too long, else heal drift or report a passed start deadline."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    now = datetime.now(UTC)
    decision = cull_decision(body, memo.config, now)
    if decision is not None and decision.action == CullAction.PAUSE:
        if await reconcile.pause_idle_sandbox(memo.kube, body):  # the update handler then deletes the pod
            log.info("paused idle sandbox %s/%s: %s", namespace, name, decision.message)
            metrics.CULLS.labels(metrics.cull_reason(decision, body)).inc()
    elif decision is not None and decision.action == CullAction.DELETE:
        if await reconcile.delete_culled_sandbox(memo.kube, body, decision.reason, decision.message):
            log.info("deleted sandbox %s/%s (%s): %s", namespace, name, decision.reason, decision.message)
            metrics.CULLS.labels(metrics.cull_reason(decision, body)).inc()
    elif drifted(body, _indexed_pod(pods, namespace, name)) or start_deadline_passed(
        body, now, memo.config.start_timeout_seconds
    ):
        await _converge(memo, pods, namespace, name)


async def cull_forever(
    memo: kopf.Memo, sandboxes: SandboxIndex, pods: SandboxIndex, pools_index: PoolIndex, claims: ClaimIndex
) -> None:
    """The operator-wide culling loop, started at startup: every Sandbox, then every pool.

    Not a `@kopf.timer`: kopf puts a finalizer on every object that has a timer, and a finalizer would
    make Sandboxes undeletable whenever the operator is down or uninstalled.
    """
    while True:
        await asyncio.sleep(memo.config.cull_interval_seconds)
        for store in list(sandboxes.values()):
            for body in list(store):
                try:
                    with metrics.counting_errors("culling"):
                        await cull_and_resync(memo, body, pods)
                except Exception as e:  # noqa: BLE001 - one broken Sandbox must not stop culling for all
                    metadata = body.get("metadata") or {}
                    log_failure("culling", metadata.get("namespace"), metadata.get("name"), e)
        await resync_pools(memo, pools_index, claims)


# ---- Warm pools (docs/design/0010-warm-pools.md) -------------------------------------------------------------


@kopf.index(**SANDBOX_POOLS.coordinates())
def pool_bodies(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[PoolKey, Obj]:
    """Latest body of every SandboxPool, for the periodic resync."""
    return {(_namespaced(namespace), name): dict(body)}


@kopf.index(**SANDBOXES.coordinates())
def pool_claims(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[PoolKey, str]:
    """The Sandboxes claimed from each pool (annotation `claimed-from`): the pool's `status.claimed`."""
    pool = pools.claimed_from(body)
    return {(_namespaced(namespace), pool): name} if pool else {}


class PoolGate:
    """Serialises the converges of one pool. A trigger that arrives while one runs does not queue up behind it:
    it asks the running one for one more round, which reads everything afresh, so a burst of member events
    costs two converges, not one each."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.again = False


async def _converge_pool(
    memo: kopf.Memo, claims: ClaimIndex, namespace: str, name: str, *, sweep: bool = False
) -> list[str]:
    """Converge the pool (see PoolGate); returns its spec problems, or [] when the running converge takes over."""
    key = (namespace, name)
    gate = memo.pool_gates.get(key)
    if gate is None:
        gate = memo.pool_gates[key] = PoolGate()
    if gate.lock.locked():
        gate.again = True
        return []
    async with gate.lock:  # `gate` stays referenced while held, so the weak dict keeps it
        while True:
            gate.again = False
            try:
                converged = await pool_reconcile.converge_pool(
                    memo.kube, memo.config, namespace, name, lambda: len(claims.get(key, [])), sweep=sweep
                )
            except Exception:
                metrics.RECONCILES.labels(metrics.KIND_POOL, metrics.OUTCOME_ERROR).inc()
                raise
            outcome = metrics.OUTCOME_INVALID if converged.problems else metrics.OUTCOME_OK
            metrics.RECONCILES.labels(metrics.KIND_POOL, outcome).inc()
            _remember_members(memo, namespace, name, converged.members)
            if not gate.again:
                return converged.problems


def _remember_members(memo: kopf.Memo, namespace: str, pool: str, members: set[str]) -> None:
    """Which pool each unclaimed member belongs to: a member event without the pool label (a claim) then still
    names the pool that must refill."""
    known: dict[SandboxKey, str] = memo.pool_members
    for key in [k for k, p in known.items() if p == pool and k[0] == namespace and k[1] not in members]:
        del known[key]
    known.update({(namespace, member): pool for member in members})


# kopf passes indexes (`pool_claims`, ...) as keyword arguments by name, which its handler protocols cannot
# declare: mypy sees an unexpected required argument.
@kopf.on.resume(**SANDBOX_POOLS.coordinates())
@kopf.on.create(**SANDBOX_POOLS.coordinates())
@kopf.on.update(**SANDBOX_POOLS.coordinates())  # type: ignore[arg-type]  # an index argument: see the comment above
async def reconcile_pool(
    namespace: str | None, name: str, memo: kopf.Memo, pool_claims: ClaimIndex, **_: Any
) -> None:
    try:
        with metrics.counting_errors("pool"):
            problems = await _converge_pool(memo, pool_claims, _namespaced(namespace), name)
    except TimeoutError as e:
        raise retry_timeouts(e) from e
    if problems:
        # Status already says Ready=False/InvalidSpec; retrying cannot help until the spec changes.
        raise kopf.PermanentError("invalid spec: " + "; ".join(problems))


# kopf passes indexes (`pool_claims`, ...) as keyword arguments by name, which its handler protocols cannot
# declare: mypy sees an unexpected required argument.
@kopf.on.event(**SANDBOXES.coordinates())  # type: ignore[arg-type]  # an index argument: see the comment above
async def member_changed(
    event: kopf.RawEvent,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    pool_claims: ClaimIndex,
    **_: Any,
) -> None:
    """Refill a pool at once when a member is claimed or deleted, and keep its ready count current."""
    if "kube" not in memo:
        return
    namespace = _namespaced(namespace)
    deleted = event.get("type") == "DELETED"
    pool = pools.pool_of(body)
    former = memo.pool_members.pop((namespace, name), None)
    if pool and not deleted:
        memo.pool_members[(namespace, name)] = pool
    affected = {p for p in (pool, former) if p}
    claimed_from = pools.claimed_from(body)
    if former is not None and pool is None and claimed_from and not deleted:
        metrics.POOL_CLAIMS.labels(namespace, claimed_from).inc()  # once: `former` is forgotten now
    if deleted and claimed_from:
        affected.add(claimed_from)  # its claimed count drops
    for target in sorted(affected):
        # In the background: kopf handles this Sandbox's own changes (e.g. the claim's new spec) only after its
        # event handlers, and they must not wait for its former pool.
        task = asyncio.create_task(_converge_pool_logged(memo, pool_claims, namespace, target))
        memo.pool_tasks.add(task)
        task.add_done_callback(memo.pool_tasks.discard)


async def _converge_pool_logged(memo: kopf.Memo, claims: ClaimIndex, namespace: str, name: str) -> None:
    try:
        with metrics.counting_errors("pool_member_event"):
            await _converge_pool(memo, claims, namespace, name)
    except Exception as e:  # noqa: BLE001 - nothing retries a background converge; the resync heals
        log_failure("converging pool after a member event", namespace, name, e)


async def resync_pools(memo: kopf.Memo, pools_index: PoolIndex, claims: ClaimIndex) -> None:
    """Every pool, once per culling round: replaces members failed past their grace, deletes orphan member
    Secrets, and heals a missed member event."""
    for store in list(pools_index.values()):
        for body in list(store):
            metadata = body.get("metadata") or {}
            try:
                with metrics.counting_errors("pool_resync"):
                    await _converge_pool(memo, claims, metadata["namespace"], metadata["name"], sweep=True)
            except Exception as e:  # noqa: BLE001 - one broken pool must not stop the others
                log_failure("resyncing pool", metadata.get("namespace"), metadata.get("name"), e)
