"""Pure idle-culling decisions: pause idle Running Sandboxes, delete long-Paused ones (never a pool member)."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kubehands.crd import constants
from kubehands.crd.activity import last_activity
from kubehands.crd.model import DesiredState, Phase
from kubehands.crd.times import parse_time
from kubehands.operator.config import OperatorConfig

__all__ = ["CullAction", "CullDecision", "cull_decision", "last_activity"]


class CullAction(StrEnum):
    PAUSE = "pause"
    DELETE = "delete"


@dataclass(frozen=True)
class CullDecision:
    action: CullAction
    message: str


def _seconds(spec: Mapping[str, Any], field: str, default: int) -> int:
    value = spec.get(field)
    return default if value is None else int(value)


def cull_decision(sandbox: Mapping[str, Any], config: OperatorConfig, now: datetime) -> CullDecision | None:
    spec = sandbox.get("spec") or {}
    status = sandbox.get("status") or {}
    if constants.LABEL_POOL in ((sandbox.get("metadata") or {}).get("labels") or {}):
        return None  # a dormant pool member is the pool's capacity, never idle (its claim removes the label)
    if status.get("observedGeneration") != (sandbox.get("metadata") or {}).get("generation"):
        return None  # the operator has not acted on the latest spec yet (e.g. a resume in flight)
    if spec.get("state", DesiredState.RUNNING) == DesiredState.RUNNING:
        if status.get("phase") == Phase.STARTING:
            return None  # starting is not idling; a crash loop (Failed) is culled like an idle sandbox
        timeout = _seconds(spec, "idleTimeoutSeconds", config.idle_timeout_seconds)
        since = last_activity(sandbox)
        if timeout and since is not None and now - since >= timedelta(seconds=timeout):
            return CullDecision(CullAction.PAUSE, f"idle since {since.isoformat()} (timeout {timeout}s)")
        return None
    ttl = _seconds(spec, "pausedTTLSeconds", config.paused_ttl_seconds)
    paused_since = parse_time(status.get("pausedTime"))
    if ttl and paused_since is not None and now - paused_since >= timedelta(seconds=ttl):
        return CullDecision(CullAction.DELETE, f"paused since {paused_since.isoformat()} (TTL {ttl}s)")
    return None
