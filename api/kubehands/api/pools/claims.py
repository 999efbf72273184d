"""Warm-pool claims, pure (docs/design/0010-warm-pools.md, docs/gateway.md "Warm pools").

Functions over API JSON dicts; `warm_start.py` (the claim) and `recovery.py` do the I/O, `init.py` shapes the
member's init. Which templates serve a /start is `kubehands.spec.pools`.

- `claimable`, `candidates`: the members a /start may claim, or why there is none (the miss reason);
- `closest_mismatch`, `cold_start_reason`: for a /start no pool's template matches, the field that kept the
  closest pool from serving it, as the runtime object's `cold_start_reason` tells the client;
- `forgery`: why a Sandbox that looks like a member is not one (checked on what only the operator writes);
- `claim_patch`, `init_done_patch`, `cold_restart_patch`: what the claim writes on the member Sandbox;
- `cold_restart_reason`: when a claimed sandbox can no longer become a warm start and must start cold;
- `warm_config`: a pool as `GET /api/warm-runtime-configs` lists it.
"""

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from kubehands.api.runtime import COLD, WARM, start_annotations, status_is_current
from kubehands.crd.constants import (
    ANNOTATION_CLAIMED_AT,
    ANNOTATION_CLAIMED_FROM,
    ANNOTATION_CLAIMED_POD,
    ANNOTATION_CLAIMED_RESTARTS,
    ANNOTATION_INIT,
    ANNOTATION_RESTARTED_AT,
    ANNOTATION_SANDBOX_NAME,
    ENV_DEFERRED_INIT,
    ENV_SESSION_KEYS,
    INIT_READY,
    KIND,
    LABEL_POOL,
    LABEL_POOL_TEMPLATE,
    POOL_KIND,
    SANDBOX_CONTAINER_NAME,
)
from kubehands.crd.model import DesiredState, Phase, PodStatus
from kubehands.crd.names import pod_name
from kubehands.crd.times import parse_time, rfc3339
from kubehands.spec.pools import TEMPLATE_FIELDS, boot_only, difference, env_map, matches, member_secret_name

Obj = dict[str, Any]

# Why a /start was not served from a pool: the `reason` label of kubehands_pool_misses_total (a fixed set).
MISS_NO_POOL = "no_pool"  # no pool's template matches the request
MISS_NOT_ALLOWED = "not_allowed"  # pools match, but the key's profile allows none of them
MISS_EMPTY = "empty"  # the matching pools the key may use have no ready member
MISS_CONFLICT = "conflict"  # other starts claimed every member tried first
MISS_INIT_FAILED = "init_failed"  # claimed, but POST /api/init failed: the session starts cold in place
MISS_REASONS = (MISS_NO_POOL, MISS_NOT_ALLOWED, MISS_EMPTY, MISS_CONFLICT, MISS_INIT_FAILED)
# A `no_pool` miss while pools exist: the runtime object's reason names the field (`mismatch: <field>`), and
# kubehands_pool_mismatches_total{field} counts it by the field's kind (a fixed set: `mismatch_label`).
MISMATCH_PREFIX = "mismatch: "
MISMATCH_LABELS = (*TEMPLATE_FIELDS, "volumes", "env")

# A claimed sandbox whose init is not done this long after the claim lost its gateway mid-init (the claiming
# gateway gives up after its init timeout and restarts it cold itself): any replica restarts it cold.
INIT_GRACE = timedelta(seconds=30)

# ---- members ----------------------------------------------------------------------------------------------


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_metadata(obj).get("name") or "")


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _metadata(obj).get("annotations") or {}


def pool_template(pool: Mapping[str, Any]) -> Mapping[str, Any]:
    return (pool.get("spec") or {}).get("template") or {}


def claimable(member: Mapping[str, Any], pool: Mapping[str, Any]) -> bool:
    """An unclaimed member of `pool`, built from its current template, whose dormant pod is ready now."""
    metadata = _metadata(member)
    labels = metadata.get("labels") or {}
    status = member.get("status") or {}
    current_template = (pool.get("status") or {}).get("templateHash")
    return (
        labels.get(LABEL_POOL) == _name(pool)
        and not metadata.get("deletionTimestamp")
        and bool(metadata.get("resourceVersion"))
        and (not current_template or labels.get(LABEL_POOL_TEMPLATE) == current_template)
        and (member.get("spec") or {}).get("state", DesiredState.RUNNING) == DesiredState.RUNNING
        and status_is_current(dict(member))
        and status.get("phase") == Phase.RUNNING
        and status.get("podStatus") == PodStatus.READY
        and bool(status.get("podIP"))
        and bool(status.get("podUID"))  # the claim names the pod it keeps
    )


