"""Gateway + operator + the real agent-server image: a sandbox's whole life through the runtime API
and the router (HTTP and WebSocket, all three URL modes), with pause, wake-on-request and stop."""

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, redirect_stdout
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from kubehands.api.cli.gateway import listening_sockets, server_limits, uvicorn_options
from kubehands.api.main import create_app
from kubehands.api.settings import Settings
from kubehands.cli import main as kubehands_main
from kubehands.crd import constants
from kubehands.spec import pools, urls
from kubehands.spec.constants import ANNOTATION_SESSION_ID
from tests.helpers import openhands_sdk, warm_pool
from tests.helpers.processes import free_port, free_port_range
from tests.helpers.run_defaults import make_run_settings
from tests.helpers.sandbox import SMALL_RESOURCES, operator_in_thread

pytestmark = pytest.mark.node


@asynccontextmanager
async def served_gateway(settings: Settings, port: int) -> AsyncIterator[Any]:
    """The gateway app under uvicorn on 127.0.0.1:`port` with `kubehands gateway`'s options (its protocol relays
    the WebSockets), and its real lifespan (watch caches)."""
    app = create_app(settings)
    options = uvicorn_options("127.0.0.1", port, "warning", limits=server_limits(settings))
    server = uvicorn.Server(uvicorn.Config(app, **options))
    sockets = None
    if settings.routing_mode == "port":  # as `kubehands gateway` serves it: the sandbox ports too
        sockets = listening_sockets("127.0.0.1", [port, *urls.sandbox_listen_addresses(settings, "127.0.0.1")])
    task = asyncio.create_task(server.serve(sockets=sockets))
    deadline = asyncio.get_running_loop().time() + 60
    while not server.started:
        if task.done():
            task.result()
        assert asyncio.get_running_loop().time() < deadline, "the gateway did not start"
        await asyncio.sleep(0.05)
    try:
        yield app.state.gateway
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def until(predicate: Callable[[], Any], reflector: Any, timeout: float, describe: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := predicate()):
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout}s waiting for {describe}")
        await reflector.wait_changed(min(remaining, 1.0))
    return result


