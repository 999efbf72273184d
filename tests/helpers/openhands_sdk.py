"""Run the OpenHands SDK's APIRemoteWorkspace, unchanged, in its own virtualenv against a gateway.

openhands-workspace 1.58.2 asserts `httpx.Client(base_url=url).base_url == url`, which fails for any URL with a
path (httpx appends "/"): the gateway must be in port mode (what `make run` uses) or subdomain mode (which needs
wildcard DNS, or the gateway as the client's HTTP proxy: it routes by Host, docs/gateway.md#subdomain-mode).
"""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# start, command, upload/download, pause/resume with the file intact, stop (cleanup)
FLOW = r"""
import pathlib, sys, tempfile
from openhands.workspace import APIRemoteWorkspace

url, key, image, session, pull = sys.argv[1:6]
pull_policy = {} if pull == "default" else {"image_pull_policy": pull}  # "default": the SDK's own (IfNotPresent)
ws = APIRemoteWorkspace(
    runtime_api_url=url, runtime_api_key=key, server_image=image, **pull_policy,
    session_id=session, init_timeout=60, startup_wait_timeout=240, api_timeout=120,
)
try:
    result = ws.execute_command("echo hello-$(id -u)")
    assert result.exit_code == 0 and result.stdout.strip() == "hello-10001", result
    tmp = pathlib.Path(tempfile.mkdtemp())
    (tmp / "up.txt").write_text("payload " * 10000)
    assert ws.file_upload(tmp / "up.txt", "/workspace/up.txt").success
    assert ws.file_download("/workspace/up.txt", tmp / "down.txt").success
    assert (tmp / "down.txt").read_text() == (tmp / "up.txt").read_text()
    ws.pause()
    ws.resume()
    result = ws.execute_command("wc -c < /workspace/up.txt")
    assert result.exit_code == 0 and result.stdout.strip() == str(len("payload " * 10000)), result
    print("SDK-JOURNEY-OK")
finally:
    ws.cleanup()
"""

def sdk_python() -> str:
    made = subprocess.run([str(ROOT / "hack" / "client-venvs.sh"), "sdk"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-4000:]
    return made.stdout.strip().splitlines()[-1]


def sdk_command(
    python: str, api_url: str, key: str, image: str, session: str, image_pull_policy: str | None = "Never"
) -> list[str]:
    """The FLOW's command line; `image_pull_policy` None leaves the SDK's default (as the README's example does)."""
    return [python, "-c", FLOW, api_url, key, image, session, image_pull_policy or "default"]


def sdk_env(tmp_path: Path, proxy: str | None = None) -> dict[str, str]:
    """Environment for the client: no outbound fetches, a TMPDIR of its own, and no proxy but `proxy` (for every
    URL, as HTTP_PROXY/HTTPS_PROXY/ALL_PROXY, which httpx honours)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    tmp = tmp_path / "sdk-tmp"
    tmp.mkdir(exist_ok=True)
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENHANDS_SUPPRESS_BANNER": "1", "TMPDIR": str(tmp)}
    if proxy:
        env |= {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "ALL_PROXY": proxy}
    return env


def assert_flow_passed(returncode: int, output: str) -> None:
    assert returncode == 0 and "SDK-JOURNEY-OK" in output, output[-6000:]
