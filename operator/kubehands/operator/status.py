"""Pure status computation: from a Sandbox dict and its Pod dict (or None) to the Sandbox's status.

Works on raw API dicts, so it also reports Sandboxes whose spec the model cannot parse.
Never produces `lastActivityTime`: that field belongs to the gateway.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubehands.crd import conditions as c
from kubehands.crd import constants
from kubehands.crd.model import DesiredState, Phase, PodStatus
from kubehands.crd.times import parse_time, rfc3339

IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "RegistryUnavailable"}
)
CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
# Keep the status small even for a container that restarted thousands of times.
MAX_RESTART_REASONS = 10

# Fields this module owns in `status`; anything else (lastActivityTime) is left alone.
POD_FIELDS = (
    "podName",
    "podUID",
    "podIP",
    "restartCount",
    "restartReasons",
    "podCreatedTime",
    "podScheduledTime",
    "startedTime",
    "readyTime",
)
OWNED_FIELDS = (
    "phase",
    "podStatus",
    "conditions",
    "createdTime",
    "pausedTime",
    "observedGeneration",
    "message",
    *POD_FIELDS,
)


@dataclass(frozen=True)
class PodObservation:
    """What the pod says, in the Sandbox's vocabulary."""

    pod_status: PodStatus
    reason: str  # a Ready-condition reason from kubehands.crd.conditions
    message: str
    ready: bool = False
    terminating: bool = False
    terminal: bool = False  # phase Failed/Succeeded: restartPolicy cannot help, the pod must be replaced
    fields: dict[str, Any] = field(default_factory=dict)  # the POD_FIELDS of status


def _ts(value: Any) -> str | None:
    """Normalise any timestamp form (API `Z` strings, client `+00:00` strings) to one RFC 3339 spelling."""
    moment = parse_time(value)
    return rfc3339(moment) if moment else None