def allowed(pool_name: str, permitted: Sequence[str] | None) -> bool:
    """Whether a key whose profile lists `permitted` pools may use this one: a profile that names no list (None,
    the default) may use every pool, an empty list none (docs/pools.md "Pools per key")."""
    return permitted is None or pool_name in permitted


def candidates(
    pools: Sequence[Obj],
    members: Callable[[Obj], Sequence[Obj]],
    permitted: Sequence[str] | None,
    spec: Mapping[str, Any],
) -> tuple[list[tuple[str, Obj]], str | None]:
    """The (pool name, member) pairs a /start of `spec` may claim, and else the miss reason.

    `members(pool)` gives a pool's claimable members (`claimable`)."""
    matching = [p for p in _live(pools) if matches(pool_template(p), spec)]
    if not matching:
        return [], MISS_NO_POOL
    usable = [p for p in matching if allowed(_name(p), permitted)]
    if not usable:
        return [], MISS_NOT_ALLOWED
    found = [(_name(p), m) for p in usable for m in members(p)]
    return found, (None if found else MISS_EMPTY)


def _live(pools: Sequence[Obj]) -> list[Obj]:
    return [p for p in pools if not _metadata(p).get("deletionTimestamp")]


def closest_mismatch(pools: Sequence[Obj], permitted: Sequence[str] | None, spec: Mapping[str, Any]) -> str | None:
    """For a /start of `spec` that no pool serves (`candidates` said `no_pool`): the first field in which the
    closest pool's template differs, None when there is no pool at all. The closest is, among the pools the key may
    use (else all), the one that differs latest in the order `pools.difference` compares: a pool of the same image
    and command that differs in its working dir is closer than one of another image."""
    live = _live(pools)
    usable = [p for p in live if allowed(_name(p), permitted)] or live
    order = {field: i for i, field in enumerate((*TEMPLATE_FIELDS, "volumes"))}
    fields = [f for f in (difference(pool_template(p), spec) for p in usable) if f is not None]
    return max(fields, key=lambda f: order.get(f, len(order)), default=None)


def mismatch_label(field: str) -> str:
    """The `field` label of kubehands_pool_mismatches_total: every variable is `env`."""
    return "env" if field.startswith("env.") else field if field in MISMATCH_LABELS else "env"


def shown_field(field: str, spec: Mapping[str, Any]) -> str:
    """`field` as a client may see it. A variable is named when the request has it, or when it is boot-only (the
    agent server's own settings): a template's other variables may be an administrator's, whose names are his."""
    if not field.startswith("env."):
        return field
    name = field.removeprefix("env.")
    return field if boot_only(name) or name in env_map(spec.get("env")) else "env"


def cold_start_reason(
    miss: str, pools: Sequence[Obj], permitted: Sequence[str] | None, spec: Mapping[str, Any]
) -> str:
    """The runtime object's `cold_start_reason` for a miss: the miss reason, except that a `no_pool` while pools
    exist names the field the closest one differs in (`mismatch: <field>`)."""
    if miss != MISS_NO_POOL:
        return miss
    field = closest_mismatch(pools, permitted, spec)
    return MISS_NO_POOL if field is None else MISMATCH_PREFIX + shown_field(field, spec)


# ---- genuine members ----------------------------------------------------------------------------------------


def _uid(obj: Mapping[str, Any] | None) -> str:
    return str(_metadata(obj or {}).get("uid") or "")


def _owned_by(obj: Mapping[str, Any], kind: str, uid: str) -> bool:
    return bool(uid) and any(
        ref.get("kind") == kind and ref.get("uid") == uid for ref in _metadata(obj).get("ownerReferences") or []
    )


