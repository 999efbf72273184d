"""Chaos on the real local cluster, bounded and loopback only: the gateway killed under polling, the API
server stalled, and a workspace carried through repeated pause/resume cycles."""

import io
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubehands.cli import main as kubehands_main
from kubehands.kube import SANDBOXES
from tests.helpers.kube import api_client
from tests.helpers.processes import GatewayProcess, OperatorProcess, cluster_pid, free_port, stalled
from tests.helpers.sandbox import SandboxApi
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.node

# A gateway request during an API-server stall must answer within this: its cache (200) or the
# 10 s API-call timeout (503), plus slack for a loaded 2-core machine.
STALL_ANSWER_SECONDS = 12.0
STALL_SECONDS = 20.0


def create_key(kubeconfig: str, namespace: str, name: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert kubehands_main(["keys", "--kubeconfig", kubeconfig, "-n", namespace, "create", name]) == 0
    return out.getvalue().strip()


@dataclass
class Deployed:
    gateway: GatewayProcess
    key: str

    @property
    def api(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


@pytest.fixture
def deployed(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[Deployed]:
    """An operator and a gateway as child processes, and an API key."""
    operator = OperatorProcess(kubeconfig, namespace, tmp_path / "operator.log")
    gateway = GatewayProcess(
        kubeconfig,
        namespace,
        free_port(),
        tmp_path / "gateway.log",
        KUBEHANDS_BASE_RESOURCES='{"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}',
        KUBEHANDS_IMAGE_PULL_POLICY="Never",
        KUBEHANDS_ACTIVITY_INTERVAL_SECONDS="1",
    )
    operator.start()
    gateway.start()
    try:
        yield Deployed(gateway, create_key(kubeconfig, namespace, "chaos"))
    finally:
        gateway.stop()
        operator.stop()
        for name in ("operator.log", "gateway.log"):
            print(f"--- {name}\n" + (tmp_path / name).read_text()[-3000:])


def start(http: httpx.Client, key: str, image: str, session_id: str) -> dict[str, Any]:
    response = http.post("/start", json={"image": image, "session_id": session_id}, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return dict(response.json())


def runtime_status(http: httpx.Client, key: str, runtime_id: str) -> str:
    response = http.get(f"/runtime/{runtime_id}", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


@pytest.mark.timeout(600)
def test_gateway_sigkill_under_polling_loses_nothing(
    kubeconfig: str, namespace: str, agent_server_image: str, deployed: Deployed
) -> None:
    gateway, key, api = deployed.gateway, deployed.key, deployed.api
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        before = {s: start(http, key, agent_server_image, s) for s in ("poll-a", "poll-b", "poll-c")}
        for _ in range(20):  # polling, as the clients do, right up to the kill
            for session_id in before:
                assert http.get(f"/sessions/{session_id}", headers=api).status_code == 200
        gateway.kill()
        with pytest.raises(httpx.TransportError):
            http.get("/health")
        gateway.start()
        for session_id, runtime in before.items():
            after = http.get(f"/sessions/{session_id}", headers=api)
            assert after.status_code == 200, after.text
            assert after.json()["runtime_id"] == runtime["runtime_id"]
            assert after.json()["session_api_key"] == runtime["session_api_key"]
        # a /start after the restart is idempotent too: the same runtime, not a second sandbox
        again = start(http, key, agent_server_image, "poll-a")
        assert again["runtime_id"] == before["poll-a"]["runtime_id"]
    with api_client(kubeconfig) as client:
        listed = SandboxApi(client, namespace).custom.list_namespaced_custom_object(
            namespace=namespace, **SANDBOXES.coordinates()
        )
    names = sorted(s["metadata"]["name"] for s in listed["items"])
    assert names == sorted(r["runtime_id"] for r in before.values())


@pytest.mark.timeout(600)
def test_api_server_stall_gets_answers_and_recovers(
    cluster: dict[str, str],
    kubeconfig: str,
    namespace: str,
    agent_server_image: str,
    deployed: Deployed,
) -> None:
    gateway, key, api = deployed.gateway, deployed.key, deployed.api
    with httpx.Client(base_url=gateway.url, timeout=STALL_ANSWER_SECONDS + 30) as http:
        runtime = start(http, key, agent_server_image, "stall-1")
        rid = runtime["runtime_id"]
        wait_for(lambda: runtime_status(http, key, rid) == "running", 240, "the sandbox to run")

        requests = [
            ("GET", "/health", None),
            ("GET", "/sessions/stall-1", None),
            ("GET", f"/runtime/{rid}", None),
            ("GET", "/list", None),
            ("POST", "/pause", {"runtime_id": rid}),
            ("POST", "/start", {"image": agent_server_image, "session_id": "stall-2"}),
            ("GET", f"/{rid}/alive", None),
        ]
        answers: list[tuple[str, int, float]] = []
        with stalled(cluster_pid(cluster, "kube-apiserver")):
            stalled_at = time.monotonic()
            for method, path, body in requests:
                began = time.monotonic()
                response = http.request(method, path, json=body, headers=api)
                answers.append((path, response.status_code, time.monotonic() - began))
                assert response.status_code in (200, 503), (path, response.status_code, response.text)
                assert "detail" in response.json() or response.status_code == 200
            # hold the stall for its full length, then let the API server run again
            remaining = STALL_SECONDS - (time.monotonic() - stalled_at)
            if remaining > 0:
                wait_for(lambda: time.monotonic() - stalled_at >= STALL_SECONDS, remaining + 1, "the stall to end")
        slow = [a for a in answers if a[2] > STALL_ANSWER_SECONDS]
        assert not slow, f"answered later than {STALL_ANSWER_SECONDS}s during the stall: {slow}"
        assert {p: c for p, c, _ in answers}["/health"] == 200  # the caches still serve

        # recovery by itself: writes work again and the sandbox can be paused
        def paused() -> bool:
            response = http.post("/pause", json={"runtime_id": rid}, headers=api)
            return response.status_code == 200 and response.json()["status"] == "paused"

        wait_for(paused, 120, "a /pause to succeed after the stall")
        wait_for(gateway.healthy, 60, "the gateway to report healthy")


@pytest.mark.timeout(900)
def test_workspace_file_survives_five_pause_resume_cycles(
    kubeconfig: str, namespace: str, agent_server_image: str, deployed: Deployed
) -> None:
    gateway, key, api = deployed.gateway, deployed.key, deployed.api
    with httpx.Client(base_url=gateway.url, timeout=120) as http:
        runtime = start(http, key, agent_server_image, "cycles-1")
        rid, url, session_key = runtime["runtime_id"], runtime["url"], runtime["session_api_key"]

        def bash(command: str) -> str:
            ran = http.post(
                f"{url}/api/bash/execute_bash_command",
                json={"command": command, "timeout": 60},
                headers={"X-Session-API-Key": session_key},
            )
            assert ran.status_code == 200, ran.text
            assert ran.json()["exit_code"] == 0, ran.json()
            return str(ran.json()["stdout"]).strip()

        def running() -> bool:
            return runtime_status(http, key, rid) == "running"

        wait_for(running, 240, "the sandbox to run")
        written = bash("head -c 1048576 /dev/urandom > /workspace/blob && sha256sum /workspace/blob | cut -d' ' -f1")
        assert len(written) == 64
        with api_client(kubeconfig) as client:
            sandboxes = SandboxApi(client, namespace)
            for cycle in range(5):
                assert http.post("/pause", json={"runtime_id": rid}, headers=api).json()["status"] == "paused"
                wait_for(lambda: sandboxes.phase(rid, "Paused"), 180, f"cycle {cycle}: the pause to finish")
                resumed = http.post("/resume", json={"runtime_id": rid}, headers=api)
                assert resumed.status_code == 200, resumed.text
                wait_for(running, 240, f"cycle {cycle}: the sandbox to run again")
                assert bash("sha256sum /workspace/blob | cut -d' ' -f1") == written, f"cycle {cycle}"
