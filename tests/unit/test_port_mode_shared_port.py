"""Port mode, two Sandboxes in one slot (only Sandboxes written outside the gateway can collide): a request to the
slot's port gets 409, whose detail names neither of them, since the caller may be anyone; the gateway's log names
both, for its operator. Served as `kubehands gateway` serves port mode (a server on every sandbox port), with the
watch caches filled by the test."""

import logging

import httpx
import pytest

from kubehands.api.settings import Settings
from tests.helpers.api import sandbox_object, serve_port_mode_gateway
from tests.helpers.processes import free_port_range

pytestmark = pytest.mark.unit

# With one slot (4 ports), every runtime id lands in it.
FIRST, SECOND = "kh-sharedport01", "kh-sharedport02"


async def test_a_shared_port_is_refused_without_naming_the_sandboxes(caplog: pytest.LogCaptureFixture) -> None:
    ports = free_port_range(4)
    port = int(ports.split("-")[0])
    settings = Settings(routing_mode="port", public_url="http://127.0.0.1:1", sandbox_ports=ports)
    async with serve_port_mode_gateway(settings) as (gateway, _):
        for rid, tenant in ((FIRST, "team-a"), (SECOND, "team-b")):
            gateway.caches.sandboxes.upsert(sandbox_object(rid, tenant, f"s-{rid}", 9))
        assert len(gateway.caches.sandboxes_in_slot(0)) == 2
        with caplog.at_level(logging.WARNING, logger="kubehands.api.router.middleware"):
            async with httpx.AsyncClient(timeout=10) as http:
                for url in (f"http://127.0.0.1:{port}/alive", f"http://127.0.0.1:{port + 1}/?tkn=x"):
                    response = await http.get(url)
                    assert response.status_code == 409, response.text
                    detail = response.json()["detail"]
                    assert FIRST not in detail and SECOND not in detail and "team-" not in detail, detail
                    assert "more than one sandbox has port" in detail and "the gateway's log names them" in detail
                    assert FIRST not in response.text and SECOND not in response.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(FIRST in line and SECOND in line and str(port) in line for line in warnings), warnings
