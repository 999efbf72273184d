"""The locally built sandbox image runs the real openhands-agent-server in a real pod."""

import uuid

import httpx
import pytest
from kubernetes import client

from tests.helpers.kube import api_client
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.node
SESSION_KEY = "test-session-key-" + uuid.uuid4().hex


def _agent_server_pod(image: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "agent-server"},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True},
            "containers": [
                {
                    "name": "agent-server",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "env": [{"name": "OH_SESSION_API_KEYS_0", "value": SESSION_KEY}],
                    "readinessProbe": {"httpGet": {"path": "/alive", "port": 60000}, "periodSeconds": 1},
                    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                }
            ],
        },
    }


@pytest.fixture
def agent_server_ip(kubeconfig: str, namespace: str, agent_server_image: str) -> str:
    with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(namespace, _agent_server_pod(agent_server_image))

        def ready_ip() -> str | None:
            pod = core.read_namespaced_pod("agent-server", namespace)
            conds = pod.status.conditions or []
            ready = any(c.type == "Ready" and c.status == "True" for c in conds)
            return pod.status.pod_ip if ready else None

        return wait_for(ready_ip, 180, "the agent-server pod to be Ready")


def test_probes_answer_without_a_key(agent_server_ip: str) -> None:
    base = f"http://{agent_server_ip}:60000"
    assert httpx.get(f"{base}/alive", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200


def test_shell_command_runs_with_the_session_key(agent_server_ip: str) -> None:
    response = httpx.post(
        f"http://{agent_server_ip}:60000/api/bash/execute_bash_command",
        headers={"X-Session-API-Key": SESSION_KEY},
        json={"command": "echo hello-from-$(id -u) > /workspace/f && cat /workspace/f"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["exit_code"] == 0
    assert body["stdout"].strip() == "hello-from-10001"


def test_api_call_without_the_key_is_rejected(agent_server_ip: str) -> None:
    url = f"http://{agent_server_ip}:60000/api/bash/execute_bash_command"
    assert httpx.post(url, json={"command": "true"}, timeout=10).status_code == 401
    wrong = httpx.post(url, json={"command": "true"}, headers={"X-Session-API-Key": "wrong"}, timeout=10)
    assert wrong.status_code == 401
