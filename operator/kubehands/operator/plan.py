"""What converging a Sandbox must do, decided from what was observed: pure functions, no I/O, no clock.

`reconcile.converge` reads the Sandbox and its indexed pod, asks `plan` for the steps and carries them
out in order. Two decisions depend on facts only that I/O yields, so they are separate functions here:

- `binding_wait`: whether to wait for the workspace claim to bind. The claim is not read before planning:
  creating it is idempotent (409 means it is there) and costs the round trip a read would, and a new
  claim's storage class, perhaps the cluster default, is only known once the API server created it. So
  this is decided when the step runs, from the claim as created or read and its class's binding mode.
- `drifted`: whether the culling loop must converge a Sandbox whose pod event may have been lost.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubehands.crd import constants
from kubehands.crd.model import DesiredState, PodStatus, Sandbox
from kubehands.operator.builders import pod_spec_hash
from kubehands.operator.status import observe_pod
from kubehands.operator.volumes import IMMEDIATE, is_bound


class Step(StrEnum):
    """One API step of a converge. `plan` lists them in the order they must run."""

    CREATE_CLAIM = "create claim"  # the workspace PVC; 409 means it is already there
    ADOPT_SECRET = "adopt secret"  # the Sandbox becomes an owner of its session-key Secret
    AWAIT_BINDING = "await binding"  # before a new pod; waits only when `binding_wait` says so
    CREATE_POD = "create pod"
    DELETE_POD = "delete pod"  # pause, or replace; the pod's DELETED event triggers the next converge


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
        return Plan((*prepare, Step.DELETE_POD), "the pod spec changed; replacing it")
    return Plan(prepare, "the pod is up to date")


def outdated(sandbox: Sandbox, pod: Mapping[str, Any] | None) -> bool:
    """The pod was built from another spec than the Sandbox's current one."""
    annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(constants.ANNOTATION_SPEC_HASH) != pod_spec_hash(sandbox.spec)


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
    ready_reported = (body.get("status") or {}).get("podStatus") == PodStatus.READY
    pod_ready = pod is not None and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )
    return (running and pod is None) or (not running and pod is not None) or (ready_reported != pod_ready)
