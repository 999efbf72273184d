"""The real OpenHands app server (PyPI openhands-ai 1.11, in its own virtualenv), unchanged, with
RUNTIME=remote pointed at kubehands on the local cluster.

The operator and the gateway run as `kubehands operator` / `kubehands gateway` processes, as
`make run` starts them (with its gateway settings, hack/run.env: port routing mode, where each sandbox is
http://127.0.0.1:<port>); sandboxes are real pods of the local agent-server image of the app's bundled SDK
(1.34.0), the one `make run` prints for the app. The SDK's APIRemoteWorkspace is covered in test_gateway_journey.py.

Like `make run`, the gateway has a warm pool for the app's default /start (hack/pool-manifest.py over hack/run.sh's
`app_start_body`, with the gateway's own settings): each test waits for its ready member, and the app's sandbox
must be claimed from it.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from kubernetes import client

from kubehands.api.settings import Settings
from kubehands.spec import pools
from tests.helpers import warm_pool
from tests.helpers.kube import api_client
from tests.helpers.run_defaults import make_run_gateway_env
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.node
ROOT = Path(__file__).resolve().parents[2]
KUBEHANDS = str(Path(sys.executable).parent / "kubehands")
CLIENT_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENHANDS_SUPPRESS_BANNER": "1"}
SMALL = json.dumps({"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "2Gi"}})
APP_POOL = "openhands-app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client_python(kind: str) -> str:
    out = subprocess.run([str(ROOT / "hack" / "client-venvs.sh"), kind], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.fail(f"could not create the {kind} client virtualenv:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


@dataclass
class LiveGateway:
    url: str
    key: str
    namespace: str
    logs: Path
    kubeconfig: str
    pool_template: dict[str, Any]

    def warm_members(self) -> list[str]:
        """Wait until the app's pool has its one ready member, and the gateway's cache sees it; its name."""
        wait_for(lambda: warm_pool.pool_status(self.kubeconfig, self.namespace, APP_POOL).get("ready") == 1,
                 300, f"pool {APP_POOL} to have 1 ready member", interval=1.0)
        wait_for(lambda: f'kubehands_pool_ready{{pool="{APP_POOL}"}} 1.0' in httpx.get(f"{self.url}/metrics").text,
                 60, "the gateway to see the member ready")
        return warm_pool.pool_members(self.kubeconfig, self.namespace, APP_POOL)

    def assert_claimed(self, session_id: str, members: list[str]) -> str:
        """The session's Sandbox was claimed from the app's pool (one of `members`); its runtime id."""
        session = httpx.get(f"{self.url}/sessions/{session_id}", headers={"X-API-Key": self.key})
        assert session.status_code == 200, session.text
        rid = session.json()["runtime_id"]
        sandbox = warm_pool.sandbox(self.kubeconfig, self.namespace, rid)
        differs = pools.difference(self.pool_template, sandbox["spec"])
        assert warm_pool.claimed_from(sandbox) == APP_POOL, f"{rid} started cold; the template differs in {differs}"
        assert rid in members, (rid, members)
        return str(rid)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def live_gateway(
    kubeconfig: str, app_agent_server_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    namespace = f"kh-e2e-{uuid.uuid4().hex[:8]}"
    logs = tmp_path_factory.mktemp("e2e-logs")
    port = free_port()
    env = {
        **os.environ,
        "TMPDIR": str(logs),  # the Kubernetes client's certificate files, should a process be killed
        "KUBECONFIG": kubeconfig,
        "KUBEHANDS_KUBECONFIG": kubeconfig,
        "KUBEHANDS_NAMESPACE": namespace,
        "KUBEHANDS_NAMESPACES": namespace,
        "KUBEHANDS_METRICS_PORT": "0",  # no fixed port: other tests may run beside this one
        "KUBEHANDS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "KUBEHANDS_BASE_RESOURCES": SMALL,
        **make_run_gateway_env(),
    }
    with mock.patch.dict(os.environ, env, clear=True):
        settings = Settings()  # what `kubehands gateway` reads from this environment
    with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        procs: list[subprocess.Popen] = []
        try:
            body = warm_pool.app_start_body(app_agent_server_image)
            template = warm_pool.declare_pool(kubeconfig, APP_POOL, 1, body, settings)["spec"]["template"]
            procs.append(subprocess.Popen([KUBEHANDS, "operator", "-n", namespace, "--verbose"], env=env,
                                          stdout=open(logs / "operator.log", "w"), stderr=subprocess.STDOUT))
            key = subprocess.run([KUBEHANDS, "keys", "create", "e2e"], env=env, capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            procs.append(subprocess.Popen([KUBEHANDS, "gateway", "--host", "127.0.0.1", "--port", str(port)],
                                          env=env, stdout=open(logs / "gateway.log", "w"),
                                          stderr=subprocess.STDOUT))
            url = f"http://127.0.0.1:{port}"

            def healthy() -> bool:
                assert all(p.poll() is None for p in procs), (logs / "gateway.log").read_text()[-3000:]
                try:
                    return httpx.get(f"{url}/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(healthy, 60, "the gateway's /health")
            yield LiveGateway(url=url, key=key, namespace=namespace, logs=logs, kubeconfig=kubeconfig,
                              pool_template=template)
        finally:
            for proc in reversed(procs):
                _stop(proc)
            core.delete_namespace(namespace, propagation_policy="Background", grace_period_seconds=0)


@dataclass
class AppServer:
    url: str
    http: httpx.Client

    def sandbox(self, sandbox_id: str) -> dict | None:
        response = self.http.get("/api/v1/sandboxes", params={"id": sandbox_id})
        response.raise_for_status()
        return response.json()[0]

    def wait_sandbox_status(self, sandbox_id: str, status: str, timeout: float = 240) -> dict:
        return wait_for(
            lambda: (info := self.sandbox(sandbox_id)) is not None and info["status"] == status and info,
            timeout, f"app sandbox {sandbox_id} to be {status}", interval=1.0,
        )


@pytest.fixture(scope="module")
def app_server(
    live_gateway: LiveGateway, app_agent_server_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    python = client_python("app")
    port = free_port()
    state = tmp_path_factory.mktemp("app")
    (state / "cwd").mkdir()  # empty: the app reads ./.env
    (state / "tmp").mkdir()  # its TMPDIR: the app creates browser-use-downloads-* folders there
    repository, tag = app_agent_server_image.rsplit(":", 1)  # the agent server of the app's bundled SDK
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(state),
        "TMPDIR": str(state / "tmp"),
        **CLIENT_ENV,
        "SERVE_FRONTEND": "false",
        "OH_PERSISTENCE_DIR": str(state / "persistence"),
        "RUNTIME": "remote",
        "SANDBOX_REMOTE_RUNTIME_API_URL": live_gateway.url,
        "SANDBOX_API_KEY": live_gateway.key,
        "AGENT_SERVER_IMAGE_REPOSITORY": repository,
        "AGENT_SERVER_IMAGE_TAG": tag,
    }
    log = open(live_gateway.logs / "app-server.log", "w")
    proc = subprocess.Popen(
        [python, "-m", "uvicorn", "openhands.app_server.app:app", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=state / "cwd", stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            assert proc.poll() is None, (live_gateway.logs / "app-server.log").read_text()[-3000:]
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "the OpenHands app server's /health")
        with httpx.Client(base_url=url, timeout=60) as http:
            yield AppServer(url=url, http=http)
    finally:
        _stop(proc)


@pytest.mark.timeout(900)
def test_app_server_manages_sandboxes(app_server: AppServer, live_gateway: LiveGateway) -> None:
    members = live_gateway.warm_members()
    began = time.monotonic()
    created = app_server.http.post("/api/v1/sandboxes")
    assert created.status_code == 200, created.text
    sandbox_id = created.json()["id"]
    assert created.json()["status"] in ("STARTING", "RUNNING")

    running = app_server.wait_sandbox_status(sandbox_id, "RUNNING")
    print(f"app sandbox RUNNING {time.monotonic() - began:.2f}s after its POST (polled every 1 s)")
    assert running["exposed_urls"], running
    # make run's port mode: the agent server is a gateway port of its own, no path, no DNS
    agent = next(u["url"] for u in running["exposed_urls"] if u["name"] == "AGENT_SERVER")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", agent), agent
    rid = live_gateway.assert_claimed(sandbox_id, members)
    print(f"app sandbox {sandbox_id} is {rid}, claimed from pool {APP_POOL!r}")
    search = app_server.http.get("/api/v1/sandboxes/search", params={"limit": 100}).json()
    assert sandbox_id in [item["id"] for item in search["items"]]

    assert app_server.http.post(f"/api/v1/sandboxes/{sandbox_id}/pause").json() == {"success": True}
    app_server.wait_sandbox_status(sandbox_id, "PAUSED")
    assert app_server.http.post(f"/api/v1/sandboxes/{sandbox_id}/resume").json() == {"success": True}
    app_server.wait_sandbox_status(sandbox_id, "RUNNING")

    deleted = app_server.http.delete(f"/api/v1/sandboxes/{sandbox_id}", params={"sandbox_id": sandbox_id})
    assert deleted.status_code == 200, deleted.text
    wait_for(lambda: app_server.sandbox(sandbox_id) is None or app_server.sandbox(sandbox_id)["status"] == "MISSING",
             60, "the deleted sandbox to be gone")


@pytest.mark.timeout(900)
def test_app_server_conversation_survives_pause_and_resume(app_server: AppServer, live_gateway: LiveGateway) -> None:
    members = live_gateway.warm_members()
    began = time.monotonic()
    task = app_server.http.post("/api/v1/app-conversations", json={}).json()

    def start_task() -> dict | None:
        tasks = app_server.http.get("/api/v1/app-conversations/start-tasks", params={"ids": task["id"]}).json()
        current = tasks[0]
        assert current["status"] != "ERROR", current
        return current if current["status"] == "READY" else None

    ready = wait_for(start_task, 300, "the conversation start task to be READY", interval=1.0)
    conversation_id, sandbox_id = ready["app_conversation_id"], ready["sandbox_id"]
    print(f"conversation start task READY {time.monotonic() - began:.2f}s after its POST (polled every 1 s)")
    rid = live_gateway.assert_claimed(sandbox_id, members)
    print(f"conversation sandbox {sandbox_id} is {rid}, claimed from pool {APP_POOL!r}")

    def conversation() -> dict:
        items = app_server.http.get("/api/v1/app-conversations", params={"ids": conversation_id}).json()
        assert items[0] is not None, items
        return items[0]

    assert conversation()["sandbox_status"] == "RUNNING"
    # The app reads its conversation's events from the agent server (a server newer than the app's SDK sends
    # events it cannot parse: make run's app image is the release of that SDK).
    events = app_server.http.get(f"/api/v1/conversation/{conversation_id}/events/search", params={"limit": 100})
    assert events.status_code == 200, events.text
    app_server.http.post(f"/api/v1/sandboxes/{sandbox_id}/pause").raise_for_status()
    app_server.wait_sandbox_status(sandbox_id, "PAUSED")
    assert conversation()["sandbox_status"] == "PAUSED"
    app_server.http.post(f"/api/v1/sandboxes/{sandbox_id}/resume").raise_for_status()
    app_server.wait_sandbox_status(sandbox_id, "RUNNING")
    # After resume the agent server (a new pod on the same workspace) still knows the conversation.
    resumed = wait_for(lambda: (c := conversation())["sandbox_status"] == "RUNNING" and c.get("execution_status") and c,
                       120, "the conversation to be served again after resume", interval=1.0)
    assert resumed["conversation_url"]
    assert app_server.http.delete(f"/api/v1/app-conversations/{conversation_id}").json() == {"success": True}
