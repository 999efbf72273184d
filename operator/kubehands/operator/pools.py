"""Warm pools, pure: a member's objects, the plan that keeps a pool full, and the pool's status.

No I/O, no clock, no randomness: member names and keys come from the caller (`pool_reconcile`), which
carries the plan out. docs/design/0010-warm-pools.md describes the design; docs/operator.md the behaviour.

A member is an ordinary Sandbox labelled with its pool and the hash of the template it was built from. A claim
(the gateway) removes both labels, so everything here only ever looks at Sandboxes that still carry the pool
label: a claimed sandbox is never counted, replaced or deleted by its former pool.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from kubehands import kube
from kubehands.crd import conditions as c
from kubehands.crd import constants
from kubehands.crd.model import DesiredState, Phase, PodStatus, Sandbox
from kubehands.crd.pool_model import SandboxPool
from kubehands.crd.times import parse_time
from kubehands.operator.config import OperatorConfig
from kubehands.operator.validation import validate_sandbox
from kubehands.spec.pool_match import Matchability, Mismatch, summary
from kubehands.spec.pools import member_secret_name as member_secret_name  # re-exported for pool_reconcile

# A Failed member (image pull error, crash loop, start deadline, ...) is replaced once it has not been Ready for
# this long: a template that can never start then costs one new member per slot and half-minute, not a hot loop.
FAILED_MEMBER_GRACE = timedelta(seconds=30)
# A member Secret with no Sandbox this old is an orphan (the operator stopped between the two creates).
ORPHAN_SECRET_AGE = timedelta(seconds=60)
# Stands in for a member's name when a template is validated: as long as the gateway's runtime ids.
PLACEHOLDER_MEMBER = "kh-000000000000"


def template_hash(pool: SandboxPool) -> str:
    """Hash of the pool's template, as the API server stores it (defaults included): members built from
    another template carry another hash and are replaced."""
    dumped = pool.spec.template.model_dump(by_alias=True, mode="json")
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]


def selector(pool_name: str) -> str:
    """The label selector of the pool's unclaimed members (also `status.selector`, for `/scale`)."""
    return f"{constants.LABEL_POOL}={pool_name}"


def _pool_reference(pool: SandboxPool, *, controller: bool) -> dict[str, Any]:
    owner = {"apiVersion": constants.API_VERSION, "kind": constants.POOL_KIND, "metadata": pool.metadata}
    reference = kube.owner_reference(owner, block_owner_deletion=controller)
    reference["controller"] = controller
    return reference


def build_member(
    pool: SandboxPool, name: str, template_hash: str, key: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The member Secret and the member Sandbox named `name`, built from the pool's template.

    The Secret holds `key`, the member's throw-away session key, which is also its init key (the agent server's
    secret key, `OH_SECRET_KEY`, comes from the same entry). It is created first; it is owned by the pool (not as
    controller) until the member adopts it like any session Secret, so an orphan still goes with the pool.
    """
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": member_secret_name(name),
            "namespace": pool.namespace,
            "labels": {
                constants.LABEL_PART_OF: constants.PART_OF,
                constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
                constants.LABEL_COMPONENT: constants.COMPONENT_POOL_INIT,
                constants.LABEL_POOL: pool.name,
            },
            "annotations": {constants.ANNOTATION_SANDBOX_NAME: name},
            "ownerReferences": [_pool_reference(pool, controller=False)],
        },
        "stringData": {constants.DEFAULT_SESSION_KEY_SECRET_KEY: key},
    }
    template = pool.spec.template.model_dump(by_alias=True, exclude_none=True, mode="json")
    env = [e for e in template.pop("env", []) if e["name"] != constants.ENV_DEFERRED_INIT]
    sandbox = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {
            "name": name,
            "namespace": pool.namespace,
            "labels": {constants.LABEL_POOL: pool.name, constants.LABEL_POOL_TEMPLATE: template_hash},
            "ownerReferences": [_pool_reference(pool, controller=True)],
        },
        "spec": {
            **template,
            "env": [*env, {"name": constants.ENV_DEFERRED_INIT, "value": "true"}],
            "state": DesiredState.RUNNING.value,
            "sessionKeySecretRef": {
                "name": member_secret_name(name),
                "key": constants.DEFAULT_SESSION_KEY_SECRET_KEY,
            },
        },
    }
    return secret, sandbox


def validate_pool(pool: SandboxPool, config: OperatorConfig) -> list[str]:
    """The operator's checks of a Sandbox (`validation`), run on the member the template makes."""
    _, member = build_member(pool, PLACEHOLDER_MEMBER, template_hash(pool), "")
    return [f"spec.template: {problem}" for problem in validate_sandbox(Sandbox.model_validate(member), config)]


