"""What the clients see of a Sandbox: the runtime object, its status pair, and the session key.

Pure functions over the Sandbox and session-key Secret as the caches hold them (API JSON dicts).
"""

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

from kubehands.api.schemas import RuntimeObject, RuntimeStatus
from kubehands.api.settings import Settings
from kubehands.crd.constants import (
    ANNOTATION_CLAIMED_FROM,
    ANNOTATION_CLAIMED_POD,
    ANNOTATION_INIT,
    GROUP,
    INIT_READY,
    LABEL_POOL,
)
from kubehands.crd.model import DesiredState, Phase, PodStatus
from kubehands.spec import urls
from kubehands.spec.constants import SESSION_KEY_SECRET_KEY

Obj = dict[str, Any]

# How the session's Sandbox was started, written by the gateway when it starts one: `warm` (claimed from a pool, its
# init done) or `cold`, and for a cold start why no pool served it (`kubehands.api.pools.claims`: a miss reason, or
# `mismatch: <field>`). The runtime object's `start` and `cold_start_reason` (docs/runtime-api.md §2).
ANNOTATION_START = f"{GROUP}/start"
ANNOTATION_COLD_START_REASON = f"{GROUP}/cold-start-reason"
WARM = "warm"
COLD = "cold"


def start_annotations(start: str, reason: str | None = None) -> dict[str, str | None]:
    """The annotations that record a start (a merge patch's: a warm start removes an earlier reason)."""
    return {ANNOTATION_START: start, ANNOTATION_COLD_START_REASON: reason if start == COLD else None}


def start_of(sandbox: Obj | None) -> tuple[Literal["warm", "cold"] | None, str | None]:
    """(start, cold_start_reason) of a Sandbox; (None, None) while only the session's claim exists. A Sandbox
    from before the annotation: `warm` when it was claimed from a pool, else `cold` with no known reason."""
    if sandbox is None:
        return None, None
    annotations = (sandbox.get("metadata") or {}).get("annotations") or {}
    recorded = annotations.get(ANNOTATION_START)
    start: Literal["warm", "cold"]
    if recorded in (WARM, COLD):
        start = "warm" if recorded == WARM else "cold"
    else:
        start = "warm" if annotations.get(ANNOTATION_CLAIMED_FROM) else "cold"
    return start, (annotations.get(ANNOTATION_COLD_START_REASON) or None) if start == COLD else None


@dataclass
class Details:
    """What a runtime object says about its pod beyond the status pair (`kubehands.api.observe.pod_details`)."""

    container_statuses: list[Obj] = field(default_factory=list)
    events: list[Obj] = field(default_factory=list)
    pod_logs: str = ""


# Pod statuses the operator reports for a pod that will not become ready by itself.
_BROKEN = (PodStatus.FAILED, PodStatus.CRASH_LOOP_BACK_OFF, PodStatus.UNKNOWN)


def sandbox_session_id(sandbox: Obj) -> str:
    return str((sandbox.get("spec") or {}).get("sessionID") or "")


def secret_session_key(secret: Obj | None, key: str = SESSION_KEY_SECRET_KEY) -> str | None:
    """The session API key in a session-key Secret: `data` as the API returns it, or `stringData` as
    the gateway wrote it."""
    if not secret:
        return None
    value = (secret.get("data") or {}).get(key)
    if value:
        try:
            return base64.b64decode(value).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
    return (secret.get("stringData") or {}).get(key)


def status_is_current(sandbox: Obj) -> bool:
    """The operator has written status for the latest spec (e.g. after /pause or /resume).

    A status from an older generation may still describe the pod a pause just deleted: until the
    operator catches up, a sandbox is never reported ready nor routed to.
    """
    generation = (sandbox.get("metadata") or {}).get("generation")
    return generation is not None and (sandbox.get("status") or {}).get("observedGeneration") == generation


def _pod_status(status: Obj) -> str:
    return str(status.get("podStatus") or "").lower()


def is_pool_member(sandbox: Obj | None) -> bool:
    """An unclaimed warm-pool member: no session's sandbox, invisible to every client (a claim removes the label)."""
    return LABEL_POOL in (((sandbox or {}).get("metadata") or {}).get("labels") or {})