def create_key(kubeconfig: str, namespace: str, name: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert kubehands_main(["keys", "--kubeconfig", kubeconfig, "-n", namespace, "create", name]) == 0
    return out.getvalue().strip()


async def test_sandbox_journey_through_the_gateway(
    kubeconfig: str, namespace: str, agent_server_image: str
) -> None:
    key = create_key(kubeconfig, namespace, "journey")
    path_port, sub_port, port_port = free_port(), free_port(), free_port()
    common = {
        "namespace": namespace,
        "kubeconfig": kubeconfig,
        "base_resources": SMALL_RESOURCES,
        "activity_interval_seconds": 1.0,
    }
    path_settings = Settings(public_url=f"http://127.0.0.1:{path_port}", **common)
    sub_settings = Settings(routing_mode="subdomain", domain="sbx.test", subdomain_scheme="http", **common)
    port_settings = Settings(
        routing_mode="port",
        public_url=f"http://127.0.0.1:{port_port}",
        sandbox_ports=free_port_range(40),
        **common,
    )
    api = {"X-API-Key": key}
    with operator_in_thread(kubeconfig, namespace):
        async with (
            served_gateway(path_settings, path_port) as gateway,
            served_gateway(sub_settings, sub_port) as replica,
            served_gateway(port_settings, port_port) as port_replica,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{path_port}", timeout=60) as http,
        ):
            started = await http.post(
                "/start",
                json={
                    "image": agent_server_image,
                    "session_id": "Journey-1",
                    "image_pull_policy": "Never",
                    "working_dir": "/",
                    "environment": {"LOG_JSON": "true"},
                    "resource_factor": 1,
                },
                headers=api,
            )
            assert started.status_code == 200, started.text
            runtime = started.json()
            rid, url, session_key = runtime["runtime_id"], runtime["url"], runtime["session_api_key"]
            assert url == f"http://127.0.0.1:{path_port}/{rid}"

            # status: running only once /alive answered through the router's upstream
            def running() -> bool:
                sandbox = gateway.caches.sandbox(rid)
                return sandbox is not None and gateway.sandboxes.to_runtime(sandbox).status == "running"

            await until(running, gateway.caches.sandboxes, 240, "the sandbox to report running")
            session = (await http.get("/sessions/Journey-1", headers=api)).json()
            assert (session["status"], session["pod_status"]) == ("running", "ready")

            # HTTP through the router, path mode
            assert (await http.get(f"{url}/alive")).json() == {"status": "ok"}
            assert (await http.get(f"{url}/health")).status_code == 200
            command = {"command": "echo kept > /workspace/journey.txt && cat /workspace/journey.txt"}
            ran = await http.post(
                f"{url}/api/bash/execute_bash_command",
                json=command,
                headers={"X-Session-API-Key": session_key, **api},
            )
            assert ran.status_code == 200, ran.text
            assert ran.json()["exit_code"] == 0 and ran.json()["stdout"].strip() == "kept"
            refused = await http.post(f"{url}/api/bash/execute_bash_command", json=command)
            assert refused.status_code == 401

            # WebSocket through the router to the agent server's bash event socket
            ws_url = url.replace("http://", "ws://") + "/sockets/bash-events"
            async with connect(ws_url) as ws:
                await ws.send(json.dumps({"type": "auth", "session_api_key": session_key}))
                await http.post(
                    f"{url}/api/bash/start_bash_command",
                    json={"command": "echo over-ws"},
                    headers={"X-Session-API-Key": session_key},
                )
                first = await asyncio.wait_for(ws.recv(), 60)
                assert isinstance(first, str) and json.loads(first)
            async with connect(ws_url) as ws:
                await ws.send(json.dumps({"type": "auth", "session_api_key": "wrong"}))
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 30)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001

            # the other replica, subdomain mode: routed by Host
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sub_port}", timeout=60) as sub:
                await until(
                    lambda: replica.alive.is_alive(replica.caches.sandbox(rid)),
                    replica.caches.sandboxes,
                    60,
                    "the replica's /alive check",
                )
                alive = await sub.get("/alive", headers={"Host": f"{rid}.sbx.test"})
                assert alive.json() == {"status": "ok"}
                sub_session = (await sub.get("/sessions/Journey-1", headers=api)).json()
                assert sub_session["url"] == f"http://{rid}.sbx.test"

            # the third replica, port mode: the sandbox is a gateway port of its own, HTTP and WebSocket
            await until(
                lambda: port_replica.alive.is_alive(port_replica.caches.sandbox(rid)),
                port_replica.caches.sandboxes,
                60,
                "the port-mode replica's /alive check",
            )
            port_url = port_replica.sandboxes.to_runtime(port_replica.caches.sandbox(rid)).url
            assert port_url == urls.sandbox_url(port_settings, rid) and httpx.URL(port_url).path in ("", "/")
            assert (await http.get(f"{port_url}/alive")).json() == {"status": "ok"}
            async with connect(port_url.replace("http://", "ws://") + "/sockets/bash-events") as ws:
                await ws.send(json.dumps({"type": "auth", "session_api_key": session_key}))
                await http.post(
                    f"{port_url}/api/bash/start_bash_command",
                    json={"command": "echo over-port-ws"},
                    headers={"X-Session-API-Key": session_key},
                )
                assert json.loads(await asyncio.wait_for(ws.recv(), 60))

            # activity reached the Sandbox status (throttled writes by the router)
            await until(
                lambda: (gateway.caches.sandbox(rid) or {}).get("status", {}).get("lastActivityTime"),
                gateway.caches.sandboxes,
                30,
                "lastActivityTime",
            )

            # pause: the pod goes, the workspace stays; a request wakes it (wake_on_request is on)
            paused = await http.post("/pause", json={"runtime_id": rid}, headers=api)
            assert paused.json()["status"] == "paused"
            await until(
                lambda: (gateway.caches.sandbox(rid) or {}).get("status", {}).get("phase") == "Paused",
                gateway.caches.sandboxes,
                120,
                "the operator to pause the sandbox",
            )
            woken = await http.post(
                f"{url}/api/bash/execute_bash_command",
                json={"command": "cat /workspace/journey.txt"},
                headers={"X-Session-API-Key": session_key},
                timeout=200,
            )
            assert woken.status_code == 200, woken.text
            assert woken.json()["stdout"].strip() == "kept"
            assert (await http.get("/sessions/Journey-1", headers=api)).json()[
                "session_api_key"
            ] == session_key

            # stop: gone for good
            assert (await http.post("/stop", json={"runtime_id": rid}, headers=api)).status_code == 200
            await until(
                lambda: gateway.caches.sandbox(rid) is None,
                gateway.caches.sandboxes,
                120,
                "the Sandbox to be deleted",
            )
            assert (await http.get("/sessions/Journey-1", headers=api)).status_code == 404
            assert (await http.get(f"{url}/alive")).status_code == 404


