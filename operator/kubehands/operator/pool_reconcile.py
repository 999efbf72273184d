"""The API steps that keep a SandboxPool full, and `converge_pool`: read, decide (`pools.plan_pool`), act, report.

Level-based like `reconcile.converge`: every call lists the pool's members from the API server (a quorum read,
never a cache that may lag behind the members it just created), so a restarted operator or two triggers in a
row converge on `spec.size` members without duplicates. Member names are random (`kh-` + 12 base36, like the
gateway's runtime ids): the count is what converges, not the names.
"""

import logging
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from kubehands.crd import conditions as c
from kubehands.crd.pool_model import SandboxPool
from kubehands.kube import CONFLICT, NOT_FOUND, SANDBOX_POOLS, SANDBOXES, UNPROCESSABLE, Kube, json_body
from kubehands.operator import metrics, pools
from kubehands.operator.config import OperatorConfig
from kubehands.operator.plan import refusal
from kubehands.operator.status import status_patch
from kubehands.spec.pool_match import Matchability, check

log = logging.getLogger(__name__)

MEMBER_NAME_PREFIX = "kh-"
MEMBER_NAME_RANDOM_LENGTH = 12
_BASE36 = string.digits + string.ascii_lowercase


def new_member_name() -> str:
    """A random member name shaped like the gateway's runtime ids: the claimed Sandbox keeps it."""
    return MEMBER_NAME_PREFIX + "".join(secrets.choice(_BASE36) for _ in range(MEMBER_NAME_RANDOM_LENGTH))


def new_member_key() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class PoolConverged:
    problems: list[str] = field(default_factory=list)  # why the pool is invalid; empty when it is not
    members: set[str] = field(default_factory=set)  # the unclaimed members once the plan was carried out


def _parse(body: Mapping[str, Any]) -> tuple[SandboxPool | None, list[str]]:
    try:
        return SandboxPool.model_validate(body), []
    except ValidationError as e:
        return None, [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]


async def delete_member(kube: Kube, namespace: str, deletion: pools.MemberDeletion) -> bool:
    """Delete the member unless it changed since it was listed (a claim, above all), then its Secret.
    False when it was left alone."""
    try:
        deleted = await kube.delete_sandbox(namespace, deletion.name, resource_version=deletion.resource_version)
    except ApiException as e:
        if e.status == CONFLICT:
            return False  # changed meanwhile, perhaps claimed: the next converge decides again
        raise
    if deleted is not None:
        log.info("deleting pool member %s/%s: %s", namespace, deletion.name, deletion.reason)
    await _delete_secret(kube, namespace, pools.member_secret_name(deletion.name))
    return True


async def _delete_secret(kube: Kube, namespace: str, name: str, uid: str | None = None) -> None:
    options: dict[str, Any] = {"preconditions": {"uid": uid}} if uid else {}
    try:
        await kube.core.delete_namespaced_secret(name, namespace, body=json_body(options, client.V1DeleteOptions))
    except ApiException as e:
        if e.status not in (NOT_FOUND, CONFLICT):  # gone, or another Secret under the name now
            raise


async def create_member(kube: Kube, pool: SandboxPool, template_hash: str) -> tuple[str | None, str | None]:
    """Create one member: its Secret, then its Sandbox. Returns (name, None), or (None, why) when the API server
    refuses the member as invalid (retrying the same template cannot help)."""
    name = new_member_name()
    secret, sandbox = pools.build_member(pool, name, template_hash, new_member_key())
    await kube.core.create_namespaced_secret(pool.namespace, json_body(secret, client.V1Secret))
    try:
        await kube.create_sandbox(pool.namespace, sandbox)
    except ApiException as e:
        refused = refusal(e.status, e.body, e.reason)
        if refused is not None or e.status == CONFLICT:
            # Nothing will ever use the Secret. (After a timeout the Sandbox may exist: the sweep decides later.)
            await _delete_secret(kube, pool.namespace, pools.member_secret_name(name))
        if refused is None:
            raise
        log.warning("pool %s/%s: the API server refused a member Sandbox: %s", pool.namespace, pool.name, refused)
        return None, f"the API server refused a member Sandbox: {refused}"
    log.info("created pool member %s/%s for pool %s", pool.namespace, name, pool.name)
    return name, None


async def sweep_orphan_secrets(kube: Kube, namespace: str, pool_name: str, now: datetime) -> None:
    """Delete the pool's member Secrets that no Sandbox uses (see `pools.orphan_candidates`)."""
    listed = await kube.core.list_namespaced_secret(namespace, label_selector=pools.selector(pool_name))
    secrets_ = [kube.to_dict(item) for item in listed.items]
    for candidate in pools.orphan_candidates(secrets_, now):
        if await kube.get_sandbox(namespace, candidate.member) is not None:
            continue  # its Sandbox exists (and adopts it, or was claimed before it could): not an orphan
        log.info("deleting orphan pool Secret %s/%s (pool %s)", namespace, candidate.secret, pool_name)
        await _delete_secret(kube, namespace, candidate.secret, candidate.uid)


