"""Status computation from pod dicts as the API server reports them."""

from datetime import UTC, datetime
from typing import Any

import pytest

from kubehands.operator.status import compute_status, culled_status, observe_pod, status_patch, transition_event

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T0 = "2026-01-02T03:00:00Z"


def sandbox(
    state: str = "Running", status: dict[str, Any] | None = None, **annotations: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "kh-a",
            "namespace": "ns",
            "generation": 2,
            "creationTimestamp": T0,
            "annotations": annotations,
        },
        "spec": {"image": "i", "sessionKeySecretRef": {"name": "s"}, "state": state},
        "status": status or {},
    }


def pod(
    phase: str = "Pending",
    conditions: dict[str, str] | None = None,
    container: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, **extra}
    status["conditions"] = [
        {"type": t, "status": s, "lastTransitionTime": "2026-01-02T03:01:00Z"}
        for t, s in (conditions or {}).items()
    ]
    if container is not None:
        status["containerStatuses"] = [{"name": "sandbox", "image": "img:1", "restartCount": 0, **container}]
    return {"metadata": {"name": "kh-a", "creationTimestamp": T0}, "status": status}


SCHEDULED = {"PodScheduled": "True"}
UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/1 nodes are available: 1 Insufficient memory.",
}


def test_no_pod_yet() -> None:
    status = compute_status(sandbox(), None, [], NOW)
    assert (status["phase"], status["podStatus"], status["conditions"][0]["reason"]) == (
        "Starting",
        "not found",
        "PodMissing",
    )
    assert status["podName"] is None and status["createdTime"] == T0 and status["observedGeneration"] == 2


def test_pending_unscheduled() -> None:
    p = pod()
    p["status"]["conditions"] = [UNSCHEDULABLE]
    obs = observe_pod(p)
    assert obs is not None and (obs.pod_status, obs.reason) == ("pending", "Unschedulable")
    assert "Insufficient memory" in obs.message
    assert compute_status(sandbox(), p, [], NOW)["phase"] == "Starting"


def test_pending_container_creating() -> None:
    p = pod(conditions=SCHEDULED, container={"state": {"waiting": {"reason": "ContainerCreating"}}})
    status = compute_status(sandbox(), p, [], NOW)
    assert (status["phase"], status["podStatus"], status["conditions"][0]["reason"]) == (
        "Starting",
        "pending",
        "ContainerCreating",
    )
    assert status["podScheduledTime"] == "2026-01-02T03:01:00Z"


def test_running_not_ready() -> None:
    p = pod(
        "Running",
        {**SCHEDULED, "Ready": "False"},
        {"state": {"running": {"startedAt": "2026-01-02T03:02:00Z"}}},
    )
    status = compute_status(sandbox(), p, [], NOW)
    assert (status["phase"], status["podStatus"]) == ("Starting", "running")
    assert status["startedTime"] == "2026-01-02T03:02:00Z" and status["readyTime"] is None


def test_ready() -> None:
    p = pod(
        "Running",
        {**SCHEDULED, "Ready": "True"},
        {"state": {"running": {"startedAt": "2026-01-02T03:02:00+00:00"}}, "ready": True},
        podIP="10.88.0.7",
    )
    status = compute_status(sandbox(), p, [], NOW)
    assert (status["phase"], status["podStatus"], status["message"]) == (
        "Running",
        "ready",
        "the agent server is ready",
    )
    assert status["conditions"][0] == {
        "type": "Ready",
        "status": "True",
        "reason": "PodReady",
        "message": "the agent server is ready",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "observedGeneration": 2,
    }
    assert (status["podIP"], status["podName"], status["restartCount"]) == ("10.88.0.7", "kh-a", 0)
    assert status["startedTime"] == "2026-01-02T03:02:00Z"  # normalised spelling
    assert status["readyTime"] == "2026-01-02T03:01:00Z"


def test_crash_loop_reports_exit_code() -> None:
    p = pod(
        "Running",
        {**SCHEDULED, "Ready": "False"},
        {
            "restartCount": 3,
            "state": {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": "back-off 40s restarting failed container",
                }
            },
            "lastState": {"terminated": {"reason": "Error", "exitCode": 3}},
        },
    )
    status = compute_status(sandbox(), p, [], NOW)
    assert (status["phase"], status["podStatus"], status["conditions"][0]["reason"]) == (
        "Failed",
        "crashloopbackoff",
        "CrashLoopBackOff",
    )
    assert "exit code 3" in status["message"] and "restarted 3 times" in status["message"]
    assert status["restartCount"] == 3 and status["restartReasons"] == ["Error (exit code 3)"]


