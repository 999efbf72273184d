"""`make run`'s warm pool for the SDK serves the SDK as the README uses it (docs/pools.md "`make run`"): the pool is
hack/run.sh's own declaration (`sdk_start_body`, through hack/pool-manifest.py with make run's gateway settings), and
the SDK's `APIRemoteWorkspace`, unchanged and with its defaults (no `image_pull_policy`, the default
`runtime_class`), gets its member and a usable workspace.

Its exact /start, sent directly, is answered `running` with its URL and key (no poll needed), and reads right after
it agree; a /start no pool can serve starts cold, and its runtime object and the gateway's metrics say why.
(The app server's claim of make run's other pool: tests/node/test_openhands_app.py.)"""

import asyncio
import time
from typing import Any

import httpx
import pytest

from kubehands.api.observe import metrics
from kubehands.api.settings import Settings
from kubehands.spec import pools
from tests.helpers import openhands_sdk, warm_pool
from tests.helpers.processes import free_port
from tests.helpers.run_defaults import make_run_settings
from tests.helpers.sandbox import SMALL_RESOURCES, operator_in_thread
from tests.node.test_gateway_journey import create_key, served_gateway, until

pytestmark = pytest.mark.node

POOL = "openhands-sdk"  # make run's name for it


def mismatches(field: str) -> float:
    return metrics.POOL_MISMATCHES.labels(field)._value.get()  # this process's gateway


@pytest.mark.timeout(900)
async def test_make_run_sdk_pool_serves_the_sdk_with_its_defaults(
    kubeconfig: str, namespace: str, agent_server_image: str, tmp_path: Any
) -> None:
    key = create_key(kubeconfig, namespace, "sdk-defaults")
    api = {"X-API-Key": key}
    port = free_port()
    settings = Settings(
        namespace=namespace,
        kubeconfig=kubeconfig,
        base_resources=SMALL_RESOURCES,  # the test node's room; a pool is made for the settings it is given
        public_url=f"http://127.0.0.1:{port}",
        **make_run_settings(),  # type: ignore[arg-type]
    )
    body = warm_pool.run_sh_body("sdk_start_body", agent_server_image)  # make run's pool, as hack/run.sh makes it
    template = warm_pool.declare_pool(kubeconfig, POOL, 1, body, settings)["spec"]["template"]
    with operator_in_thread(kubeconfig, namespace):
        async with served_gateway(settings, port) as gateway:

            def ready_members() -> list[str]:
                pool = gateway.caches.pools.items.get(POOL)
                if pool is None or (pool.get("status") or {}).get("ready") != 1:
                    return []
                return sorted(m["metadata"]["name"] for m in gateway.caches.claimable_members(pool))

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=api, timeout=60) as http:
                # 1. The SDK's exact /start: claimed, and answered running with what the client needs.
                members = await until(ready_members, gateway.caches.sandboxes, 300, "the pool's member")
                began = time.monotonic()
                started = await http.post("/start", json=body | {"session_id": "sdk-direct"})
                answered_ms = (time.monotonic() - began) * 1000
                assert started.status_code == 200, started.text
                runtime = started.json()
                assert runtime["runtime_id"] == members[0], (runtime, members)
                assert (runtime["status"], runtime["pod_status"], runtime["start"]) == ("running", "ready", "warm")
                assert runtime["url"] and runtime["session_api_key"]
                again = (await http.get("/sessions/sdk-direct")).json()
                assert (again["status"], again["pod_status"], again["start"]) == ("running", "ready", "warm")
                # the URL serves the agent server through the router at once (what the SDK checks, and more)
                health = await http.get(f"{runtime['url']}/health")
                assert health.status_code == 200, health.text
                info = await http.get(
                    f"{runtime['url']}/api/conversations/search",
                    headers={"X-Session-API-Key": runtime["session_api_key"]},
                )
                assert info.status_code == 200, info.text
                print(f"the SDK's /start answered running in {answered_ms:.0f} ms")
                assert (await http.post("/stop", json={"runtime_id": runtime["runtime_id"]})).status_code == 200

                # 2. A /start no pool serves (another working dir) starts cold, and says why.
                before = mismatches("workingDir")
                cold = await http.post("/start", json=body | {"session_id": "sdk-cold", "working_dir": "/tmp"})
                assert cold.status_code == 200, cold.text
                assert (cold.json()["start"], cold.json()["cold_start_reason"]) == ("cold", "mismatch: workingDir")
                assert cold.json()["status"] == "starting"
                read = (await http.get("/sessions/sdk-cold")).json()
                assert (read["start"], read["cold_start_reason"]) == ("cold", "mismatch: workingDir")
                assert mismatches("workingDir") == before + 1
                assert (await http.post("/stop", json={"runtime_id": cold.json()["runtime_id"]})).status_code == 200

            # 3. The SDK itself, as the README shows it (only server_image set): the refilled member, a usable
            # workspace (command, upload, download, pause/resume, cleanup).
            members = await until(ready_members, gateway.caches.sandboxes, 300, "the pool's refilled member")
            seen: dict[str, dict[str, Any]] = {}

            def record(kind: str, sandbox: dict[str, Any]) -> None:
                if sandbox.get("spec", {}).get("sessionID") == "sdk-readme":
                    seen.setdefault(sandbox["metadata"]["name"], sandbox)

            gateway.caches.sandboxes.add_listener(record)
            process = await asyncio.create_subprocess_exec(
                *openhands_sdk.sdk_command(
                    openhands_sdk.sdk_python(), f"http://127.0.0.1:{port}", key, agent_server_image, "sdk-readme",
                    image_pull_policy=None,
                ),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=openhands_sdk.sdk_env(tmp_path),
            )
            output, _ = await asyncio.wait_for(process.communicate(), 600)
            openhands_sdk.assert_flow_passed(process.returncode, output.decode(errors="replace"))
            assert len(seen) == 1, list(seen)
            rid, sandbox = next(iter(seen.items()))
            differs = pools.difference(template, sandbox["spec"])
            assert warm_pool.claimed_from(sandbox) == POOL, f"cold start; template differs in {differs}"
            assert [rid] == members, (rid, members)
