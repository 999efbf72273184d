"""What a failing sandbox tells its client and its administrator, from the real kubelet: a missing image shows its
waiting reason and the kubelet's event in the runtime object; a command that exits shows its exit code, restart
count and log lines, in the runtime object and through `kubehands sandboxes get | logs`."""

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, redirect_stderr, redirect_stdout
from typing import Any

import httpx
import pytest

from kubehands.api.main import create_app
from kubehands.api.settings import Settings
from kubehands.cli import main as kubehands_main
from tests.helpers.sandbox import SMALL_RESOURCES, operator_in_thread

pytestmark = pytest.mark.node


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = kubehands_main(list(args))
    return code, out.getvalue(), err.getvalue()


@asynccontextmanager
async def runtime_api(kubeconfig: str, namespace: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        namespace=namespace,
        kubeconfig=kubeconfig,
        public_url="http://gw.test",
        base_resources=SMALL_RESOURCES,
        pod_details_ttl_seconds=1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", timeout=30) as http:
            yield http


async def poll(
    http: httpx.AsyncClient, path: str, key: str, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    """GET `path` as a client polls it (every half second) until `predicate` holds; fail naming `what`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await http.get(path, headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if predicate(body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last: {body}")
        await asyncio.sleep(0.5)


async def test_failing_sandboxes_show_why(kubeconfig: str, namespace: str, agent_server_image: str) -> None:
    code, out, _ = cli("keys", "--kubeconfig", kubeconfig, "-n", namespace, "create", "visible")
    assert code == 0
    key = out.strip()
    headers = {"X-API-Key": key}
    with operator_in_thread(kubeconfig, namespace):
        async with runtime_api(kubeconfig, namespace) as http:
            missing = await http.post(
                "/start",
                json={"image": "kubehands/no-such-image:0", "session_id": "missing", "image_pull_policy": "Never"},
                headers=headers,
            )
            crashing = await http.post(
                "/start",
                json={
                    "image": agent_server_image,
                    "session_id": "crashing",
                    "image_pull_policy": "Never",
                    "command": "echo visible-line-1; echo visible-line-2 >&2; exit 3",  # run by /bin/sh -c
                },
                headers=headers,
            )
            assert missing.status_code == crashing.status_code == 200, (missing.text, crashing.text)
            missing_id, crashing_id = missing.json()["runtime_id"], crashing.json()["runtime_id"]

            def pull_refused(runtime: dict[str, Any]) -> bool:
                reasons = [c["reason"] for c in runtime["container_statuses"]]
                events = [(e["object"], e["reason"]) for e in runtime["events"]]
                return "ErrImageNeverPull" in reasons and (f"Pod/{missing_id}", "ErrImageNeverPull") in events

            runtime = await poll(http, f"/runtime/{missing_id}", key, pull_refused, 120, "the pull refusal")
            sandbox = runtime["container_statuses"][-1]
            assert sandbox["name"] == "sandbox" and sandbox["state"] == "waiting" and sandbox["restart_count"] == 0
            assert sandbox["image"].endswith("kubehands/no-such-image:0")
            event = next(e for e in runtime["events"] if e["reason"] == "ErrImageNeverPull")
            assert event["type"] == "Warning" and "no-such-image" in event["message"] and event["time"]
            assert runtime["pod_logs"] == ""  # the container never ran: no log to read

            def crashed(runtime: dict[str, Any]) -> bool:
                sandbox = next((c for c in runtime["container_statuses"] if c["name"] == "sandbox"), None)
                terminated = sandbox if sandbox and sandbox["state"] == "terminated" else None
                ended = sandbox and (sandbox["last_termination"] or terminated)
                return bool(
                    runtime["status"] == "error"
                    and sandbox
                    and sandbox["restart_count"] >= 1
                    and ended
                    and ended["exit_code"] == 3
                    and "visible-line-1" in runtime["pod_logs"]
                    # the kubelet posts its back-off event after the restart: a later fetch (TTL) brings it
                    and any(e["reason"] == "BackOff" and e["object"] == f"Pod/{crashing_id}" for e in runtime["events"])
                )

            runtime = await poll(
                http, "/sessions/crashing", key, crashed, 180, "the crash, its exit code, log and back-off event"
            )
            assert "visible-line-2" in runtime["pod_logs"]  # stderr too
            assert runtime["pod_status"] == "crashloopbackoff" and runtime["restart_count"] >= 1
            sandbox = next(c for c in runtime["container_statuses"] if c["name"] == "sandbox")
            assert (sandbox["last_termination"] or sandbox)["reason"] == "Error"

            # The administrator's view of the same sandbox, by session id.
            admin = ["sandboxes", "--kubeconfig", kubeconfig, "-n", namespace]
            code, out, err = cli(*admin, "logs", "crashing", "--tail", "5")
            assert code == 0 and "visible-line-1" in out and "visible-line-2" in out, err
            code, out, err = cli(*admin, "get", crashing_id)
            assert code == 0, err
            assert "Status: error" in out and "exit code 3" in out and "BackOff" in out
            code, out, err = cli(*admin, "logs", missing_id)
            assert code == 1 and out == "" and "is waiting to start" in err and err.count("\n") == 1
            code, out, _ = cli(*admin, "list", "--key", "visible")
            assert code == 0 and "localhost" in out  # the node column, from the pod
