"""Run the OpenHands SDK's APIRemoteWorkspace, unchanged, in its own virtualenv against a gateway.

The gateway must be in subdomain mode: openhands-workspace 1.58.2 asserts
`httpx.Client(base_url=url).base_url == url`, which fails for any URL with a path (httpx appends "/").
A `sitecustomize.py` gives the client process alone a wildcard DNS entry for the sandbox hosts.
"""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# start, command, upload/download, pause/resume with the file intact, stop (cleanup)
FLOW = r"""
import pathlib, sys, tempfile
from openhands.workspace import APIRemoteWorkspace

url, key, image, session = sys.argv[1:5]
ws = APIRemoteWorkspace(
    runtime_api_url=url, runtime_api_key=key, server_image=image, image_pull_policy="Never",
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

WILDCARD_DNS = r"""
import socket
_real = socket.getaddrinfo
def _getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith({suffix!r}):
        host = {address!r}
    return _real(host, *args, **kwargs)
socket.getaddrinfo = _getaddrinfo
"""


def sdk_python() -> str:
    made = subprocess.run([str(ROOT / "hack" / "client-venvs.sh"), "sdk"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-4000:]
    return made.stdout.strip().splitlines()[-1]


def sdk_command(python: str, api_url: str, key: str, image: str, session: str) -> list[str]:
    return [python, "-c", FLOW, api_url, key, image, session]


def sdk_env(tmp_path: Path, domain_suffix: str, address: str) -> dict[str, str]:
    """Environment for the client: `*{domain_suffix}` resolves to `address`, no proxies, no outbound fetches,
    and a TMPDIR in `tmp_path` (the SDK creates browser-use-downloads-* folders there, the flow its files)."""
    (tmp_path / "sitecustomize.py").write_text(WILDCARD_DNS.format(suffix=domain_suffix, address=address))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return env | {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "OPENHANDS_SUPPRESS_BANNER": "1",
        "PYTHONPATH": str(tmp_path),
        "TMPDIR": str(tmp_path / "tmp"),
    }


def assert_flow_passed(returncode: int, output: str) -> None:
    assert returncode == 0 and "SDK-JOURNEY-OK" in output, output[-6000:]
