"""The real agent-server image under the operator: ready, pause/resume keeps files, crashes, culling."""

from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.kube import api_client
from tests.helpers.sandbox import SESSION_KEY, SandboxApi, operator_in_thread, sandbox_manifest
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.node
START_TIMEOUT = 180  # image already on the node; the agent server needs a few CPU seconds on 2 cores


@pytest.fixture
def sandboxes(kubeconfig: str, namespace: str) -> Iterator[SandboxApi]:
    with api_client(kubeconfig) as api, operator_in_thread(kubeconfig, namespace):
        yield SandboxApi(api, namespace)


def _bash(ip: str, name: str, command: str) -> dict:
    response = httpx.post(
        f"http://{ip}:60000/api/bash/execute_bash_command",
        json={"command": command},
        headers={"X-Session-API-Key": f"{SESSION_KEY}-{name}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_running_ready_and_the_workspace_survives_pause_and_resume(
    sandboxes: SandboxApi, agent_server_image: str
) -> None:
    sandboxes.create(sandbox_manifest("kh-life", agent_server_image))
    status = wait_for(
        lambda: sandboxes.phase("kh-life", "Running", "ready"), START_TIMEOUT, "Running and ready"
    )
    assert status["podIP"] and status["readyTime"] and status["startedTime"]
    assert httpx.get(f"http://{status['podIP']}:60000/alive", timeout=10).status_code == 200
    assert (
        _bash(status["podIP"], "kh-life", "echo kept > /workspace/proof && id -u")["stdout"].strip()
        == "10001"
    )

    for cycle in range(2):
        sandboxes.patch_spec("kh-life", state="Paused")
        # the v1.20 kubelet removes a deleted pod's object 10-15 s after its container stops, and took
        # over 60 s once under the load of a full `make test`: the bound is for the kubelet, not the operator
        wait_for(
            lambda: not sandboxes.pods("kh-life") and sandboxes.phase("kh-life", "Paused", "not found"),
            180,
            f"pod gone and phase Paused (cycle {cycle})",
        )
        assert len(sandboxes.pvcs("kh-life")) == 1
        sandboxes.patch_spec("kh-life", state="Running")
        status = wait_for(
            lambda: sandboxes.phase("kh-life", "Running", "ready"),
            START_TIMEOUT,
            f"Running again (cycle {cycle})",
        )
        assert _bash(status["podIP"], "kh-life", "cat /workspace/proof")["stdout"].strip() == "kept"


def test_a_command_that_exits_non_zero_reports_crashloopbackoff(
    sandboxes: SandboxApi, agent_server_image: str
) -> None:
    sandboxes.create(sandbox_manifest("kh-crash", agent_server_image, command=["sh", "-c", "exit 3"]))
    status = wait_for(
        lambda: sandboxes.phase("kh-crash", "Failed", "crashloopbackoff"), 120, "crashloopbackoff"
    )
    assert status["conditions"][0]["reason"] == "CrashLoopBackOff"
    assert "exit code 3" in status["message"]
    assert status["restartCount"] >= 1 and "Error (exit code 3)" in status["restartReasons"]


def test_idle_sandbox_is_paused(sandboxes: SandboxApi, agent_server_image: str) -> None:
    sandboxes.create(sandbox_manifest("kh-idle", agent_server_image, idleTimeoutSeconds=5))
    wait_for(lambda: sandboxes.phase("kh-idle", "Running", "ready"), START_TIMEOUT, "Running and ready")
    sandboxes.patch_status("kh-idle", lastActivityTime="2020-01-01T00:00:00Z")  # as the gateway would

    # Idle for 5 s after the pod started, checked every KUBEHANDS_CULL_INTERVAL_SECONDS (10 s by default).
    def paused() -> dict | None:
        status = sandboxes.phase("kh-idle", "Paused", "not found")
        return status if status and status["conditions"][1]["status"] == "True" else None

    status = wait_for(paused, 60, "idle culling to pause the sandbox and its pod to be gone")
    assert sandboxes.get("kh-idle")["spec"]["state"] == "Paused"
    assert status["conditions"][1]["reason"] == "IdleTimeout"
    assert status["lastActivityTime"] == "2020-01-01T00:00:00Z"
    assert sandboxes.pods("kh-idle") == [] and len(sandboxes.pvcs("kh-idle")) == 1