# ---- Members as observed (API JSON dicts) ---------------------------------------------------------------


def _metadata(member: Mapping[str, Any]) -> Mapping[str, Any]:
    return member.get("metadata") or {}


def _name(member: Mapping[str, Any]) -> str:
    return str(_metadata(member).get("name", ""))


def _created(member: Mapping[str, Any]) -> datetime | None:
    return parse_time(_metadata(member).get("creationTimestamp"))


def _ready_condition(member: Mapping[str, Any]) -> Mapping[str, Any]:
    return c.find_condition((member.get("status") or {}).get("conditions") or [], c.READY) or {}


def is_ready(member: Mapping[str, Any]) -> bool:
    status = member.get("status") or {}
    return status.get("phase") == Phase.RUNNING and status.get("podStatus") == PodStatus.READY


def _failure(member: Mapping[str, Any]) -> str | None:
    """The Ready reason of a Failed member, else None."""
    if (member.get("status") or {}).get("phase") != Phase.FAILED:
        return None
    return str(_ready_condition(member).get("reason") or "Failed")


def _not_ready_since(member: Mapping[str, Any]) -> datetime | None:
    ready = _ready_condition(member)
    return parse_time(ready.get("lastTransitionTime")) or _created(member)


def _describe(member: Mapping[str, Any]) -> str:
    ready = _ready_condition(member)
    return f"member {_name(member)}: {ready.get('reason') or 'Failed'}: {ready.get('message') or ''}".rstrip(": ")