def awaiting_init(sandbox: Obj) -> bool:
    """A claimed sandbox whose dormant pod has not been given the session yet (POST /api/init): it answers no
    session request, so it is `starting`, and never routed to, until the gateway marks the init done. Only while
    that pod is the current one: a later pod (after a pause, or a cold restart) boots with the session's spec."""
    annotations = (sandbox.get("metadata") or {}).get("annotations") or {}
    claimed = annotations.get(ANNOTATION_CLAIMED_POD)
    if not claimed or annotations.get(ANNOTATION_INIT) == INIT_READY:
        return False
    pod_uid = (sandbox.get("status") or {}).get("podUID")
    return not pod_uid or pod_uid == claimed


def pod_identity(sandbox: Obj) -> tuple[str, str] | None:
    """(podName, podIP) of a ready pod a session may use; the key of the cached /alive result."""
    status = sandbox.get("status") or {}
    if not status_is_current(sandbox) or is_pool_member(sandbox) or awaiting_init(sandbox):
        return None
    if _pod_status(status) != PodStatus.READY or not status.get("podIP"):
        return None
    return (str(status.get("podName") or ""), str(status["podIP"]))


def runtime_status(sandbox: Obj | None, alive: bool) -> tuple[RuntimeStatus, PodStatus]:
    """(status, pod_status), one of the consistent pairs docs/runtime-api.md §8.16 requires."""
    if sandbox is None:  # only the claim exists: the Sandbox is being created
        return RuntimeStatus.STARTING, PodStatus.PENDING
    if (sandbox.get("metadata") or {}).get("deletionTimestamp"):
        return RuntimeStatus.STOPPED, PodStatus.NOT_FOUND
    spec = sandbox.get("spec") or {}
    status = sandbox.get("status") or {}
    phase = status.get("phase") or ""
    pod_status = _pod_status(status)
    if spec.get("state") == DesiredState.PAUSED:
        return RuntimeStatus.PAUSED, PodStatus.NOT_FOUND
    if not status_is_current(sandbox):
        return RuntimeStatus.STARTING, PodStatus.PENDING
    if phase == Phase.FAILED or pod_status in _BROKEN:
        crash_looping = pod_status == PodStatus.CRASH_LOOP_BACK_OFF
        return RuntimeStatus.ERROR, PodStatus.CRASH_LOOP_BACK_OFF if crash_looping else PodStatus.FAILED
    if awaiting_init(sandbox):
        booted = pod_status in (PodStatus.READY, PodStatus.RUNNING)
        return RuntimeStatus.STARTING, PodStatus.RUNNING if booted else PodStatus.PENDING
    if pod_status == PodStatus.READY and phase != Phase.PAUSED:
        if alive:
            return RuntimeStatus.RUNNING, PodStatus.READY
        return RuntimeStatus.STARTING, PodStatus.RUNNING
    if pod_status == PodStatus.RUNNING:
        return RuntimeStatus.STARTING, PodStatus.RUNNING
    return RuntimeStatus.STARTING, PodStatus.PENDING


def runtime_object(
    settings: Settings,
    runtime_id: str,
    session_id: str,
    sandbox: Obj | None,
    session_key: str | None,
    alive: bool,
    details: Details | None = None,
) -> RuntimeObject:
    status, pod_status = runtime_status(sandbox, alive)
    observed = (sandbox or {}).get("status") or {}
    reasons = observed.get("restartReasons") or []
    details = details or Details()
    start, cold_start_reason = start_of(sandbox)
    return RuntimeObject(
        runtime_id=runtime_id,
        session_id=session_id,
        url=urls.sandbox_url(settings, runtime_id),
        session_api_key=session_key,
        status=status,
        pod_status=pod_status,
        work_hosts=urls.work_hosts(settings, runtime_id),
        restart_count=int(observed.get("restartCount") or 0),
        restart_reasons=[str(r) for r in reasons] if isinstance(reasons, list) else [],
        container_statuses=details.container_statuses,
        events=details.events,
        pod_logs=details.pod_logs,
        start=start,
        cold_start_reason=cold_start_reason,
    )
