"""Warm pools through the served gateway (loopback, caches filled by the test): unclaimed members do not exist
for clients (router, /runtime, /list, /sessions), `GET /api/warm-runtime-configs` lists the pools a key may
use, and the metrics endpoint (its own port) reports the pools' claimable members and every miss reason."""

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kubehands.api.gateway import Gateway
from kubehands.api.settings import Settings
from kubehands.spec.profile import Profile
from tests.helpers.api import add_key, offline_gateway, sandbox_object, serve, serve_gateway, upstream_app
from tests.helpers.processes import free_port

pytestmark = pytest.mark.unit

MEMBER = "kh-member000001"
TENANT = "team-a"
KEY = "khk_" + "k" * 43
LIMITED_KEY = "khk_" + "l" * 43


def member_object(name: str, pool: str, port: int) -> dict[str, Any]:
    """A ready, unclaimed member: a Sandbox with the pool's labels and no owner (its pod answers on `port`)."""
    sandbox = sandbox_object(name, TENANT, "unused", port)
    sandbox["metadata"]["labels"] = {"kubehands.dev/pool": pool, "kubehands.dev/pool-template": "h1"}
    sandbox["metadata"]["annotations"] = {}
    del sandbox["spec"]["sessionID"]
    sandbox["spec"]["sessionKeySecretRef"] = {"name": f"{name}-init", "key": "session-api-key"}
    sandbox["status"]["podUID"] = f"pod-uid-{name}"
    return sandbox


def pool_object(name: str, working_dir: str | None = "/workspace") -> dict[str, Any]:
    template: dict[str, Any] = {"image": "example/agent:1", "env": [{"name": "OH_DEFERRED_INIT", "value": "true"}]}
    if working_dir:
        template["workingDir"] = working_dir
    return {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "SandboxPool",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
        "spec": {"size": 1, "template": template},
        "status": {"templateHash": "h1"},
    }


@pytest.fixture
async def served() -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    async with serve(upstream_app()) as upstream_port:
        settings = Settings(public_url="http://127.0.0.1:1", gateway_metrics_port=free_port())
        async with serve_gateway(settings) as (gateway, port):
            add_key(gateway, TENANT, KEY)
            add_key(gateway, "limited", LIMITED_KEY, Profile.model_validate({"pools": ["python"]}))
            for pool in ("python", "node"):
                gateway.caches.pools.upsert(pool_object(pool))
            gateway.caches.pools.upsert(pool_object("no-workdir", working_dir=None))
            gateway.caches.sandboxes.upsert(member_object(MEMBER, "python", upstream_port))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                yield gateway, http


async def test_an_unclaimed_member_does_not_exist_for_clients(served: tuple[Gateway, httpx.AsyncClient]) -> None:
    gateway, http = served
    assert gateway.alive.is_alive(gateway.caches.sandbox(MEMBER)) is False  # never probed either
    for path in (f"/{MEMBER}/alive", f"/{MEMBER}/api/conversations", f"/{MEMBER}/vscode/"):
        response = await http.get(path, headers={"X-Session-API-Key": "anything"})
        assert response.status_code == 404, (path, response.text)
    api = {"X-API-Key": KEY}
    assert (await http.get(f"/runtime/{MEMBER}", headers=api)).status_code == 404
    assert (await http.get("/list", headers=api)).json() == {"runtimes": []}
    assert (await http.post("/pause", json={"runtime_id": MEMBER}, headers=api)).status_code == 404
    assert (await http.post("/stop", json={"runtime_id": MEMBER}, headers=api)).status_code == 404
    assert (await http.get("/sessions/batch", params={"ids": "unused"}, headers=api)).json() == []


async def test_warm_runtime_configs_lists_the_pools_a_key_may_use(
    served: tuple[Gateway, httpx.AsyncClient],
) -> None:
    _, http = served
    assert (await http.get("/api/warm-runtime-configs")).status_code == 401
    every = await http.get("/api/warm-runtime-configs", headers={"X-API-Key": KEY})
    assert every.status_code == 200
    configs = every.json()["configs"]
    assert [c["name"] for c in configs] == ["node", "python"]  # not the one without a working dir
    assert configs[0] == {
        "name": "node",
        "image": "example/agent:1",
        "command": None,
        "environment": {},  # OH_DEFERRED_INIT is the operator's, not the pool's environment
        "working_dir": "/workspace",
    }
    limited = await http.get("/api/warm-runtime-configs", headers={"X-API-Key": LIMITED_KEY})
    assert [c["name"] for c in limited.json()["configs"]] == ["python"]


async def test_metrics_report_claimable_members_and_every_miss_reason(
    served: tuple[Gateway, httpx.AsyncClient],
) -> None:
    gateway, http = served
    metrics_url = f"http://127.0.0.1:{gateway.settings.gateway_metrics_port}/metrics"
    text = (await http.get(metrics_url)).text
    assert 'kubehands_pool_ready{pool="python"} 1.0' in text
    assert 'kubehands_pool_ready{pool="node"} 0.0' in text
    for reason in ("no_pool", "not_allowed", "empty", "conflict", "init_failed"):
        assert f'kubehands_pool_misses_total{{reason="{reason}"}}' in text
    assert 'kubehands_cached_objects{cache="pools"} 3.0' in text
    gateway.caches.pools.discard("node")
    assert 'pool="node"' not in (await http.get(metrics_url)).text  # a deleted pool leaves the gauge


async def test_claim_recovery_survives_an_unreachable_api_server() -> None:
    gateway = offline_gateway(Settings())
    stuck = sandbox_object("kh-claimed00001", TENANT, "s", 9)
    stuck["metadata"]["annotations"] = {"kubehands.dev/claimed-pod": "pod-uid", "kubehands.dev/claimed-at": "x"}
    stuck["status"]["podUID"] = "pod-uid"
    gateway.caches.sandboxes.upsert(json.loads(json.dumps(stuck)))
    # due for a cold restart (init pending, claim time unreadable); the patch fails, the loop carries on
    assert await gateway.recovery.check(datetime.now(UTC)) == []
    await gateway.http.aclose()
    await gateway.kube.close()