def test_oom_kill() -> None:
    p = pod(
        "Running",
        SCHEDULED,
        {
            "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        },
    )
    status = compute_status(sandbox(), p, [], NOW)
    assert (status["podStatus"], status["conditions"][0]["reason"]) == ("crashloopbackoff", "OOMKilled")
    assert status["restartReasons"] == ["OOMKilled (exit code 137)"]
    assert "memory limit" in status["message"]


def test_restarted_once_but_running_again_keeps_the_reason() -> None:
    p = pod(
        "Running",
        {**SCHEDULED, "Ready": "True"},
        {
            "restartCount": 1,
            "state": {"running": {}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        },
    )
    status = compute_status(sandbox(), p, [], NOW)
    assert status["podStatus"] == "ready" and status["restartReasons"] == ["OOMKilled (exit code 137)"]


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"])
def test_image_pull_errors(reason: str) -> None:
    p = pod(
        conditions=SCHEDULED, container={"state": {"waiting": {"reason": reason, "message": "no such image"}}}
    )
    status = compute_status(sandbox(), p, [], NOW)
    assert (status["phase"], status["podStatus"], status["conditions"][0]["reason"]) == (
        "Failed",
        "failed",
        "ImagePullError",
    )
    assert status["message"] == f"{reason}: no such image"


def test_image_pull_error_in_the_init_container() -> None:
    p = pod(conditions=SCHEDULED)
    p["status"]["initContainerStatuses"] = [
        {"name": "workspace-chown", "state": {"waiting": {"reason": "ErrImageNeverPull"}}}
    ]
    assert compute_status(sandbox(), p, [], NOW)["podStatus"] == "failed"


def test_missing_secret_is_a_config_error_not_a_failure() -> None:
    p = pod(
        conditions=SCHEDULED,
        container={
            "state": {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s" not found'}}
        },
    )
    status = compute_status(sandbox(), p, [], NOW)
    assert (status["phase"], status["podStatus"], status["conditions"][0]["reason"]) == (
        "Starting",
        "pending",
        "ContainerConfigError",
    )


def test_node_lost() -> None:
    p = pod("Running", {**SCHEDULED, "Ready": "Unknown"}, reason="NodeLost", message="node is unresponsive")
    status = compute_status(sandbox(), p, [], NOW)
    assert (status["phase"], status["podStatus"], status["conditions"][0]["reason"]) == (
        "Failed",
        "unknown",
        "NodeLost",
    )


def test_evicted_pod_is_terminal() -> None:
    p = pod("Failed", reason="Evicted", message="The node was low on memory.")
    obs = observe_pod(p)
    assert obs is not None and obs.terminal and obs.pod_status == "failed"
    assert "Evicted" in obs.message


def test_invalid_spec() -> None:
    status = compute_status(sandbox(), None, ["volume 'h': hostPath volumes are disabled"], NOW)
    assert (status["phase"], status["podStatus"]) == ("Failed", "failed")
    assert status["conditions"][0]["reason"] == "InvalidSpec"
    assert "hostPath volumes are disabled" in status["conditions"][0]["message"]


def test_pausing_then_paused() -> None:
    terminating = pod("Running", SCHEDULED)
    terminating["metadata"]["deletionTimestamp"] = "2026-01-02T03:04:00Z"
    pausing = compute_status(sandbox("Paused"), terminating, [], NOW)
    assert (pausing["phase"], pausing["podStatus"], pausing["pausedTime"]) == ("Paused", "not found", None)
    assert pausing["conditions"][1]["reason"] == "Pausing"
    paused = compute_status(sandbox("Paused", pausing), None, [], NOW)
    assert paused["conditions"][1] == {
        "type": "Paused",
        "status": "True",
        "reason": "PauseRequested",
        "message": "paused on request",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "observedGeneration": 2,
    }
    assert paused["conditions"][0]["reason"] == "SandboxPaused"
    assert paused["pausedTime"] == "2026-01-02T03:04:05Z" and paused["podName"] is None


def test_paused_by_the_idle_culler_and_paused_time_is_kept() -> None:
    body = sandbox(
        "Paused", {"pausedTime": "2026-01-01T00:00:00Z"}, **{"kubehands.dev/paused-by": "idle-culler"}
    )
    status = compute_status(body, None, [], NOW)
    assert status["conditions"][1]["reason"] == "IdleTimeout"
    assert status["pausedTime"] == "2026-01-01T00:00:00Z"


def test_the_status_of_a_culled_sandbox_says_why_it_goes() -> None:
    """Written just before the delete: Ready=False with the cull's reason; the phase and pod fields stay."""
    running = compute_status(sandbox(), pod("Running", {"Ready": "True", **SCHEDULED}, podIP="10.88.0.2"), [], NOW)
    running["lastActivityTime"] = "2026-01-02T03:04:00Z"
    later = datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC)
    culled = culled_status(sandbox(status=running), "MaxLifetimeExceeded", "alive too long", later)
    assert set(culled) == {"conditions", "message"} and culled["message"] == "alive too long"
    ready, paused = culled["conditions"]
    assert (ready["type"], ready["status"], ready["reason"], ready["message"]) == (
        "Ready",
        "False",
        "MaxLifetimeExceeded",
        "alive too long",
    )
    assert ready["lastTransitionTime"] == "2026-01-02T04:00:00Z" and ready["observedGeneration"] == 2
    assert paused == running["conditions"][1]  # untouched
    assert status_patch(running, culled) == culled

    paused_status = compute_status(sandbox("Paused", {"pausedTime": T0}), None, [], NOW)
    culled = culled_status(sandbox("Paused", paused_status), "PausedTTLExpired", "paused too long", later)
    ready, before = culled["conditions"][0], paused_status["conditions"][0]
    assert ready["reason"] == "PausedTTLExpired"
    assert ready["lastTransitionTime"] == before["lastTransitionTime"]  # not Ready before either: the time stays


def test_status_patch_only_changes_and_never_touches_last_activity() -> None:
    current = {
        "phase": "Starting",
        "podIP": "10.88.0.2",
        "lastActivityTime": "2026-01-01T00:00:00Z",
        "restartReasons": [],
    }
    desired = {"phase": "Running", "podIP": None, "podName": None, "restartReasons": None}
    assert status_patch(current, desired) == {"phase": "Running", "podIP": None}
    full = compute_status(sandbox(status=current), None, [], NOW)
    assert "lastActivityTime" not in full
    assert status_patch(full, full) == {}


def test_transition_events() -> None:
    starting = compute_status(sandbox(), None, [], NOW)
    assert transition_event({}, starting) == ("Normal", "PodMissing", "New -> Starting: creating the pod")
    assert transition_event(starting, starting) is None
    failed = compute_status(sandbox(), None, ["bad"], NOW)
    kind, reason, _ = transition_event(starting, failed) or ("", "", "")
    assert (kind, reason) == ("Warning", "InvalidSpec")


# ---- start deadline ---------------------------------------------------------------------------------------

LONG_AGO = "2026-01-02T02:00:00Z"  # 64 min 5 s before NOW
CONFIG_ERROR = {"state": {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s" not found'}}}


def unschedulable_pod() -> dict[str, Any]:
    p = pod()
    p["status"]["conditions"] = [UNSCHEDULABLE]
    return p


def aged(
    created: str = LONG_AGO,
    ready_since: str | None = LONG_AGO,
    resumed: str | None = None,
    restarted_at: str | None = None,
    state: str = "Running",
) -> dict[str, Any]:
    """A Sandbox as the operator last reported it: Ready False since `ready_since`, Paused False since
    `resumed` (or since creation)."""
    conditions = []
    if ready_since:
        conditions.append(
            {"type": "Ready", "status": "False", "reason": "PodPending", "lastTransitionTime": ready_since}
        )
    conditions.append(
        {"type": "Paused", "status": "False", "reason": "NotPaused", "lastTransitionTime": resumed or created}
    )
    annotations = {"kubehands.dev/restarted-at": restarted_at} if restarted_at else {}
    body = sandbox(state, {"phase": "Starting", "conditions": conditions}, **annotations)
    body["metadata"]["creationTimestamp"] = created
    return body


MINUTE_AGO = "2026-01-02T03:03:05Z"
START_CASES = [
    # (id, sandbox, pod, start timeout, expected Ready reason, expected phase)
    ("unschedulable past the deadline", aged(), unschedulable_pod(), 600, "StartTimeout", "Failed"),
    ("missing Secret past the deadline", aged(), pod(conditions=SCHEDULED, container=CONFIG_ERROR), 600,
     "StartTimeout", "Failed"),
    ("no pod past the deadline", aged(), None, 600, "StartTimeout", "Failed"),
    ("running, probe failing, past the deadline", aged(), pod("Running", {**SCHEDULED, "Ready": "False"}), 600,
     "StartTimeout", "Failed"),
    ("unschedulable within the deadline", aged(), unschedulable_pod(), 7200, "Unschedulable", "Starting"),
    ("deadline 0: never", aged(), unschedulable_pod(), 0, "Unschedulable", "Starting"),
    ("ready: no deadline", aged(), pod("Running", {**SCHEDULED, "Ready": "True"}), 600, "PodReady", "Running"),
    ("a precise failure keeps its reason", aged(),
     pod(conditions=SCHEDULED, container={"state": {"waiting": {"reason": "ErrImagePull"}}}), 600,
     "ImagePullError", "Failed"),
    ("paused: no deadline", aged(state="Paused"), None, 600, "SandboxPaused", "Paused"),
    ("resumed a minute ago", aged(resumed=MINUTE_AGO), unschedulable_pod(), 600, "Unschedulable", "Starting"),
    ("restarted a minute ago", aged(restarted_at=MINUTE_AGO), unschedulable_pod(), 600, "Unschedulable",
     "Starting"),
    ("lost readiness a minute ago", aged(ready_since=MINUTE_AGO), unschedulable_pod(), 600, "Unschedulable",
     "Starting"),
    ("first report now of an old Sandbox: counts from now", aged(ready_since=None), unschedulable_pod(), 600,
     "Unschedulable", "Starting"),
    ("unreadable restarted-at is ignored", aged(restarted_at="yesterday"), unschedulable_pod(), 600,
     "StartTimeout", "Failed"),
]


@pytest.mark.parametrize(
    ("body", "current", "timeout", "reason", "phase"), [c[1:] for c in START_CASES], ids=[c[0] for c in START_CASES]
)
def test_start_deadline(
    body: dict[str, Any], current: dict[str, Any] | None, timeout: int, reason: str, phase: str
) -> None:
    status = compute_status(body, current, [], NOW, start_timeout_seconds=timeout)
    assert (status["conditions"][0]["reason"], status["phase"]) == (reason, phase)


def test_start_timeout_keeps_the_last_problem_and_its_transition_time() -> None:
    status = compute_status(aged(), unschedulable_pod(), [], NOW, start_timeout_seconds=600)
    ready = status["conditions"][0]
    assert ready["message"] == "not ready after 600s: Unschedulable: 0/1 nodes are available: 1 Insufficient memory."
    assert status["message"] == ready["message"] and status["podStatus"] == "failed"
    assert ready["lastTransitionTime"] == LONG_AGO  # still False: the deadline does not restart
    kind, event_reason, _ = transition_event(aged()["status"], status) or ("", "", "")
    assert (kind, event_reason) == ("Warning", "StartTimeout")


def test_a_resume_long_after_creation_is_not_timed_out_at_once() -> None:
    """Judged on the new conditions: the resume moves the Paused transition to now."""
    paused = aged()
    paused["status"] = {
        "phase": "Paused",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "SandboxPaused", "lastTransitionTime": LONG_AGO},
            {"type": "Paused", "status": "True", "reason": "PauseRequested", "lastTransitionTime": LONG_AGO},
        ],
    }
    status = compute_status(paused, None, [], NOW, start_timeout_seconds=600)
    assert (status["phase"], status["conditions"][0]["reason"]) == ("Starting", "PodMissing")


def test_why_the_pod_could_not_be_created_is_in_the_message() -> None:
    status = compute_status(sandbox(), None, [], NOW, api_error="create pod failed: 403 exceeded quota")
    assert status["message"] == "creating the pod (create pod failed: 403 exceeded quota)"
    assert status["conditions"][0]["reason"] == "PodMissing" and status["phase"] == "Starting"
