"""Hostile /start requests against the gateway under uvicorn, as `kubehands gateway` serves it, with no API
server behind it: every case must be refused (4xx, JSON `detail`) before any write is attempted (an attempt
would be a 503 here). tests/cluster/test_hostile_start.py runs the same table against a real API server."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kubehands.api.settings import Settings
from tests.helpers.api import HOSTILE_STARTS, add_key, hostile_request, serve_gateway

pytestmark = pytest.mark.unit

KEY = "khk_" + "k" * 43


@pytest.fixture
async def gateway_port() -> AsyncIterator[int]:
    settings = Settings(runtime_class_map={"gvisor": "gvisor", "sysbox-runc": ""}, activity_interval_seconds=3600)
    async with serve_gateway(settings) as (gateway, port):
        add_key(gateway, "hostile", KEY)
        yield port


def test_the_table_is_large() -> None:
    assert len(HOSTILE_STARTS) >= 40
    assert len({case[0] for case in HOSTILE_STARTS}) == len(HOSTILE_STARTS)


@pytest.mark.parametrize("case", HOSTILE_STARTS, ids=[case[0] for case in HOSTILE_STARTS])
async def test_hostile_start_is_refused_before_any_write(gateway_port: int, case: tuple[str, Any, Any, str]) -> None:
    body, headers = hostile_request(case, KEY)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}", timeout=30) as http:
        response = await http.post("/start", content=body, headers=headers)
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
        assert "detail" in response.json()
        assert (await http.get("/health")).status_code == 200
