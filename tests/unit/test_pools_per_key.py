"""Pools per key (docs/pools.md "Pools per key"): `GET /api/warm-runtime-configs` lists exactly the pools a key may
claim from, never a template's environment values, and a /start claims only from those pools. A profile that names
no list (the default) may use every pool; an empty list, none."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kubehands.api.keys import KeyRecord, build_key_secret, record_from_secret
from kubehands.api.pools import claims
from kubehands.api.settings import Settings
from kubehands.spec import objects
from kubehands.spec import pools as pool_rule
from kubehands.spec.profile import Profile
from kubehands.spec.request import StartRequest
from tests.helpers.api import add_key, serve_gateway

pytestmark = pytest.mark.unit

SECRET_VALUE = "sk-team-secret-0123456789"
KEYS = {  # name: (raw key, profile)
    "default": ("khk_" + "d" * 43, {}),
    "only-a": ("khk_" + "a" * 43, {"pools": ["pool-a"]}),
    "none": ("khk_" + "n" * 43, {"pools": []}),
}
SETTINGS = Settings(public_url="https://gw.test")
REQUEST = StartRequest.model_validate({"image": "example/agent:1", "session_id": "S1", "working_dir": "/workspace"})


def pool_object(name: str, template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "SandboxPool",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {"size": 1, "template": template},
        "status": {"templateHash": "h1"},
    }


def template_for(caller: KeyRecord) -> dict[str, Any]:
    """The template of the pools below: what REQUEST derives for `caller`, plus an administrator's variable."""
    spec = objects.derive(REQUEST, caller, SETTINGS).spec
    template = pool_rule.template_from_spec(spec)
    template["env"] = [*template.get("env", []), {"name": "LLM_API_KEY", "value": SECRET_VALUE}]
    return template


def caller(name: str) -> KeyRecord:
    return KeyRecord(name=name, digest="0" * 64, profile=Profile.model_validate(KEYS[name][1]))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with serve_gateway(SETTINGS) as (gateway, port):
        for name, (raw, profile) in KEYS.items():
            add_key(gateway, name, raw, Profile.model_validate(profile))
        for pool in ("pool-a", "pool-b"):
            gateway.caches.pools.upsert(pool_object(pool, template_for(caller("default"))))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client


async def listed(http: httpx.AsyncClient, key: str) -> httpx.Response:
    response = await http.get("/api/warm-runtime-configs", headers={"X-API-Key": KEYS[key][0]})
    assert response.status_code == 200, response.text
    return response


@pytest.mark.parametrize(
    ("key", "pools"), [("only-a", ["pool-a"]), ("default", ["pool-a", "pool-b"]), ("none", [])]
)
async def test_a_key_sees_only_the_pools_it_may_claim(http: httpx.AsyncClient, key: str, pools: list[str]) -> None:
    assert [c["name"] for c in (await listed(http, key)).json()["configs"]] == pools


async def test_no_environment_value_of_a_template_is_shown(http: httpx.AsyncClient) -> None:
    response = await listed(http, "default")
    assert SECRET_VALUE not in response.text
    assert "gw.test" not in response.text  # not even the gateway's own variables (RUNTIME_URL)
    assert all(config["environment"] == {} for config in response.json()["configs"])


@pytest.mark.parametrize(
    ("key", "claimable", "miss"),
    [("only-a", ["pool-a"], None), ("default", ["pool-a", "pool-b"], None), ("none", [], claims.MISS_NOT_ALLOWED)],
)
def test_a_start_claims_only_from_the_pools_its_key_may_use(key: str, claimable: list[str], miss: str | None) -> None:
    # Both pools match the /start (the key's profile adds the administrator's variable, as docs/pools.md says);
    # which ones it may claim from is the key's alone.
    who = caller(key)
    who.profile.env["LLM_API_KEY"] = SECRET_VALUE
    spec = objects.derive(REQUEST, who, SETTINGS).spec
    pools = [pool_object(p, template_for(caller("default"))) for p in ("pool-a", "pool-b")]
    found, reason = claims.candidates(pools, lambda pool: [{"pool": pool["metadata"]["name"]}], who.profile.pools, spec)
    assert [name for name, _ in found] == claimable
    assert reason == miss


def test_a_start_that_cannot_claim_pool_b_is_told_why() -> None:
    who = caller("only-a")
    who.profile.env["LLM_API_KEY"] = SECRET_VALUE
    spec = objects.derive(REQUEST, who, SETTINGS).spec
    only_b = [pool_object("pool-b", template_for(caller("default")))]
    assert claims.candidates(only_b, lambda pool: [{}], who.profile.pools, spec) == ([], claims.MISS_NOT_ALLOWED)


@pytest.mark.parametrize(("profile", "stored"), [({}, None), ({"pools": []}, []), ({"pools": ["a"]}, ["a"])])
def test_the_default_is_every_pool_and_an_empty_list_is_kept(profile: dict[str, Any], stored: Any) -> None:
    """What docs/pools.md says: absent = every pool (the default), [] = none; a stored key keeps the difference."""
    secret = build_key_secret("k", "0" * 64, Profile.model_validate(profile), "default")
    record = record_from_secret(secret)
    assert record is not None and record.profile.pools == stored
    assert claims.allowed("anything", Profile().pools)
    assert not claims.allowed("anything", [])
