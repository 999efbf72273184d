"""The gateway's POST /api/init against the real agent server (openhands-agent-server from PyPI, in the
client venv), booted dormant on loopback exactly as a pool member boots: OH_DEFERRED_INIT and an init key."""

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubehands.api.pools import init as pools
from kubehands.api.settings import Settings
from tests.helpers import openhands_sdk
from tests.helpers.api import offline_gateway
from tests.helpers.processes import free_port
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.node

INIT_KEY = "member-init-key"
SESSION_KEY = "the-session-key"


@pytest.fixture
async def dormant(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A dormant agent server: its base URL, and a member Sandbox whose status points at it."""
    port = free_port()
    server = Path(openhands_sdk.sdk_python()).parent / "agent-server"
    (tmp_path / "tmp").mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path / "tmp"),
        "OH_DEFERRED_INIT": "true",
        "OH_SECRET_KEY": INIT_KEY,
        "OH_SESSION_API_KEYS_0": INIT_KEY,
        "OH_CONVERSATIONS_PATH": str(tmp_path / "conversations"),
        "OH_BASH_EVENTS_DIR": str(tmp_path / "bash_events"),
        "OH_ENABLE_VSCODE": "false",
        "OH_ENABLE_VNC": "false",
        # As the image sets it: otherwise litellm fetches its cost map from GitHub at import (traffic that must not
        # leave this machine), and a failed fetch sometimes kills the import (a circular import in its log filter).
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    log = (tmp_path / "agent-server.log").open("wb")
    # browser-use (tool preload) makes /tmp/browser-use-downloads-* whatever TMPDIR says: the server gets a mount
    # namespace of its own with a private /tmp, which goes with it, so the host's /tmp stays as it was.
    private_tmp = ["unshare", "--mount", "--propagation", "private"]
    private_tmp += ["sh", "-c", 'mount -t tmpfs tmpfs /tmp && exec "$@"', "sh"]
    process = subprocess.Popen(
        [*private_tmp, str(server), "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"

    def alive() -> bool:
        assert process.poll() is None, (tmp_path / "agent-server.log").read_text()[-3000:]
        try:
            return httpx.get(f"{base}/alive", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(alive, 120, "the dormant agent server to answer /alive")
        member = {
            "metadata": {"name": "kh-0123456789ab"},
            "spec": {"ports": [{"name": "agent", "containerPort": port}]},
            "status": {"podIP": "127.0.0.1"},
        }
        yield base, member
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()


@pytest.mark.timeout(300)
async def test_init_takes_the_init_key_once_and_hands_the_server_to_the_session(
    dormant: tuple[str, dict[str, Any]],
) -> None:
    base, member = dormant
    gateway = offline_gateway(Settings())
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            assert (await http.get("/api/init")).json()["state"] == "dormant"
            body = pools.init_request(SESSION_KEY, {"KH_INIT_PROBE": "yes"})

            refused = await gateway.sandboxes._post_init(member, member["status"]["podIP"], "not-the-init-key", body)
            assert refused is not None and refused.startswith("HTTP 401"), refused
            assert (await http.get("/api/init")).json()["state"] == "dormant"

            assert await gateway.sandboxes._post_init(member, member["status"]["podIP"], INIT_KEY, body) is None
            assert (await http.get("/api/init")).json()["state"] == "ready"
            # a pod is initialised once only: the init key died with the dormant state (the server's secret
            # key is now the session's), and even the new key cannot initialise it again
            stale = await gateway.sandboxes._post_init(member, member["status"]["podIP"], INIT_KEY, body)
            assert stale is not None and stale.startswith("HTTP 401"), stale
            again = await gateway.sandboxes._post_init(member, member["status"]["podIP"], SESSION_KEY, body)
            assert again is not None and again.startswith("HTTP 400"), again

            # the session's key now opens the server; the throw-away key it booted with does not
            command = {"command": "echo $KH_INIT_PROBE", "timeout": 30}
            ran = await http.post(
                "/api/bash/execute_bash_command", json=command, headers={"X-Session-API-Key": SESSION_KEY}
            )
            assert ran.status_code == 200, ran.text
            assert ran.json()["stdout"].strip() == "yes"
            old = await http.post(
                "/api/bash/execute_bash_command", json=command, headers={"X-Session-API-Key": INIT_KEY}
            )
            assert old.status_code in (401, 403)
    finally:
        await gateway.http.aclose()
        await gateway.kube.close()
