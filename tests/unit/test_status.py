"""Status computation from pod dicts as the API server reports them."""

from datetime import UTC, datetime
from typing import Any

import pytest

from kubehands.operator.status import compute_status, observe_pod, status_patch, transition_event

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
