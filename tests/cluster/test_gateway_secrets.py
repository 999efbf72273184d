"""Keys stay secret, through `kubehands gateway` itself against the real API server, in port mode with a loopback
address per sandbox (`make run`'s settings, hack/run.env):

- a client with a cookie jar that opened sandbox A's VS Code URL (whose first load `?tkn=<key>` sets the
  `vscode-tkn` cookie, the session key, as VS Code does) sends no cookie of A to any port of sandbox B;
- keyed requests with `?tkn=` and `?session_api_key=` (HTTP and WebSocket) leave neither key in the gateway's log,
  served by `kubehands gateway` and by a plain `uvicorn --factory kubehands.api.main:create_app`.

No operator runs here: the test plays it, writing each Sandbox's status as the operator does once its pod is ready,
with the "pod" a VS Code-like upstream on 127.0.0.1 (the pod's IP) that sets the cookie and echoes what it gets.
The real VS Code of the agent-server image sets the same cookie (tests/node: what a sandbox's pod answers)."""

import io
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from kubernetes import client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from kubehands.cli import main as kubehands_main
from kubehands.crd import constants
from tests.helpers.kube import api_client
from tests.helpers.processes import ROOT, GatewayProcess, free_port, free_port_range, stop_process
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.cluster

CRD = {"group": constants.GROUP, "version": constants.VERSION, "plural": constants.PLURAL}
SERVICES = ("agent", "vscode", "work-1", "work-2")


async def _page(request: Request) -> Response:
    """VS Code's behaviour that matters here: the first load with `?tkn=` sets `vscode-tkn` (not HttpOnly, as
    VS Code's); every answer says which cookies came with the request."""
    answer = JSONResponse({"cookie": request.headers.get("cookie"), "host": request.headers.get("host")})
    if "tkn" in request.query_params:
        answer.set_cookie("vscode-tkn", request.query_params["tkn"], path="/", samesite="lax", httponly=False)
    return answer


async def _socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


