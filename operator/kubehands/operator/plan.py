"""What converging a Sandbox must do, decided from what was observed: pure functions, no I/O, no clock.

`reconcile.converge` reads the Sandbox and its indexed pod, asks `plan` for the steps and carries them
out in order. Two decisions depend on facts only that I/O yields, so they are separate functions here:

- `binding_wait`: whether to wait for the workspace claim to bind. The claim is not read before planning:
  creating it is idempotent (409 means it is there) and costs the round trip a read would, and a new
  claim's storage class, perhaps the cluster default, is only known once the API server created it. So
  this is decided when the step runs, from the claim as created or read and its class's binding mode.
- `drifted` and `start_deadline_passed`: whether the culling loop must converge a Sandbox whose pod event
  may have been lost, or whose start deadline passed while nothing happened (a pod that never schedules
  gets no further events).
- `refusal`: whether an API error means the child can never be created from this spec.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from kubehands.crd import conditions as c
from kubehands.crd import constants
from kubehands.crd.model import DesiredState, Phase, PodStatus, Sandbox
from kubehands.operator.builders import sandbox_pod_hash
from kubehands.operator.status import api_error_message, observe_pod, start_overdue
from kubehands.operator.volumes import IMMEDIATE, is_bound

# The API server refuses the object itself (validation, 422, or a malformed request, 400): retrying the same
# spec cannot help. Quota or admission refusals (403) and server errors can pass later, so they are retried.
REFUSED_STATUSES = frozenset({400, 422})


class Step(StrEnum):
    """One API step of a converge. `plan` lists them in the order they must run."""

    CREATE_CLAIM = "create claim"  # the workspace PVC; 409 means it is already there
    ADOPT_SECRET = "adopt secret"  # the Sandbox becomes an owner of its session-key Secret
    AWAIT_BINDING = "await binding"  # before a new pod; waits only when `binding_wait` says so
    CREATE_POD = "create pod"
    DELETE_POD = "delete pod"  # pause, or replace; the pod's DELETED event triggers the next converge
    RESTAMP_POD = "restamp pod"  # a claimed dormant pod: keep it, and stamp it with the current spec hash


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    reason: str  # why the pod gets this step, or none: for the log


def plan(sandbox: Sandbox, pod: Mapping[str, Any] | None, *, bind_wait_seconds: float) -> Plan:
    """The steps that bring a valid Sandbox's children in line with its spec, given its current pod."""
    paused = sandbox.spec.state == DesiredState.PAUSED
    # Created Paused, a Sandbox gets its workspace on first resume: a thousand parked sessions must not
    # queue a thousand volumes at the provisioner.
    prepare = (Step.ADOPT_SECRET,) if paused else (Step.CREATE_CLAIM, Step.ADOPT_SECRET)
    observed = observe_pod(pod)
    if paused:
        if observed is None:
            return Plan(prepare, "paused, and the pod is gone")
        if observed.terminating:
            return Plan(prepare, "paused; the pod is terminating")
        return Plan((*prepare, Step.DELETE_POD), "paused")
    if observed is None:
        wait = (Step.AWAIT_BINDING,) if bind_wait_seconds > 0 else ()
        return Plan((*prepare, *wait, Step.CREATE_POD), "no pod")
    if observed.terminating:
        # Its DELETED event triggers the next converge, which creates the replacement.
        return Plan(prepare, "the pod is terminating")
    if observed.terminal:  # restartPolicy cannot restart a Failed or Succeeded pod
        return Plan((*prepare, Step.DELETE_POD), "the pod stopped; replacing it")
    if outdated(sandbox, pod):
        if claimed(sandbox, pod):
            return Plan((*prepare, Step.RESTAMP_POD), "a claim took over this dormant pod; keeping it")
        return Plan((*prepare, Step.DELETE_POD), "the pod spec changed; replacing it")
    return Plan(prepare, "the pod is up to date")


def outdated(sandbox: Sandbox, pod: Mapping[str, Any] | None) -> bool:
    """The pod was built from another spec than the Sandbox's current one."""
    annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(constants.ANNOTATION_SPEC_HASH) != sandbox_pod_hash(sandbox)


def claimed(sandbox: Sandbox, pod: Mapping[str, Any] | None) -> bool:
    """`pod` is the dormant pool pod a claim took over (annotation `claimed-pod` = its uid).

    The claim replaced the spec, so the pod looks outdated; it is kept, and only this pod: any later one (after a
    pause, or a restart request, which removes the annotation) is built from the new spec.
    """
    uid = ((pod or {}).get("metadata") or {}).get("uid")
    return bool(uid) and sandbox.annotations.get(constants.ANNOTATION_CLAIMED_POD) == uid


def refusal(status: int | None, body: str | bytes | None, reason: str | None = None) -> str | None:
    """The API server's message when it refused to create a child as invalid, else None (retry).

    A refused pod (e.g. an env name or a nodeSelector the API server does not accept) is reported as
    InvalidSpec, like the operator's own checks, instead of being retried forever.
    """
    return api_error_message(body, reason) if status in REFUSED_STATUSES else None


def binding_wait(claim: Mapping[str, Any], binding_mode: str | None) -> bool:
    """Wait for the claim to bind before creating the pod: only when its class binds at once.

    `binding_mode` is the volumeBindingMode of the claim's class, None when unknown (no class, or the
    class is unreadable). A `WaitForFirstConsumer` claim binds only for a scheduled pod.
    """
    return not is_bound(claim) and binding_mode == IMMEDIATE


def drifted(body: Mapping[str, Any], pod: Mapping[str, Any] | None) -> bool:
    """Desired state and the indexed pod disagree: a pod event may have been lost (kopf does not retry them).

    Works on the raw body, so a Sandbox whose spec the model cannot parse is still checked.
    """
    running = (body.get("spec") or {}).get("state", DesiredState.RUNNING) == DesiredState.RUNNING
    status = body.get("status") or {}
    ready_reported = status.get("podStatus") == PodStatus.READY
    pod_ready = pod is not None and any(
        x.get("type") == "Ready" and x.get("status") == "True"
        for x in (pod.get("status") or {}).get("conditions") or []
    )
    if running and pod is None and _invalid_for_current_generation(body):
        return False  # no pod is the right state: only a new spec (an update event) can change that
    return (running and pod is None) or (not running and pod is not None) or (ready_reported != pod_ready)


def _invalid_for_current_generation(body: Mapping[str, Any]) -> bool:
    status = body.get("status") or {}
    ready = c.find_condition(status.get("conditions") or [], c.READY) or {}
    current = status.get("observedGeneration") == (body.get("metadata") or {}).get("generation")
    return current and ready.get("reason") == c.INVALID_SPEC


def start_deadline_passed(body: Mapping[str, Any], now: datetime, timeout_seconds: int) -> bool:
    """The status still says Starting (or nothing yet) although the start deadline has passed.

    Converging then reports StartTimeout (phase Failed), after which this is False again; without it a
    pod stuck Unschedulable, which produces no further pod events, would stay Starting for ever.
    """
    phase = (body.get("status") or {}).get("phase")
    return phase in (None, Phase.STARTING) and start_overdue(body, now, timeout_seconds)
