"""The gateway's metrics are served on a port of their own (KUBEHANDS_GATEWAY_METRICS_PORT), never on the public port
nor on a sandbox port in port mode: whoever reaches the gateway, a tenant or anyone on the internet, gets 404 for
/metrics. The endpoint refreshes the cache gauges at each scrape, and a port it cannot have stops the start."""

import socket
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from kubehands.api.gateway import Gateway, MetricsPortUnavailable
from kubehands.api.settings import Settings
from tests.helpers.api import sandbox_object, serve_gateway, serve_port_mode_gateway
from tests.helpers.processes import free_port, free_port_range
from tests.unit.test_cli_errors import kubehands, one_line_error

pytestmark = pytest.mark.unit

RID = "kh-metrics00001"


def nowhere_kubeconfig(folder: Path) -> Path:
    """A valid kubeconfig of an API server that is not there (nothing listens on port 9): nothing is called."""
    path = folder / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "current-context: c\n"
    )
    return path


async def scrape(port: int) -> str:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def assert_no_metrics(url: str) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{url}/metrics")
    assert response.status_code == 404, response.text
    assert "kubehands_" not in response.text
    assert "detail" in response.json()


async def test_the_public_port_has_no_metrics_the_metrics_port_has_them() -> None:
    settings = Settings(gateway_metrics_port=free_port(), gateway_metrics_host="127.0.0.1")
    async with serve_gateway(settings) as (gateway, port):
        await assert_no_metrics(f"http://127.0.0.1:{port}")
        assert 'kubehands_cached_objects{cache="sandboxes"} 0.0' in await scrape(settings.gateway_metrics_port)
        gateway.caches.sandboxes.upsert(sandbox_object(RID, "team-a", "s1", 9))
        text = await scrape(settings.gateway_metrics_port)  # refreshed at the scrape
        assert 'kubehands_cached_objects{cache="sandboxes"} 1.0' in text
        assert "kubehands_api_requests_total" in text  # the public port's request above was counted


async def test_port_mode_sandbox_ports_have_no_metrics_either() -> None:
    ports = free_port_range(4)
    first = int(ports.split("-")[0])
    settings = Settings(
        routing_mode="port",
        public_url="http://127.0.0.1:1",
        sandbox_ports=ports,
        gateway_metrics_port=free_port(),
        gateway_metrics_host="127.0.0.1",
    )
    async with serve_port_mode_gateway(settings) as (gateway, port):
        await assert_no_metrics(f"http://127.0.0.1:{port}")  # the control API's port
        for sandbox_port in range(first, first + 4):  # agent, vscode, work-1, work-2 of the only slot
            async with httpx.AsyncClient(timeout=5) as http:
                response = await http.get(f"http://127.0.0.1:{sandbox_port}/metrics")
            assert response.status_code == 404, response.text
            assert response.json() == {"detail": f"no sandbox on port {sandbox_port}"}
        assert "kubehands_cached_objects" in await scrape(settings.gateway_metrics_port)


def test_the_metrics_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEHANDS_GATEWAY_METRICS_PORT", raising=False)  # tests/conftest.py sets 0
    assert Settings().gateway_metrics_port == 8091  # not the operator's 8090: `make run` runs both on one host
    monkeypatch.setenv("KUBEHANDS_GATEWAY_METRICS_PORT", "9999")
    assert Settings().gateway_metrics_port == 9999
    assert Settings(gateway_metrics_port=0).gateway_metrics_port == 0
    for bad in (-1, 65536):
        with pytest.raises(ValidationError, match="gateway_metrics_port"):
            Settings(gateway_metrics_port=bad)
    with pytest.raises(ValidationError, match="must not contain KUBEHANDS_GATEWAY_METRICS_PORT"):
        Settings(routing_mode="port", sandbox_ports="20000-20399", gateway_metrics_port=20100)
    assert Settings(routing_mode="port", sandbox_ports="20000-20399", gateway_metrics_port=0).gateway_metrics_port == 0


async def test_a_metrics_port_in_use_fails_the_start(tmp_path: Path) -> None:
    """The lifespan (Gateway.open) raises before any watch starts."""
    kubeconfig = nowhere_kubeconfig(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(kubeconfig=str(kubeconfig), gateway_metrics_port=port, gateway_metrics_host="127.0.0.1")
        with pytest.raises(MetricsPortUnavailable, match=f"cannot serve metrics on 127.0.0.1:{port}: "):
            await Gateway.open(settings)


def test_kubehands_gateway_says_so_in_one_line(tmp_path: Path) -> None:
    kubeconfig = nowhere_kubeconfig(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        argv = ["gateway", "--host", "127.0.0.1", "--port", "0"]
        env = {"KUBEHANDS_KUBECONFIG": str(kubeconfig), "KUBEHANDS_GATEWAY_METRICS_PORT": port}
        line = one_line_error(kubehands(argv, tmp_path, **env), "gateway")
        assert f"cannot listen on 127.0.0.1:{port}" in line and "KUBEHANDS_GATEWAY_METRICS_PORT" in line
    public = ["gateway", "--host", "127.0.0.1", "--port", port]
    line = one_line_error(kubehands(public, tmp_path, **env), "gateway")
    assert "never served on the public port" in line