def _env_entry(pod: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or []
    container: Mapping[str, Any] = next((c for c in containers if c.get("name") == SANDBOX_CONTAINER_NAME), {})
    return next((e for e in container.get("env") or [] if e.get("name") == name), {})


def forgery(
    member: Mapping[str, Any], pool: Mapping[str, Any], secret: Mapping[str, Any] | None, pod: Mapping[str, Any] | None
) -> str | None:
    """Why `member`, a Sandbox that carries `pool`'s label, is not a genuine member of it; None when it is.

    A Sandbox's labels, owner references and status are written by whoever may patch Sandboxes, the router
    included (it resumes sandboxes and writes their activity). So a claim trusts only what the operator alone writes
    (the router has no RBAC on Secrets or Pods; tests/unit/test_router_rbac.py):

    - the init Secret `<member>-init`: labelled with the pool, annotated with the member's name and owned by the
      pool's uid, as `kubehands.operator.pools.build_member` makes it. A claim deletes it, so a sandbox that was
      ever claimed has none, and cannot be passed off as a member again;
    - the dormant pod (`names.pod_name`): the member's controller-owned child, the pod
      `status.podUID` names, booted dormant (`OH_DEFERRED_INIT=true`) with its session key from that Secret. The
      init (which carries the session key) goes to this pod's IP, never to the one the Sandbox's status reports.
    """
    name, pool_name = _name(member), _name(pool)
    if secret is None:
        return f"it has no init Secret {member_secret_name(name)}"
    labels = _metadata(secret).get("labels") or {}
    if (
        _name(secret) != member_secret_name(name)
        or labels.get(LABEL_POOL) != pool_name
        or _annotations(secret).get(ANNOTATION_SANDBOX_NAME) != name
        or not _owned_by(secret, POOL_KIND, _uid(pool))
    ):
        return f"its init Secret was not made for it by pool {pool_name}"
    if pod is None:
        return "its pod does not exist"
    pod_metadata = _metadata(pod)
    status = member.get("status") or {}
    controllers = [ref for ref in pod_metadata.get("ownerReferences") or [] if ref.get("controller")]
    if _name(pod) != pod_name(name) or [(r.get("kind"), r.get("uid")) for r in controllers] != [(KIND, _uid(member))]:
        return "its pod is not its own"
    if pod_metadata.get("deletionTimestamp") or not pod_metadata.get("uid") or pod_metadata["uid"] != status.get(
        "podUID"
    ):
        return "its pod is not the one its status reports, or is being deleted"
    if _env_entry(pod, ENV_DEFERRED_INIT).get("value") != "true":
        return "its pod was not booted dormant"
    for variable in ENV_SESSION_KEYS:
        ref = (_env_entry(pod, variable).get("valueFrom") or {}).get("secretKeyRef") or {}
        if ref.get("name") != _name(secret):
            return "its pod's session key does not come from its init Secret"
    if not (pod.get("status") or {}).get("podIP"):
        return "its pod has no IP"
    return None


# ---- the claim --------------------------------------------------------------------------------------------


def _replacing(old: Mapping[str, Any], new: Mapping[str, Any]) -> Obj:
    """A merge patch that turns the map `old` into `new`: keys only `old` has are removed (null)."""
    patch: Obj = dict(new)
    for key, value in old.items():
        if key not in new:
            patch[key] = None
        elif isinstance(value, Mapping) and isinstance(new[key], Mapping):
            patch[key] = _replacing(value, new[key])
    return patch


def claim_patch(member: Mapping[str, Any], sandbox: Mapping[str, Any], pool: str, now: datetime) -> Obj:
    """The one merge patch that makes `member` the session's sandbox; `sandbox` is `objects.build_sandbox` of the
    /start for the member's name.

    It carries the member's resourceVersion, so of two claims of the same member only one succeeds (the other
    gets 409). It removes the pool labels (the pool stops counting it and makes a new member) and the pool's owner
    reference (deleting the pool must not delete a user's session), adds the tenant and session labels and
    annotations, names the dormant pod the operator must keep (`claimed-pod`), and replaces the spec with the
    session's: any later pod of this Sandbox starts cold from it.
    """
    metadata = _metadata(member)
    status = member.get("status") or {}
    fresh = sandbox["metadata"]
    annotations = {
        **fresh.get("annotations", {}),
        ANNOTATION_CLAIMED_POD: str(status["podUID"]),
        ANNOTATION_CLAIMED_FROM: pool,
        ANNOTATION_CLAIMED_AT: rfc3339(now),
        ANNOTATION_CLAIMED_RESTARTS: str(int(status.get("restartCount") or 0)),
        ANNOTATION_INIT: None,
        **start_annotations(WARM),
    }
    return {
        "metadata": {
            "resourceVersion": metadata["resourceVersion"],
            "labels": {LABEL_POOL: None, LABEL_POOL_TEMPLATE: None, **fresh.get("labels", {})},
            "ownerReferences": None,
            "annotations": annotations,
        },
        "spec": _replacing(member.get("spec") or {}, sandbox["spec"]),
    }


def init_done_patch() -> Obj:
    """After POST /api/init succeeded: the sandbox may now be reported running."""
    return {"metadata": {"annotations": {ANNOTATION_INIT: INIT_READY}}}


def cold_restart_patch(now: datetime, resource_version: str | None = None, *, init_failed: bool = False) -> Obj:
    """Give up the claimed pod: without `claimed-pod` the operator no longer keeps it, and `restarted-at` (part of
    the pod's spec hash) replaces it. The session starts cold on the same Sandbox, PVC and key. With
    `resource_version`, only the version the caller decided on is patched (so one replica acts). With
    `init_failed`, the warm start never finished: the session's start is recorded as cold (`init_failed`)."""
    annotations: Obj = {ANNOTATION_CLAIMED_POD: None, ANNOTATION_RESTARTED_AT: rfc3339(now)}
    if init_failed:
        annotations |= start_annotations(COLD, MISS_INIT_FAILED)
    metadata: Obj = {"annotations": annotations}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"metadata": metadata}