def _pod_condition(pod: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((x for x in pod.get("status", {}).get("conditions") or [] if x.get("type") == type_), {})


def _container_statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status", {})
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _termination(cs: Mapping[str, Any]) -> str | None:
    last = (cs.get("lastState") or {}).get("terminated")
    if not last:
        return None
    text = f"{last.get('reason') or 'Terminated'} (exit code {last.get('exitCode')})"
    return f"{text}: {last['message'].strip()}" if last.get("message") else text


def _pod_fields(pod: Mapping[str, Any]) -> dict[str, Any]:
    statuses = _container_statuses(pod)
    main = (pod.get("status", {}).get("containerStatuses") or [{}])[0]
    scheduled, ready = _pod_condition(pod, "PodScheduled"), _pod_condition(pod, "Ready")
    reasons = [r for r in (_termination(cs) for cs in statuses) if r]
    return {
        "podName": pod.get("metadata", {}).get("name"),
        "podUID": pod.get("metadata", {}).get("uid"),
        "podIP": pod.get("status", {}).get("podIP") or None,
        "restartCount": sum(int(cs.get("restartCount") or 0) for cs in statuses),
        "restartReasons": reasons[-MAX_RESTART_REASONS:],
        "podCreatedTime": _ts(pod.get("metadata", {}).get("creationTimestamp")),
        "podScheduledTime": _ts(scheduled.get("lastTransitionTime"))
        if scheduled.get("status") == "True"
        else None,
        "startedTime": _ts(((main.get("state") or {}).get("running") or {}).get("startedAt")),
        "readyTime": _ts(ready.get("lastTransitionTime")) if ready.get("status") == "True" else None,
    }


def observe_pod(pod: Mapping[str, Any] | None) -> PodObservation | None:
    """Classify a pod. The order matters: the first matching rule names the problem a user must fix."""
    if pod is None:
        return None
    fields = _pod_fields(pod)
    status = pod.get("status", {})
    phase = status.get("phase")
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return PodObservation(
            PodStatus.PENDING, c.POD_TERMINATING, "the pod is terminating", terminating=True, fields=fields
        )
    if phase in ("Failed", "Succeeded"):
        detail = (
            ": ".join(x for x in (status.get("reason"), status.get("message")) if x) or f"pod phase {phase}"
        )
        return PodObservation(
            PodStatus.FAILED,
            c.POD_FAILED,
            f"the pod stopped ({detail}); replacing it",
            terminal=True,
            fields=fields,
        )
    if (
        status.get("reason") == "NodeLost"
        or phase == "Unknown"
        or _pod_condition(pod, "Ready").get("status") == "Unknown"
    ):
        return PodObservation(
            PodStatus.UNKNOWN,
            c.NODE_LOST,
            status.get("message") or "the node running the pod stopped reporting",
            fields=fields,
        )
    for cs in _container_statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        why, detail = waiting.get("reason"), (waiting.get("message") or "").strip()
        if why in IMAGE_PULL_REASONS:
            return PodObservation(
                PodStatus.FAILED,
                c.IMAGE_PULL_ERROR,
                f"{why}: {detail or 'cannot pull image ' + str(cs.get('image'))}",
                fields=fields,
            )
        if why == "CrashLoopBackOff":
            last = _termination(cs) or "unknown"
            oom = ((cs.get("lastState") or {}).get("terminated") or {}).get("reason") == "OOMKilled"
            return PodObservation(
                PodStatus.CRASH_LOOP_BACK_OFF,
                c.OOM_KILLED if oom else c.CRASH_LOOP_BACK_OFF,
                f"container {cs.get('name')} keeps exiting (restarted {cs.get('restartCount', 0)} times); "
                f"last exit: {last}" + ("; the memory limit is too small" if oom else ""),
                fields=fields,
            )
        if why in CONFIG_ERROR_REASONS:
            return PodObservation(
                PodStatus.PENDING, c.CONTAINER_CONFIG_ERROR, f"{why}: {detail}", fields=fields
            )
    scheduled = _pod_condition(pod, "PodScheduled")
    if scheduled.get("status") == "False":
        reason = c.UNSCHEDULABLE if scheduled.get("reason") == "Unschedulable" else c.POD_PENDING
        return PodObservation(
            PodStatus.PENDING, reason, scheduled.get("message") or "waiting to be scheduled", fields=fields
        )
    if phase == "Running":
        if _pod_condition(pod, "Ready").get("status") == "True":
            return PodObservation(
                PodStatus.READY, c.POD_READY, "the agent server is ready", ready=True, fields=fields
            )
        return PodObservation(
            PodStatus.RUNNING,
            c.CONTAINERS_NOT_READY,
            "the container runs; waiting for the agent server's readiness probe",
            fields=fields,
        )
    if scheduled.get("status") == "True":
        return PodObservation(
            PodStatus.PENDING,
            c.CONTAINER_CREATING,
            "pulling the image and starting containers",
            fields=fields,
        )
    return PodObservation(PodStatus.PENDING, c.POD_PENDING, "waiting to be scheduled", fields=fields)


def api_error_message(body: str | bytes | None, reason: str | None = None) -> str:
    """The API server's own words for a failed call: the `message` of its Status body, else the HTTP reason."""
    try:
        message = json.loads(body or "").get("message")
    except (ValueError, AttributeError):  # not JSON, or JSON that is not a Status object
        message = None
    return str(message or reason or "unknown error")


def start_since(sandbox: Mapping[str, Any]) -> datetime | None:
    """When the current attempt to get the Sandbox Ready began: the latest of its creation, its resume (the
    Paused condition's transition to False), the Ready condition's last transition (first report, or a loss of
    readiness) and a restart request (the `restarted-at` annotation)."""
    metadata = sandbox.get("metadata") or {}
    conditions = (sandbox.get("status") or {}).get("conditions") or []
    paused = c.find_condition(conditions, c.PAUSED) or {}
    ready = c.find_condition(conditions, c.READY) or {}
    candidates = [
        metadata.get("creationTimestamp"),
        paused.get("lastTransitionTime") if paused.get("status") == c.FALSE else None,
        ready.get("lastTransitionTime"),
        (metadata.get("annotations") or {}).get(constants.ANNOTATION_RESTARTED_AT),
    ]
    moments = []
    for candidate in candidates:
        try:
            moment = parse_time(candidate)
        except (TypeError, ValueError):  # the annotation is free text to the API server
            continue
        if moment is not None:
            moments.append(moment)
    return max(moments, default=None)


def start_overdue(sandbox: Mapping[str, Any], now: datetime, timeout_seconds: int) -> bool:
    """Running is wanted and the start deadline (`timeout_seconds` after `start_since`; 0 = none) has passed.

    Says nothing about readiness: the caller knows whether the Sandbox is Ready.
    """
    if not timeout_seconds or (sandbox.get("spec") or {}).get("state") == DesiredState.PAUSED:
        return False
    since = start_since(sandbox)
    return since is not None and now - since >= timedelta(seconds=timeout_seconds)


def compute_status(
    sandbox: Mapping[str, Any],
    pod: Mapping[str, Any] | None,
    problems: list[str],
    now: datetime,
    *,
    start_timeout_seconds: int = 0,
    api_error: str | None = None,
) -> dict[str, Any]:
    """The operator-owned status fields for `sandbox` given its pod. Fields to clear are None.

    `start_timeout_seconds` is the start deadline (0 = none); `api_error` says why the last converge could not
    finish its API steps, shown while there is no pod.
    """
    metadata = sandbox.get("metadata", {})
    current = sandbox.get("status") or {}
    generation = metadata.get("generation")
    pause_wanted = (sandbox.get("spec") or {}).get("state") == DesiredState.PAUSED
    observed = observe_pod(pod)

    if problems:
        ready = (c.FALSE, c.INVALID_SPEC, "invalid spec: " + "; ".join(problems))
        pod_status = PodStatus.FAILED
    elif pause_wanted:
        ready = (c.FALSE, c.SANDBOX_PAUSED, "the sandbox is paused; its workspace is kept")
        # Outside the clients' "starting" mapping, so status and pod_status agree (docs/runtime-api.md §8.16).
        pod_status = PodStatus.NOT_FOUND
    elif observed is None:
        ready = (c.FALSE, c.POD_MISSING, f"creating the pod ({api_error})" if api_error else "creating the pod")
        pod_status = PodStatus.NOT_FOUND
    else:
        ready = (c.TRUE if observed.ready else c.FALSE, observed.reason, observed.message)
        pod_status = observed.pod_status

    if not pause_wanted:
        paused = (c.FALSE, c.NOT_PAUSED, "the sandbox is not paused")  # never "": 1.20 reads it as null
    elif observed is not None:
        paused = (c.FALSE, c.PAUSING, "waiting for the pod to terminate")
    elif (
        metadata.get("annotations", {}).get(constants.ANNOTATION_PAUSED_BY) == constants.PAUSED_BY_IDLE_CULLER
    ):
        paused = (c.TRUE, c.IDLE_TIMEOUT, "paused after the idle timeout")
    else:
        paused = (c.TRUE, c.PAUSE_REQUESTED, "paused on request")

    conditions = c.set_condition(current.get("conditions") or [], c.READY, *ready, now, generation)
    conditions = c.set_condition(conditions, c.PAUSED, *paused, now, generation)
    # Judged on the new conditions: a resume moves the Paused transition to now, so an old creation time or
    # an old loss of readiness never fails a Sandbox that was just resumed.
    if (
        ready[0] == c.FALSE
        and ready[1] not in c.FAILURE_REASONS  # the more precise reason stays
        and not pause_wanted
        and start_overdue({**sandbox, "status": {"conditions": conditions}}, now, start_timeout_seconds)
    ):
        # Pods that never schedule, or wait forever for a Secret, would otherwise look "starting" for ever.
        ready = (c.FALSE, c.START_TIMEOUT, f"not ready after {start_timeout_seconds}s: {ready[1]}: {ready[2]}")
        pod_status = PodStatus.FAILED
        conditions = c.set_condition(conditions, c.READY, *ready, now, generation)

    if problems or (ready[0] == c.FALSE and ready[1] in c.FAILURE_REASONS):
        phase = Phase.FAILED
    elif pause_wanted:
        phase = Phase.PAUSED
    elif ready[0] == c.TRUE:
        phase = Phase.RUNNING
    else:
        phase = Phase.STARTING

    is_paused = paused[0] == c.TRUE
    pod_fields = observed.fields if observed is not None else dict.fromkeys(POD_FIELDS)
    return {
        "phase": phase.value,
        "podStatus": pod_status.value,
        "conditions": conditions,
        "createdTime": _ts(metadata.get("creationTimestamp")),
        "pausedTime": (current.get("pausedTime") or rfc3339(now)) if is_paused else None,
        "observedGeneration": generation,
        "message": ready[2],
        **pod_fields,
    }


def culled_status(sandbox: Mapping[str, Any], reason: str, message: str, now: datetime) -> dict[str, Any]:
    """The status patch the culling loop writes just before it deletes `sandbox`: Ready=False with the cull's
    reason (`PausedTTLExpired`, `MaxLifetimeExceeded`) and message, so that whoever watches it sees why it goes.
    Phase and pod fields stay as they are: to a client the sandbox goes from what it was to deleted, as after
    /stop."""
    current = sandbox.get("status") or {}
    generation = (sandbox.get("metadata") or {}).get("generation")
    conditions = c.set_condition(current.get("conditions") or [], c.READY, c.FALSE, reason, message, now, generation)
    return {"conditions": conditions, "message": message}


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch turning `current` into `desired`: changed keys only; None removes a present key."""
    current = current or {}
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if value is None:
            if current.get(key) not in (None, []):
                patch[key] = None
        elif current.get(key) != value:
            patch[key] = value
    return patch


def transition_event(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The Kubernetes Event `(type, reason, message)` for a change of phase or Ready reason, else None."""
    old = old or {}
    old_ready = c.find_condition(old.get("conditions") or [], c.READY) or {}
    new_ready = c.find_condition(new.get("conditions") or [], c.READY) or {}
    if old.get("phase") == new.get("phase") and old_ready.get("reason") == new_ready.get("reason"):
        return None
    reason = str(new_ready.get("reason") or new.get("phase"))
    warning = new.get("phase") == Phase.FAILED or reason in (c.UNSCHEDULABLE, c.CONTAINER_CONFIG_ERROR)
    message = f"{old.get('phase') or 'New'} -> {new.get('phase')}: {new_ready.get('message', '')}".rstrip(
        ": "
    )
    return ("Warning" if warning else "Normal", reason, message)
