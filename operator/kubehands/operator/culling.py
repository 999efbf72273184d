"""Pure culling decisions: delete Sandboxes past their maximum lifetime, pause idle Running ones, delete long-Paused
ones (never a dormant pool member). Each decision names its reason, a fixed `CullReason`."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kubehands.crd import conditions as c
from kubehands.crd import constants
from kubehands.crd.activity import last_activity
from kubehands.crd.model import DesiredState, Phase
from kubehands.crd.times import parse_time
from kubehands.operator.config import OperatorConfig

__all__ = ["CullAction", "CullDecision", "cull_decision", "last_activity"]


class CullAction(StrEnum):
    PAUSE = "pause"
    DELETE = "delete"


class CullReason(StrEnum):
    """Why a Sandbox is culled: a fixed set (a metric label, an Event reason, a condition reason)."""

    IDLE_TIMEOUT = c.IDLE_TIMEOUT  # paused: no sign of life for idleTimeoutSeconds
    PAUSED_TTL_EXPIRED = c.PAUSED_TTL_EXPIRED  # deleted: paused for pausedTTLSeconds
    MAX_LIFETIME_EXCEEDED = c.MAX_LIFETIME_EXCEEDED  # deleted: alive for maxLifetimeSeconds, whatever its state


@dataclass(frozen=True)
class CullDecision:
    action: CullAction
    reason: CullReason
    message: str


def _seconds(spec: Mapping[str, Any], field: str, default: int) -> int:
    value = spec.get(field)
    return default if value is None else int(value)


def lifetime_start(sandbox: Mapping[str, Any]) -> datetime | None:
    """When the Sandbox's lifetime began: its warm-pool claim (annotation `claimed-at`), else its creation.

    A pool member may have waited dormant for hours; its session's lifetime starts when the gateway claimed it.
    An annotation that is no timestamp (written by hand) counts as absent.
    """
    metadata = sandbox.get("metadata") or {}
    try:
        claimed = parse_time((metadata.get("annotations") or {}).get(constants.ANNOTATION_CLAIMED_AT))
    except (TypeError, ValueError):
        claimed = None
    return claimed or parse_time(metadata.get("creationTimestamp"))


def lifetime_exceeded(sandbox: Mapping[str, Any], now: datetime) -> CullDecision | None:
    """Delete a Sandbox older than its `spec.maxLifetimeSeconds` (unset: no limit), whatever its state."""
    lifetime = (sandbox.get("spec") or {}).get("maxLifetimeSeconds")
    born = lifetime_start(sandbox)
    if not lifetime or born is None or now - born < timedelta(seconds=int(lifetime)):
        return None
    return CullDecision(
        CullAction.DELETE,
        CullReason.MAX_LIFETIME_EXCEEDED,
        f"alive since {born.isoformat()}, longer than its maximum lifetime of {lifetime}s",
    )


def cull_decision(sandbox: Mapping[str, Any], config: OperatorConfig, now: datetime) -> CullDecision | None:
    spec = sandbox.get("spec") or {}
    status = sandbox.get("status") or {}
    metadata = sandbox.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return None  # already going
    if constants.LABEL_POOL in (metadata.get("labels") or {}):
        return None  # a dormant pool member is the pool's capacity, never idle (its claim removes the label)
    # Before the generation check: a lifetime is a hard bound, which no spec change in flight postpones (the
    # delete's resourceVersion precondition still lets a concurrent write, e.g. a longer lifetime, win once).
    expired = lifetime_exceeded(sandbox, now)
    if expired is not None:
        return expired
    if status.get("observedGeneration") != metadata.get("generation"):
        return None  # the operator has not acted on the latest spec yet (e.g. a resume in flight)
    if spec.get("state", DesiredState.RUNNING) == DesiredState.RUNNING:
        if status.get("phase") == Phase.STARTING:
            return None  # starting is not idling; a crash loop (Failed) is culled like an idle sandbox
        timeout = _seconds(spec, "idleTimeoutSeconds", config.idle_timeout_seconds)
        since = last_activity(sandbox)
        if timeout and since is not None and now - since >= timedelta(seconds=timeout):
            return CullDecision(
                CullAction.PAUSE, CullReason.IDLE_TIMEOUT, f"idle since {since.isoformat()} (timeout {timeout}s)"
            )
        return None
    ttl = _seconds(spec, "pausedTTLSeconds", config.paused_ttl_seconds)
    paused_since = parse_time(status.get("pausedTime"))
    if ttl and paused_since is not None and now - paused_since >= timedelta(seconds=ttl):
        return CullDecision(
            CullAction.DELETE,
            CullReason.PAUSED_TTL_EXPIRED,
            f"paused since {paused_since.isoformat()}, longer than its paused TTL of {ttl}s",
        )
    return None
