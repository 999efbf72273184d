"""Port mode against the real API server, through `kubehands gateway` itself (which binds the sandbox ports):
each sandbox's URL is its own gateway port, the control API stays on its port, and a full range refuses cleanly.
No operator runs here, so sandboxes stay `starting`: what a sandbox's pod answers is covered in the node tier
(tests/node/test_gateway_journey.py, test_openhands_app.py)."""

import io
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from kubehands.cli import main as kubehands_main
from tests.helpers.processes import GatewayProcess, free_port, free_port_range

pytestmark = pytest.mark.cluster


@pytest.fixture
def port_gateway(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[tuple[GatewayProcess, str, range]]:
    """(gateway, API key, its sandbox ports): room for two sandboxes."""
    out = io.StringIO()
    with redirect_stdout(out):
        assert kubehands_main(["keys", "--kubeconfig", kubeconfig, "-n", namespace, "create", "ports"]) == 0
    ports = free_port_range(8)
    first, last = (int(p) for p in ports.split("-"))
    gateway = GatewayProcess(
        kubeconfig,
        namespace,
        free_port(),
        tmp_path / "gateway.log",
        KUBEHANDS_ROUTING_MODE="port",
        KUBEHANDS_SANDBOX_PORTS=ports,
        KUBEHANDS_BASE_RESOURCES='{"requests": {"cpu": "1m"}}',
    )
    gateway.start()
    try:
        yield gateway, out.getvalue().strip(), range(first, last + 1)
    finally:
        gateway.stop()


def start(gateway: GatewayProcess, key: str, session: str) -> httpx.Response:
    body = {"image": "kubehands/none:0", "session_id": session, "image_pull_policy": "Never"}
    return httpx.post(f"{gateway.url}/start", json=body, headers={"X-API-Key": key}, timeout=30)


def test_each_sandbox_gets_its_own_port_and_the_range_bounds_them(
    port_gateway: tuple[GatewayProcess, str, range],
) -> None:
    gateway, key, ports = port_gateway
    api = {"X-API-Key": key}
    first = start(gateway, key, "one")
    assert first.status_code == 200, first.text
    runtime = first.json()
    url = urlsplit(runtime["url"])
    assert (url.scheme, url.hostname, url.path) == ("http", "127.0.0.1", "")
    assert url.port in ports and (url.port - ports.start) % 4 == 0
    assert runtime["work_hosts"] == {
        f"http://127.0.0.1:{url.port + 2}": 12000,
        f"http://127.0.0.1:{url.port + 3}": 12001,
    }
    # the sandbox's port is routed to the sandbox, never to the control API: it is starting, and an anonymous
    # request neither wakes it nor waits for it
    starting = httpx.get(f"{runtime['url']}/alive", timeout=10)
    assert starting.status_code == 503 and "starting" in starting.json()["detail"]
    assert httpx.get(f"{runtime['url']}/list", headers=api, timeout=10).status_code == 503
    # the control API is on its own port only
    assert httpx.get(f"{gateway.url}/list", headers=api, timeout=10).status_code == 200

    second = start(gateway, key, "two")
    assert second.status_code == 200, second.text
    other = urlsplit(second.json()["url"]).port
    assert other in ports and other != url.port

    # two blocks, both taken (a paused sandbox would keep its block too): a clear 503, nothing created
    full = start(gateway, key, "three")
    assert full.status_code == 503, full.text
    assert "port blocks" in full.json()["detail"] and "KUBEHANDS_SANDBOX_PORTS" in full.json()["detail"]
    assert {r["session_id"] for r in httpx.get(f"{gateway.url}/list", headers=api, timeout=10).json()["runtimes"]} == {
        "one",
        "two",
    }
    # the same session's /start is idempotent: same runtime, same port
    again = start(gateway, key, "one")
    assert again.status_code == 200 and again.json()["url"] == runtime["url"]

    # stopping one frees its block for the next session
    stopped = httpx.post(f"{gateway.url}/stop", json={"runtime_id": runtime["runtime_id"]}, headers=api, timeout=30)
    assert stopped.status_code == 200, stopped.text

    def third_starts() -> bool:
        answer = start(gateway, key, "three")
        assert answer.status_code in (200, 503), answer.text
        return answer.status_code == 200

    from tests.helpers.wait import wait_for

    wait_for(third_starts, 60, "the stopped sandbox's port block to be free again")


def test_a_port_without_a_sandbox_answers_404(port_gateway: tuple[GatewayProcess, str, range]) -> None:
    gateway, _, ports = port_gateway
    for port in (ports.start, ports.start + 5):
        answer = httpx.get(f"http://127.0.0.1:{port}/alive", timeout=10)
        assert answer.status_code == 404 and answer.json() == {"detail": f"no sandbox on port {port}"}
