"""The real OpenHands app server (PyPI openhands-ai 1.11, in its own virtualenv), unchanged, with
RUNTIME=remote pointed at kubehands on the local cluster.

The operator and the gateway run as `kubehands operator` / `kubehands gateway` processes, as
`make run` starts them (with its gateway settings, hack/run.env: port routing mode, where each sandbox is
http://127.1.0.<n>:<port>); sandboxes are real pods of the local agent-server image of the app's bundled SDK
(1.34.0), the one `make run` prints for the app. The SDK's APIRemoteWorkspace is covered in test_gateway_journey.py.

Like `make run`, the gateway has a warm pool for the app's default /start (hack/pool-manifest.py over hack/run.sh's
`app_start_body`, with the gateway's own settings): each test waits for its ready member, and the app's sandbox
must be claimed from it.
"""

import re
import time

import pytest

from tests.helpers.live_app import APP_POOL, AppServer, LiveGateway
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.node


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
    # make run's port mode: a gateway port on a loopback address of its own (127.1.0.<n>), no path, no DNS
    agent = next(u["url"] for u in running["exposed_urls"] if u["name"] == "AGENT_SERVER")
    assert re.fullmatch(r"http://127\.\d+\.\d+\.\d+:\d+", agent), agent
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