def init_pending(sandbox: Mapping[str, Any]) -> bool:
    """A claimed sandbox whose POST /api/init was not marked done."""
    return _annotations(sandbox).get(ANNOTATION_INIT) != INIT_READY


def cold_restart_reason(sandbox: Mapping[str, Any], now: datetime, grace: timedelta = INIT_GRACE) -> str | None:
    """Why a claimed sandbox must give up its claimed pod and start cold, or None.

    - its init is not done `grace` after the claim: the gateway that claimed it stopped mid-init;
    - its init is done, but the claimed pod's container restarted since the claim: a restarted container boots
      dormant again (the pod's environment says so) and would answer no session request; or it failed.
    Neither applies once another pod than the claimed one runs (a later pod starts cold from the spec).
    """
    metadata = _metadata(sandbox)
    if metadata.get("deletionTimestamp") or (sandbox.get("spec") or {}).get("state") == DesiredState.PAUSED:
        return None
    annotations = _annotations(sandbox)
    claimed = annotations.get(ANNOTATION_CLAIMED_POD)
    if not claimed:
        return None
    status = sandbox.get("status") or {}
    pod_uid = status.get("podUID")
    if pod_uid and pod_uid != claimed:
        return None
    if annotations.get(ANNOTATION_INIT) != INIT_READY:
        try:
            claimed_at = parse_time(annotations.get(ANNOTATION_CLAIMED_AT))
        except ValueError:
            claimed_at = None
        if claimed_at is None or now - claimed_at >= grace:
            return f"its warm start did not finish within {grace.total_seconds():.0f}s of the claim"
        return None
    try:
        restarts_then = int(annotations.get(ANNOTATION_CLAIMED_RESTARTS) or 0)
    except ValueError:
        restarts_then = 0
    if pod_uid == claimed and int(status.get("restartCount") or 0) > restarts_then:
        return "the claimed pod's container restarted, and a restarted container boots dormant"
    if pod_uid == claimed and status.get("podStatus") in (PodStatus.FAILED, PodStatus.CRASH_LOOP_BACK_OFF):
        # e.g. its container stopped and cannot be created again: its key came from the init Secret, which the
        # claim deleted (the kubelet reports CreateContainerConfigError without counting a restart)
        return "the claimed pod's container can no longer run"
    return None


# ---- GET /api/warm-runtime-configs ------------------------------------------------------------------------


_SECURITY = (("runAsUser", "run_as_user"), ("runAsGroup", "run_as_group"), ("fsGroup", "fs_group"))


def warm_config(pool: Mapping[str, Any]) -> Obj | None:
    """A pool as the OpenHands app's dynamic spec service reads it (it starts sandboxes with these values). None
    for a pool without `workingDir`: the app needs one, and sends it back in /start, where it would never match
    such a template.

    `environment` is always empty: a template's variables may be an administrator's (an LLM key, a team's
    endpoint), and this list is read by keys that are no administrator. The template's variables a /start must
    carry come from the key's profile `env` or from the gateway itself (docs/pools.md)."""
    template = pool_template(pool)
    if not template.get("workingDir") or not template.get("image"):
        return None
    config: Obj = {
        "name": _name(pool),
        "image": template["image"],
        "command": list(template["command"]) if template.get("command") else None,
        "environment": {},
        "working_dir": template["workingDir"],
    }
    security = template.get("securityContext") or {}
    config |= {theirs: security[ours] for ours, theirs in _SECURITY if security.get(ours) is not None}
    return config
