"""Condition types and reasons of a Sandbox and a SandboxPool, and pure helpers over them.

`Ready` is the authoritative signal; `Paused` says whether the pod is gone because of a pause.
Reasons are stable CamelCase API: clients and dashboards may match on them.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from kubehands.crd.times import rfc3339

READY = "Ready"
PAUSED = "Paused"
MATCHABLE = "Matchable"  # a SandboxPool: whether any /start can claim its members (docs/pools.md)

TRUE, FALSE = "True", "False"

# Ready reasons.
POD_READY = "PodReady"  # True: the agent server answers its readiness probe
POD_MISSING = "PodMissing"  # no pod yet; the operator is creating it
POD_PENDING = "PodPending"
UNSCHEDULABLE = "Unschedulable"
CONTAINER_CREATING = "ContainerCreating"
CONTAINER_CONFIG_ERROR = "ContainerConfigError"  # e.g. the session-key Secret does not exist (yet)
CONTAINERS_NOT_READY = "ContainersNotReady"  # started, readiness probe not passing yet
POD_TERMINATING = "PodTerminating"
IMAGE_PULL_ERROR = "ImagePullError"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
OOM_KILLED = "OOMKilled"  # crash loop whose last termination was an OOM kill
POD_FAILED = "PodFailed"  # terminal pod phase (e.g. evicted); the operator replaces the pod
NODE_LOST = "NodeLost"
SANDBOX_PAUSED = "SandboxPaused"
INVALID_SPEC = "InvalidSpec"
# Running wanted, not Ready within the operator's start deadline (e.g. never scheduled, Secret missing);
# the message keeps the last problem observed.
START_TIMEOUT = "StartTimeout"

# Ready reasons the culling loop writes just before it deletes a Sandbox (docs/operator.md, "Culling"), and the
# reasons of the Events it posts: paused longer than pausedTTLSeconds, alive longer than maxLifetimeSeconds.
PAUSED_TTL_EXPIRED = "PausedTTLExpired"
MAX_LIFETIME_EXCEEDED = "MaxLifetimeExceeded"

# Ready reasons of a SandboxPool (docs/design/0010-warm-pools.md); InvalidSpec is shared with the Sandbox.
POOL_READY = "PoolReady"  # True: as many ready members as spec.size
POOL_FILLING = "Filling"  # members are being created or are starting
MEMBER_FAILED = "MemberFailed"  # a member failed (e.g. ImagePullError); it is replaced

# Matchable reasons of a SandboxPool (kubehands.spec.pool_match); a False one is also the pool's Ready reason.
TEMPLATE_MATCHABLE = "TemplateMatchable"  # True: some /start derives a spec that matches the template
# True, but only for a /start that sends some of the gateway's own variables (RUNTIME_URL, ...) with other values
GATEWAY_ENV_OVERRIDDEN = "GatewayEnvOverridden"
RESOURCES_NOT_OFFERED = "ResourcesNotOffered"  # not the base resources times an accepted factor
RUNTIME_CLASS_NOT_OFFERED = "RuntimeClassNotOffered"  # the gateway refuses the class, or derives another one
WORKSPACE_MISMATCH = "WorkspaceMismatch"  # size, mount path or StorageClass differ from the gateway's
PULL_POLICY_MISMATCH = "PullPolicyMismatch"  # no pull policy, but the gateway sets a default one
GATEWAY_ENV_MISMATCH = "GatewayEnvMismatch"  # a boot-only variable the gateway writes is not in the template
REQUEST_REFUSED = "RequestRefused"  # the gateway refuses a /start with the template's values (e.g. the image)
TEMPLATE_MISMATCH = "TemplateMismatch"  # anything else the gateway's matcher finds different
UNMATCHABLE_REASONS = frozenset(
    {
        RESOURCES_NOT_OFFERED,
        RUNTIME_CLASS_NOT_OFFERED,
        WORKSPACE_MISMATCH,
        PULL_POLICY_MISMATCH,
        GATEWAY_ENV_MISMATCH,
        REQUEST_REFUSED,
        TEMPLATE_MISMATCH,
    }
)

# Paused reasons.
NOT_PAUSED = "NotPaused"
PAUSING = "Pausing"  # state is Paused, the pod is still terminating
PAUSE_REQUESTED = "PauseRequested"
IDLE_TIMEOUT = "IdleTimeout"

# Ready=False reasons that make the phase Failed (the OpenHands clients give up on these).
FAILURE_REASONS = frozenset(
    {INVALID_SPEC, IMAGE_PULL_ERROR, CRASH_LOOP_BACK_OFF, OOM_KILLED, POD_FAILED, NODE_LOST, START_TIMEOUT}
)


def find_condition(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """Return `conditions` with `type_` set. `lastTransitionTime` only moves when the status changes."""
    result = [dict(c) for c in conditions if c.get("type") != type_]
    previous = find_condition(conditions, type_)
    if previous is not None and previous.get("status") == status and previous.get("lastTransitionTime"):
        transition = previous["lastTransitionTime"]
    else:
        transition = rfc3339(now)
    condition: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    result.append(condition)
    return sorted(result, key=lambda c: c["type"] != READY)  # Ready first, for kubectl readers