@pytest.fixture(scope="module")
def upstream_port() -> Iterator[int]:
    """The sandboxes' "pod": a uvicorn server on 127.0.0.1 in a thread of its own."""
    app = Starlette(routes=[WebSocketRoute("/sockets/events/{id}", _socket), Route("/{path:path}", _page)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the upstream to start")
    yield port
    server.should_exit = True
    thread.join(30)


@dataclass
class Sandbox:
    runtime_id: str
    url: str
    key: str

    def service(self, name: str) -> str:
        """The URL of one of its services: the port of the service in its block, on its own host."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{(parts.port or 0) + SERVICES.index(name)}"


def create_key(kubeconfig: str, namespace: str, name: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert kubehands_main(["keys", "--kubeconfig", kubeconfig, "-n", namespace, "create", name]) == 0
    return out.getvalue().strip()


def make_ready(kubeconfig: str, namespace: str, runtime_id: str, port: int) -> None:
    """Do what the operator does once the pod is ready: its ports (all on the upstream here) and its status."""
    with api_client(kubeconfig) as api:
        custom = client.CustomObjectsApi(api)
        ports = [{"name": name, "containerPort": port} for name in SERVICES]
        patched = custom.patch_namespaced_custom_object(
            namespace=namespace, name=runtime_id, body={"spec": {"ports": ports}},
            _content_type="application/merge-patch+json", **CRD,
        )  # fmt: skip
        status = {"phase": "Running", "podStatus": "ready", "podIP": "127.0.0.1", "podName": runtime_id,
                  "observedGeneration": patched["metadata"]["generation"]}  # fmt: skip
        custom.patch_namespaced_custom_object_status(
            namespace=namespace, name=runtime_id, body={"status": status},
            _content_type="application/merge-patch+json", **CRD,
        )  # fmt: skip


def start_ready(gateway_url: str, api_key: str, session: str, kubeconfig: str, namespace: str, port: int) -> Sandbox:
    body = {"image": "kubehands/none:0", "session_id": session, "image_pull_policy": "Never"}
    started = httpx.post(f"{gateway_url}/start", json=body, headers={"X-API-Key": api_key}, timeout=30)
    assert started.status_code == 200, started.text
    runtime = started.json()
    make_ready(kubeconfig, namespace, runtime["runtime_id"], port)

    def answers() -> bool:
        return httpx.get(f"{runtime['url']}/alive", timeout=5).status_code == 200

    wait_for(answers, 60, f"sandbox {runtime['runtime_id']} to be routed to")
    return Sandbox(runtime["runtime_id"], runtime["url"], runtime["session_api_key"])


@dataclass
class PortGateway:
    gateway: GatewayProcess
    api_key: str
    a: Sandbox
    b: Sandbox


@pytest.fixture
def port_gateway(kubeconfig: str, namespace: str, tmp_path: Path, upstream_port: int) -> Iterator[PortGateway]:
    """`kubehands gateway` with make run's settings (hack/run.env) but its own ports and loopback addresses (other
    tests may run beside it), and two sandboxes, A and B, answering."""
    api_key = create_key(kubeconfig, namespace, "secrets")
    ports = free_port_range(8)
    loopback = f"127.{random.randint(2, 250)}.{random.randint(0, 255)}.1"
    gateway = GatewayProcess(
        kubeconfig,
        namespace,
        free_port(),
        tmp_path / "gateway.log",
        KUBEHANDS_ROUTING_MODE="port",
        KUBEHANDS_SANDBOX_PORTS=ports,
        KUBEHANDS_SANDBOX_LOOPBACK=loopback,
        KUBEHANDS_BASE_RESOURCES='{"requests": {"cpu": "1m"}}',
    )
    gateway.start()
    try:
        a = start_ready(gateway.url, api_key, "a", kubeconfig, namespace, upstream_port)
        b = start_ready(gateway.url, api_key, "b", kubeconfig, namespace, upstream_port)
        yield PortGateway(gateway, api_key, a, b)
    finally:
        gateway.stop()


def test_a_cookie_of_sandbox_a_never_reaches_sandbox_b(port_gateway: PortGateway) -> None:
    a, b = port_gateway.a, port_gateway.b
    hosts = {urlsplit(s.url).hostname for s in (a, b)}
    assert len(hosts) == 2 and all(h and h.startswith("127.") and h != "127.0.0.1" for h in hosts), hosts

    with httpx.Client(timeout=10) as browser:  # one cookie jar, as a browser has
        first_load = browser.get(f"{a.service('vscode')}/?tkn={a.key}")
        assert first_load.status_code == 200, first_load.text
        assert [(c.name, c.value, c.domain) for c in browser.cookies.jar] == [
            ("vscode-tkn", a.key, urlsplit(a.url).hostname)
        ]
        # A's own ports get it back: the jar does send cookies
        for service in SERVICES:
            assert browser.get(f"{a.service(service)}/again").json()["cookie"] == f"vscode-tkn={a.key}", service
        # B's ports, every one of them, get no cookie at all
        for service in SERVICES:
            seen = browser.get(f"{b.service(service)}/").json()
            assert seen == {"cookie": None, "host": urlsplit(b.service(service)).netloc}, service


def keyed_requests(base: str, key: str, relays_websockets: bool = True) -> None:
    """What clients send with the session key in the query: VS Code's first load, a browser WebSocket (which
    only `kubehands gateway` relays: another server gets 501, docs/gateway.md#connection-bounds)."""
    assert httpx.get(f"{base}/?tkn={key}&folder=/workspace", timeout=10).status_code == 200
    ws_base = "ws" + base.removeprefix("http")
    if not relays_websockets:
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{ws_base}/sockets/events/c1?session_api_key={key}&resend_all=true")
        assert refused.value.response.status_code == 501
        return
    with connect(f"{ws_base}/sockets/events/c1?session_api_key={key}&resend_all=true") as ws:
        assert ws.recv(timeout=10) == "hello"


def test_keys_in_queries_never_reach_the_gateway_log(port_gateway: PortGateway) -> None:
    a, api_key = port_gateway.a, port_gateway.api_key
    keyed_requests(a.service("vscode"), a.key)
    keyed_requests(a.url, a.key)
    listed = httpx.get(f"{port_gateway.gateway.url}/sessions/batch?ids=a", headers={"X-API-Key": api_key}, timeout=10)
    assert listed.status_code == 200 and listed.json()[0]["session_api_key"] == a.key

    port_gateway.gateway.stop()  # its log complete
    log = port_gateway.gateway.log_path.read_text()
    for secret in (a.key, port_gateway.b.key, api_key):
        assert secret not in log
    # the requests were logged, their query values redacted
    assert "/?tkn=[redacted]&folder=[redacted]" in log, log[-3000:]
    assert '"GET /sockets/events/c1?session_api_key=[redacted]&resend_all=[redacted] HTTP/1.1" 101' in log, log[-3000:]


def test_plain_uvicorn_logs_no_key_either(
    kubeconfig: str, namespace: str, tmp_path: Path, upstream_port: int
) -> None:
    """`uvicorn --factory kubehands.api.main:create_app` (path mode): the redaction is the app's own."""
    api_key = create_key(kubeconfig, namespace, "plain")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"KUBEHANDS_KUBECONFIG": kubeconfig, "KUBEHANDS_NAMESPACE": namespace, "KUBEHANDS_PUBLIC_URL": url,
           "KUBEHANDS_BASE_RESOURCES": '{"requests": {"cpu": "1m"}}', "TMPDIR": str(tmp_path)}  # fmt: skip
    log_path = tmp_path / "uvicorn.log"
    args = [sys.executable, "-m", "uvicorn", "--factory", "kubehands.api.main:create_app", "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:

        def healthy() -> bool:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "uvicorn's gateway to report healthy")
        sandbox = start_ready(url, api_key, "plain", kubeconfig, namespace, upstream_port)
        assert sandbox.url == f"{url}/{sandbox.runtime_id}"
        keyed_requests(sandbox.url, sandbox.key, relays_websockets=False)
    finally:
        stop_process(process)
    text = log_path.read_text()
    assert sandbox.key not in text and api_key not in text
    assert f"/{sandbox.runtime_id}/?tkn=[redacted]&folder=[redacted]" in text, text[-3000:]
    assert f"/{sandbox.runtime_id}/sockets/events/c1?session_api_key=[redacted]" in text, text[-3000:]