async def converge_pool(
    kube: Kube,
    config: OperatorConfig,
    namespace: str,
    name: str,
    claimed: Callable[[], int],
    *,
    sweep: bool = False,
) -> PoolConverged:
    """Bring one pool's members in line with its spec, then report its status.

    The caller serialises calls per pool. `claimed` counts the Sandboxes claimed from it (an index, no API call).
    `sweep` also deletes orphan member Secrets (the periodic resync asks for it).
    """
    body = await kube.get_object(SANDBOX_POOLS, namespace, name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return PoolConverged()  # garbage collection removes the members
    pool, problems = _parse(body)
    matchability: Matchability | None = None
    if pool is not None:
        problems = pools.validate_pool(pool, config)
        gateway = config.gateway_settings()
        if gateway is not None:  # the template as the API server stores it: what the gateway compares
            matchability = check((body.get("spec") or {}).get("template") or {}, gateway)
    listed = await kube.list_objects(SANDBOXES, namespace, label_selector=pools.selector(name))
    members = list(listed.get("items") or [])
    now = datetime.now(UTC)
    if pool is None:
        decided = pools.retire_all(name, members, "the pool's spec is invalid")
    else:
        unmatchable = matchability.never if matchability is not None else ()
        decided = pools.plan_pool(pool, members, now, problems=problems, unmatchable=unmatchable)
    kept = {str(m["metadata"]["name"]) for m in pools.members_of(name, members)}
    for deletion in decided.delete:
        if await delete_member(kube, namespace, deletion):
            kept.discard(deletion.name)
    if pool is not None and decided.template_hash is not None:
        for _ in range(decided.create):  # one by one: a refusal stops the rest
            created, refused = await create_member(kube, pool, decided.template_hash)
            if refused is not None:
                problems = [refused]
                break
            if created is not None:
                kept.add(created)
                metrics.POOL_MEMBERS_CREATED.labels(namespace, name).inc()
    if sweep:
        await sweep_orphan_secrets(kube, namespace, name, now)
    desired = pools.pool_status(body, decided, claimed(), problems, now, matchability)
    await _report(kube, namespace, name, body.get("status"), desired)
    _log_transition(namespace, name, body.get("status"), desired)
    return PoolConverged(problems, kept)


_stale_crd_logged: list[bool] = []


async def _report(
    kube: Kube, namespace: str, name: str, current: Mapping[str, Any] | None, desired: dict[str, Any]
) -> None:
    """Patch the pool's status. A CRD older than the operator (docs/install.md "Upgrading": Helm never upgrades
    CRDs) refuses the Matchable condition: then the status goes without it (Ready says the same)."""
    patch = status_patch(current, desired)
    if not patch:
        return
    try:
        await kube.patch_object_status(SANDBOX_POOLS, namespace, name, patch)  # None: deleted meanwhile
    except ApiException as e:
        if e.status != UNPROCESSABLE or not c.find_condition(patch.get("conditions") or [], c.MATCHABLE):
            raise
        if not _stale_crd_logged:
            _stale_crd_logged.append(True)  # once per process, not at every resync of every pool
            log.warning(
                "the SandboxPool CRD refuses the Matchable condition: apply the CRDs of this version (crds/, "
                "docs/install.md \"Upgrading\"); until then pools report it in Ready only"
            )
        desired["conditions"] = [x for x in desired["conditions"] if x["type"] != c.MATCHABLE]
        patch = status_patch(current, desired)
        if patch:
            await kube.patch_object_status(SANDBOX_POOLS, namespace, name, patch)


def _log_transition(namespace: str, name: str, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> None:
    """One log line when the pool's Ready condition changes reason (not at every resync of a broken pool), and one
    when its template becomes matchable only for /starts that override the gateway's variables."""
    matchable = c.find_condition(new.get("conditions") or [], c.MATCHABLE) or {}
    was = c.find_condition((old or {}).get("conditions") or [], c.MATCHABLE) or {}
    if matchable.get("reason") == c.GATEWAY_ENV_OVERRIDDEN and was.get("reason") != matchable.get("reason"):
        log.warning("pool %s/%s: %s", namespace, name, matchable.get("message"))
    before = c.find_condition((old or {}).get("conditions") or [], c.READY) or {}
    after = c.find_condition(new.get("conditions") or [], c.READY) or {}
    if before.get("reason") == after.get("reason"):
        return
    warned = (c.INVALID_SPEC, c.MEMBER_FAILED, *c.UNMATCHABLE_REASONS)
    level = logging.WARNING if after.get("reason") in warned else logging.INFO
    log.log(level, "pool %s/%s: %s: %s", namespace, name, after.get("reason"), after.get("message"))