@pytest.fixture(scope="session")
def sdk_python() -> str:
    return openhands_sdk.sdk_python()


SDK_POOL = "sdk"
SDK_SESSION = "sdk-journey"


@pytest.mark.timeout(900)
async def test_sdk_api_remote_workspace(
    kubeconfig: str, namespace: str, agent_server_image: str, sdk_python: str, tmp_path: Any
) -> None:
    """The SDK's APIRemoteWorkspace, unchanged, in its own venv: start, command, upload/download,
    pause/resume with the file intact, and stop (cleanup).

    A warm pool whose template matches exactly the /start the SDK sends (hack/pool-manifest.py, with this
    gateway's Settings) is ready before the client starts: its sandbox is claimed from the pool.

    The gateway has `make run`'s settings (hack/run.env: port mode), and the client nothing but the runtime API's
    URL and key: openhands-workspace 1.58.2 asserts `httpx.Client(base_url=url).base_url == url`, which fails
    for any URL with a path (path mode), and subdomain mode needs wildcard DNS."""

    key = create_key(kubeconfig, namespace, "sdk")
    port = free_port()
    settings = Settings(
        namespace=namespace,
        kubeconfig=kubeconfig,
        base_resources=SMALL_RESOURCES,
        public_url=f"http://127.0.0.1:{port}",
        **make_run_settings(),  # type: ignore[arg-type]
    )
    assert settings.routing_mode == "port"
    env = openhands_sdk.sdk_env(tmp_path)
    body = warm_pool.sdk_start_body(agent_server_image, SDK_SESSION)
    template = warm_pool.declare_pool(kubeconfig, SDK_POOL, 1, body, settings)["spec"]["template"]
    with operator_in_thread(kubeconfig, namespace):
        async with served_gateway(settings, port) as gateway:
            # The first version of each Sandbox of the SDK's session the gateway's cache sees (the claim's, for a
            # warm start), and when its init was done: the client deletes it at cleanup, before it exits.
            began = asyncio.get_running_loop().time()
            seen: dict[str, dict[str, Any]] = {}
            init_done: dict[str, float] = {}

            def record(kind: str, sandbox: dict[str, Any]) -> None:
                metadata = sandbox["metadata"]
                annotations = metadata.get("annotations") or {}
                if annotations.get(ANNOTATION_SESSION_ID) != SDK_SESSION:
                    return
                seen.setdefault(metadata["name"], sandbox)
                if annotations.get(constants.ANNOTATION_INIT) == constants.INIT_READY:
                    init_done.setdefault(metadata["name"], asyncio.get_running_loop().time() - began)

            gateway.caches.sandboxes.add_listener(record)

            def warm_members() -> list[str]:
                pool = gateway.caches.pools.items.get(SDK_POOL)
                if pool is None or (pool.get("status") or {}).get("ready") != 1:
                    return []
                return sorted(m["metadata"]["name"] for m in gateway.caches.claimable_members(pool))

            members = await until(warm_members, gateway.caches.sandboxes, 300, "the SDK's pool to have 1 ready member")
            began = asyncio.get_running_loop().time()
            process = await asyncio.create_subprocess_exec(
                *openhands_sdk.sdk_command(
                    sdk_python, f"http://127.0.0.1:{port}", key, agent_server_image, SDK_SESSION
                ),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
            output, _ = await asyncio.wait_for(process.communicate(), 600)
            flow_seconds = asyncio.get_running_loop().time() - began
            text = output.decode(errors="replace")
            openhands_sdk.assert_flow_passed(process.returncode, text)
            # its one sandbox was the pool's member, claimed by the /start
            assert len(seen) == 1, list(seen)
            rid, sandbox = next(iter(seen.items()))
            differs = pools.difference(template, sandbox["spec"])
            assert warm_pool.claimed_from(sandbox) == SDK_POOL, f"cold start; template differs in {differs}"
            assert [rid] == members, (rid, members)
            # cleanup() stopped it (the pool's new member stays)
            await until(
                lambda: not [s for s in gateway.caches.sandboxes.items.values() if not warm_pool.is_member(s)],
                gateway.caches.sandboxes,
                120,
                "the SDK's sandbox to be deleted",
            )
    # (after the operator: its runner captures this process's stdout while it runs)
    print(
        f"SDK sandbox {rid} claimed from pool {SDK_POOL!r}: init done {init_done.get(rid, -1):.2f}s "
        f"after the client started; whole flow {flow_seconds:.2f}s"
    )