def members_of(pool_name: str, members: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pool's unclaimed members that are not being deleted: only Sandboxes that carry the pool's label."""
    return [
        m
        for m in members
        if (_metadata(m).get("labels") or {}).get(constants.LABEL_POOL) == pool_name
        and not _metadata(m).get("deletionTimestamp")
    ]


@dataclass(frozen=True)
class MemberDeletion:
    name: str
    resource_version: str | None  # deleted only if unchanged: a member claimed meanwhile is never deleted
    reason: str


@dataclass(frozen=True)
class PoolPlan:
    create: int  # new members to make
    delete: tuple[MemberDeletion, ...]
    ready: int  # ready members from the current template once the plan is carried out
    template_hash: str | None  # None: the pool could not be read
    blocked: str | None = None  # a member's spec was refused (InvalidSpec): no new members until the template changes
    failing: str | None = None  # a member that failed otherwise, described for the status


def _deletion(member: Mapping[str, Any], reason: str) -> MemberDeletion:
    return MemberDeletion(_name(member), _metadata(member).get("resourceVersion"), reason)


def retire_all(pool_name: str, members: Iterable[Mapping[str, Any]], reason: str) -> PoolPlan:
    """Delete every unclaimed member and make none: the plan of a pool whose spec is invalid."""
    return PoolPlan(0, tuple(_deletion(m, reason) for m in members_of(pool_name, members)), 0, None)


def _surplus_order(member: Mapping[str, Any]) -> tuple[bool, bool, float, str]:
    """Sort key: the members to remove first when there are too many. Failed ones, then the ones not ready,
    newest first (an older member has more likely finished booting)."""
    created = _created(member)
    return (
        _failure(member) is None,
        is_ready(member),
        -(created.timestamp() if created else 0.0),
        _name(member),
    )


def plan_pool(
    pool: SandboxPool,
    members: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    problems: Sequence[str] = (),
    unmatchable: Sequence[Mismatch] = (),
) -> PoolPlan:
    """What keeps the pool at `spec.size` ready members from its current template.

    `members` are the Sandboxes listed with the pool's label (anything else is ignored); `problems` are the
    pool's spec problems (`validate_pool`) and `unmatchable` why no /start can claim its members
    (`pool_match.never_matches`): either retires every member, since none would ever serve a session.
    """
    current = template_hash(pool)
    if problems:
        return replace(retire_all(pool.name, members, "the pool's spec is invalid"), template_hash=current)
    if unmatchable:
        retired = retire_all(pool.name, members, "no /start can match the pool's template")
        return replace(retired, template_hash=current)
    live = members_of(pool.name, members)
    deletions: list[MemberDeletion] = []
    kept: list[Mapping[str, Any]] = []
    blocked: str | None = None
    failing: str | None = None
    for member in live:
        if (_metadata(member).get("labels") or {}).get(constants.LABEL_POOL_TEMPLATE) != current:
            deletions.append(_deletion(member, "built from an older template"))
            continue
        failure = _failure(member)
        if failure == c.INVALID_SPEC:
            # Every member of this template would be refused the same way: keep this one as the evidence and
            # make no more until the template changes (which makes it outdated).
            blocked = blocked or _describe(member)
        elif failure is not None:
            failing = failing or _describe(member)
            since = _not_ready_since(member)
            if since is None or now - since >= FAILED_MEMBER_GRACE:
                deletions.append(_deletion(member, f"failed ({failure}); replacing it"))
                continue
        kept.append(member)
    size = pool.spec.size
    if len(kept) > size:
        surplus = sorted(kept, key=_surplus_order)[: len(kept) - size]
        deletions += [_deletion(m, f"more members than spec.size {size}") for m in surplus]
        kept = [m for m in kept if m not in surplus]
    create = 0 if blocked else size - len(kept)
    return PoolPlan(
        create=create,
        delete=tuple(deletions),
        ready=sum(1 for m in kept if is_ready(m)),
        template_hash=current,
        blocked=blocked,
        failing=failing,
    )


def pool_status(
    body: Mapping[str, Any],
    plan: PoolPlan,
    claimed: int,
    problems: Sequence[str],
    now: datetime,
    matchability: Matchability | None = None,
) -> dict[str, Any]:
    """The SandboxPool's status once `plan` is carried out. Works on the raw body, so an unreadable pool is
    reported too. `claimed` counts the Sandboxes whose `claimed-from` annotation names the pool; `matchability` is
    None when the template was not checked (no Matchable condition then)."""
    metadata = body.get("metadata") or {}
    generation = metadata.get("generation")
    size = (body.get("spec") or {}).get("size", 0)
    current = [
        dict(condition)
        for condition in (body.get("status") or {}).get("conditions") or []
        if matchability is not None or condition.get("type") != c.MATCHABLE  # not checked: a stale answer goes
    ]
    if matchability is not None:
        current = c.set_condition(current, c.MATCHABLE, *matchability.condition(), now, generation)
    if problems:
        ready = (c.FALSE, c.INVALID_SPEC, "invalid spec: " + "; ".join(problems))
    elif matchability is not None and matchability.never:
        ready = (c.FALSE, matchability.never[0].reason, summary(matchability.never))
    elif plan.blocked:
        ready = (c.FALSE, c.INVALID_SPEC, f"no new members: {plan.blocked}")
    elif plan.ready >= size:
        ready = (c.TRUE, c.POOL_READY, f"{plan.ready} of {size} members ready")
    elif plan.failing:
        ready = (c.FALSE, c.MEMBER_FAILED, f"{plan.ready} of {size} members ready; {plan.failing}")
    else:
        ready = (c.FALSE, c.POOL_FILLING, f"{plan.ready} of {size} members ready")
    return {
        "ready": plan.ready,
        "claimed": claimed,
        "desired": size,
        "selector": selector(str(metadata.get("name", ""))),
        "templateHash": plan.template_hash,
        "observedGeneration": generation,
        "conditions": c.set_condition(current, c.READY, *ready, now, generation),
    }


@dataclass(frozen=True)
class OrphanCandidate:
    secret: str
    uid: str
    member: str  # the Sandbox it was made for; the caller deletes the Secret only if that does not exist


def orphan_candidates(secrets: Iterable[Mapping[str, Any]], now: datetime) -> list[OrphanCandidate]:
    """Member Secrets (listed by the pool's label) that no Sandbox owns and that are older than ORPHAN_SECRET_AGE.

    Such a Secret was made by an operator that stopped before it created its Sandbox, or outlived its Sandbox:
    the pool's own owner reference keeps the garbage collector from deleting it with its (deleted or claimed)
    member. Only Secrets this module built: named after the member their annotation names.
    """
    found = []
    for secret in secrets:
        metadata = secret.get("metadata") or {}
        member = (metadata.get("annotations") or {}).get(constants.ANNOTATION_SANDBOX_NAME)
        if not member or metadata.get("name") != member_secret_name(member):
            continue
        if any(ref.get("kind") == constants.KIND for ref in metadata.get("ownerReferences") or []):
            continue
        created = parse_time(metadata.get("creationTimestamp"))
        if created is None or now - created < ORPHAN_SECRET_AGE:
            continue
        found.append(OrphanCandidate(str(metadata["name"]), str(metadata.get("uid")), member))
    return found


def claimed_from(body: Mapping[str, Any]) -> str | None:
    """The pool a claimed Sandbox came from (annotation `claimed-from`), else None."""
    return (_metadata(body).get("annotations") or {}).get(constants.ANNOTATION_CLAIMED_FROM) or None


def pool_of(body: Mapping[str, Any]) -> str | None:
    """The pool an unclaimed member belongs to (label `pool`), else None."""
    return (_metadata(body).get("labels") or {}).get(constants.LABEL_POOL) or None
