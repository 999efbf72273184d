"""The control API without a cluster: auth, tenancy, input validation → 4xx, the read endpoints
answering from the (test-filled) cache, /health (no /metrics: its own port) and the OpenAPI schema. Every request
here is answered before any Kubernetes write would happen."""

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from kubehands.api.main import create_app
from kubehands.api.settings import Settings
from kubehands.crd.model import DesiredState
from kubehands.spec.profile import Profile
from tests.helpers.api import add_key, offline_gateway, sandbox_object

pytestmark = pytest.mark.unit

KEY_A, KEY_B = "khk_key-of-team-a", "khk_key-of-team-b"
RID_A, RID_B, RID_PAUSED = "kh-aaaaaaaaaaaa", "kh-bbbbbbbbbbbb", "kh-pppppppppppp"
START = {"image": "ghcr.io/openhands/agent-server:1.34.0-python", "session_id": "S1"}


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(public_url="http://gw.test", max_body_bytes=4096, wake_on_request=False)
    gateway = offline_gateway(settings)
    add_key(gateway, "team-a", KEY_A, Profile(max_running=2))
    add_key(gateway, "team-b", KEY_B)
    for sandbox in (
        sandbox_object(RID_A, "team-a", "S-a", 1, ready=False),
        sandbox_object(RID_B, "team-b", "S-b", 1, ready=False),
        sandbox_object(RID_PAUSED, "team-a", "S-p", 1, state=DesiredState.PAUSED),
    ):
        gateway.caches.sandboxes.upsert(sandbox)
    app = create_app(settings)
    app.state.gateway = gateway
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as http:
        yield http
    await gateway.details.stop()
    await gateway.http.aclose()
    await gateway.kube.close()


ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/start", START),
    ("GET", "/sessions/S-a", None),
    ("GET", "/sessions/batch?ids=S-a", None),
    ("GET", f"/runtime/{RID_A}", None),
    ("GET", "/list", None),
    ("POST", "/pause", {"runtime_id": RID_A}),
    ("POST", "/resume", {"runtime_id": RID_A}),
    ("POST", "/stop", {"runtime_id": RID_A}),
    ("GET", "/registry_prefix", None),
    ("GET", "/image_exists?image=python", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize("key", [None, "", "khk_wrong", KEY_A + " "])
async def test_missing_or_wrong_key_is_401(
    api: httpx.AsyncClient, method: str, path: str, body: Any, key: str | None
) -> None:
    headers = {} if key is None else {"X-API-Key": key}
    response = await api.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/sessions/S-a", None),
        ("GET", f"/runtime/{RID_A}", None),
        ("POST", "/pause", {"runtime_id": RID_A}),
        ("POST", "/resume", {"runtime_id": RID_A}),
        ("POST", "/stop", {"runtime_id": RID_A}),
    ],
)
async def test_other_tenants_runtime_is_404(
    api: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await api.request(method, path, json=body, headers={"X-API-Key": KEY_B})
    assert response.status_code == 404
    assert "detail" in response.json()


async def test_reads_answer_from_the_cache(api: httpx.AsyncClient) -> None:
    a = {"X-API-Key": KEY_A}
    session = (await api.get("/sessions/S-a", headers=a)).json()
    assert session["runtime_id"] == RID_A and session["session_id"] == "S-a"
    assert session["status"] == "starting" and session["pod_status"] == "pending"
    assert "session_api_key" in session
    runtime = (await api.get(f"/runtime/{RID_A}", headers=a)).json()
    assert runtime == session
    paused = (await api.get("/sessions/S-p", headers=a)).json()
    assert (paused["status"], paused["pod_status"]) == ("paused", "not found")
    listed = (await api.get("/list", headers=a)).json()
    assert [r["runtime_id"] for r in listed["runtimes"]] == [RID_A]  # paused and other tenants left out
    assert (await api.get("/sessions/unknown", headers=a)).status_code == 404


async def test_sessions_batch_is_a_bare_array(api: httpx.AsyncClient) -> None:
    a = {"X-API-Key": KEY_A}
    response = await api.get(
        "/sessions/batch", params=[("ids", "S-a"), ("ids", "S-p"), ("ids", "nope")], headers=a
    )
    assert response.status_code == 200
    assert sorted(r["session_id"] for r in response.json()) == ["S-a", "S-p"]
    comma = await api.get("/sessions/batch?ids=S-a,S-b", headers=a)
    assert [r["session_id"] for r in comma.json()] == ["S-a"]  # S-b is team-b's
    assert (await api.get("/sessions/batch", headers=a)).json() == []


@pytest.mark.parametrize(
    "body",
    [
        {"image": "UPPER/Case", "session_id": "s"},
        {"image": "python"},
        {"session_id": "s"},
        START | {"environment": {"BAD NAME": "x"}},
        START | {"environment": "A=1"},
        START | {"resource_factor": 3},
        START | {"resource_factor": "lots"},
        START | {"command": {"a": 1}},
        START | {"working_dir": "relative/dir"},
        START | {"run_as_user": -5},
        START | {"environment": {"..x": "1"}},  # Kubernetes refuses it: the pod would never be created
        START | {"environment": {f"V{i}": "1" for i in range(1001)}},
        START | {"working_dir": "/workspace/../../etc"},
        ["not", "an", "object"],
        "just a string",
        None,
    ],
)
async def test_bad_start_input_is_4xx(api: httpx.AsyncClient, body: Any) -> None:
    response = await api.post("/start", json=body, headers={"X-API-Key": KEY_A})
    assert 400 <= response.status_code < 500, response.text
    assert "detail" in response.json()


async def test_malformed_json_and_oversized_bodies(api: httpx.AsyncClient) -> None:
    a = {"X-API-Key": KEY_A, "Content-Type": "application/json"}
    malformed = await api.post("/start", content=b"{not json", headers=a)
    assert malformed.status_code == 422 and "detail" in malformed.json()
    big = await api.post("/start", json=START | {"environment": {"X": "y" * 10000}}, headers=a)
    assert big.status_code == 413 and "detail" in big.json()

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    streamed = await api.post("/pause", content=chunked(), headers=a)
    assert streamed.status_code == 413


@pytest.mark.parametrize("body", [{}, {"runtime_id": ""}, {"runtime_id": None}, {"runtime_id": "x" * 300}])
async def test_bad_runtime_id_body_is_422(api: httpx.AsyncClient, body: Any) -> None:
    response = await api.post("/pause", json=body, headers={"X-API-Key": KEY_A})
    assert response.status_code == 422


async def test_running_limit_is_429(api: httpx.AsyncClient) -> None:
    a = {"X-API-Key": KEY_A}
    # team-a's limit is 2; add a second live sandbox through the cache
    gateway = api._transport.app.state.gateway  # type: ignore[attr-defined]
    gateway.caches.sandboxes.upsert(sandbox_object("kh-cccccccccccc", "team-a", "S-c", 1, ready=False))
    response = await api.post("/start", json=START | {"session_id": "new"}, headers=a)
    assert response.status_code == 429
    assert "limit" in response.json()["detail"]
    # an existing session is still answered (idempotent /start does not count against the limit)
    again = await api.post("/start", json=START | {"session_id": "S-a"}, headers=a)
    assert again.status_code == 200 and again.json()["runtime_id"] == RID_A


async def test_image_endpoints(api: httpx.AsyncClient) -> None:
    a = {"X-API-Key": KEY_A}
    assert (await api.get("/registry_prefix", headers=a)).json() == {"registry_prefix": ""}
    assert (await api.get("/image_exists?image=Bad Image", headers=a)).status_code == 422
    assert (await api.get("/image_exists", headers=a)).status_code == 422


async def test_health_openapi_need_no_key_and_metrics_are_not_here(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json() == {"status": "ok", "cache_synced": True}
    assert (await api.get("/metrics")).status_code == 404  # their own port (tests/unit/test_gateway_metrics.py)
    schema = (await api.get("/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/start",
        "/sessions/batch",
        "/sessions/{session_id}",
        "/runtime/{runtime_id}",
        "/list",
        "/pause",
        "/resume",
        "/stop",
        "/registry_prefix",
        "/image_exists",
        "/health",
    ):
        assert path in paths
    assert "/metrics" not in paths
    assert list(paths).index("/sessions/batch") < list(paths).index("/sessions/{session_id}")
    assert paths["/start"]["post"]["operationId"] == "runtimes-start"


@pytest.mark.parametrize(("age_seconds", "expected"), [(1, 200), (600, 404)])
async def test_a_claim_answers_starting_only_while_fresh(
    api: httpx.AsyncClient, age_seconds: int, expected: int
) -> None:
    """Right after /start another replica may see the claim before the Sandbox: `starting`, never 404.
    A claim without a Sandbox long after is stale (its creator died) and is not a runtime."""
    from datetime import UTC, datetime, timedelta

    from kubehands.spec import objects

    gateway = api._transport.app.state.gateway  # type: ignore[attr-defined]
    secret = objects.build_session_secret(
        objects.claim_name("team-a", "claimed"), "default", "team-a", "claimed", "kh-cccccccccccc", "sk"
    )
    created = datetime.now(UTC) - timedelta(seconds=age_seconds)
    secret["metadata"] |= {
        "resourceVersion": "1",
        "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    gateway.caches.session_keys.upsert(secret)
    a = {"X-API-Key": KEY_A}
    session = await api.get("/sessions/claimed", headers=a)
    runtime = await api.get("/runtime/kh-cccccccccccc", headers=a)
    assert (session.status_code, runtime.status_code) == (expected, expected)
    if expected == 200:
        assert session.json()["status"] == "starting" and session.json()["session_api_key"] == "sk"
        assert runtime.json()["runtime_id"] == "kh-cccccccccccc"
    assert (await api.get("/runtime/kh-cccccccccccc", headers={"X-API-Key": KEY_B})).status_code == 404


def test_no_route_or_dependency_runs_in_the_thread_pool() -> None:
    """FastAPI runs a plain `def` endpoint or dependency in a worker thread; the gateway's never block,
    so such a hand-off would be pure overhead on every request."""
    import inspect

    from fastapi.routing import APIRoute

    def calls(dependant: Any) -> Iterator[Any]:
        if dependant.call is not None:
            yield dependant.call
        for sub in dependant.dependencies:
            yield from calls(sub)

    from kubehands.api.routes import images, runtimes, sessions, system

    routes = [r for m in (images, runtimes, sessions, system) for r in m.router.routes if isinstance(r, APIRoute)]
    assert len(routes) > 10
    def is_async(c: Any) -> bool:  # a function, or an instance with an async __call__ (APIKeyHeader)
        return inspect.iscoroutinefunction(c) or inspect.iscoroutinefunction(type(c).__call__)

    sync = {f"{r.path}: {getattr(c, '__qualname__', c)}" for r in routes for c in calls(r.dependant) if not is_async(c)}
    assert sync == set()


# ---- no root, limits that hold ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["run_as_user", "run_as_group", "fs_group"])
@pytest.mark.parametrize("value", [0, "0", "10001", True, 10001.0])
async def test_root_and_non_integer_ids_are_422(api: httpx.AsyncClient, field: str, value: Any) -> None:
    """A sandbox runs untrusted code: never as root. Refused before anything is written (this gateway
    has no API server behind it: anything that got further would be a 503)."""
    response = await api.post("/start", json=START | {field: value}, headers={"X-API-Key": KEY_A})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field]


def _gateway(api: httpx.AsyncClient) -> Any:
    return api._transport.app.state.gateway  # type: ignore[attr-defined]


async def test_sandboxes_in_error_count_against_the_limit(api: httpx.AsyncClient) -> None:
    """team-a (limit 2) has one starting sandbox and one whose pod crash-loops: both hold resources."""
    _gateway(api).caches.sandboxes.upsert(sandbox_object("kh-eeeeeeeeeeee", "team-a", "S-e", 1, failed=True))
    response = await api.post("/start", json=START | {"session_id": "new"}, headers={"X-API-Key": KEY_A})
    assert response.status_code == 429
    assert "limit" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/resume", {"runtime_id": RID_PAUSED}),
        ("POST", "/start", START | {"session_id": "S-p"}),  # /start of a paused session resumes it
    ],
)
async def test_resuming_over_the_limit_is_429(api: httpx.AsyncClient, method: str, path: str, body: Any) -> None:
    _gateway(api).caches.sandboxes.upsert(sandbox_object("kh-cccccccccccc", "team-a", "S-c", 1, ready=False))
    response = await api.request(method, path, json=body, headers={"X-API-Key": KEY_A})
    assert response.status_code == 429
    assert "limit" in response.json()["detail"]
    assert _gateway(api).caches.sandbox(RID_PAUSED)["spec"]["state"] == "Paused"


async def test_restarting_a_failed_session_at_the_limit_is_allowed(api: httpx.AsyncClient) -> None:
    """It adds no sandbox: team-a (limit 2) holds RID_A and the failed one. (No API server here: the restart is
    attempted, its admission reads the ledger, and fails with 503, not 429.)"""
    gateway = _gateway(api)
    gateway.caches.sandboxes.upsert(sandbox_object("kh-eeeeeeeeeeee", "team-a", "S-e", 1, failed=True))
    response = await api.post("/start", json=START | {"session_id": "S-e"}, headers={"X-API-Key": KEY_A})
    assert response.status_code == 503, response.text
    assert "not reachable" in response.json()["detail"]


# ---- runtime classes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "requested", "expected"),
    [
        ({}, "sysbox-runc", 503),  # no map: passed on (the operator drops unmapped classes)
        ({"runtime_class_map": {"gvisor": "gvisor", "sysbox-runc": ""}}, "gvisor", 503),
        ({"runtime_class_map": {"gvisor": "gvisor"}}, "kata", 422),  # never silently runc
        ({"runtime_class_map": {"gvisor": "gvisor"}}, None, 503),
        ({"runtime_class_map": {"gvisor": "gvisor"}, "require_runtime_class": True}, None, 422),
        (
            {
                "runtime_class_map": {"gvisor": "gvisor"},
                "require_runtime_class": True,
                "default_runtime_class": "gvisor",
            },
            None,
            503,
        ),
        ({"runtime_class_map": {"gvisor": "gvisor"}, "require_runtime_class": True}, "GVISOR", 422),
    ],
)
async def test_runtime_class_rules(settings: dict[str, Any], requested: str | None, expected: int) -> None:
    """422 before anything is written; 503 means the request passed (no API server is behind this gateway)."""
    gateway = offline_gateway(Settings(**settings))
    add_key(gateway, "team-a", KEY_A)
    app = create_app(gateway.settings)
    app.state.gateway = gateway
    body = START | ({"runtime_class": requested} if requested else {})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as http:
        response = await http.post("/start", json=body, headers={"X-API-Key": KEY_A})
    await gateway.http.aclose()
    await gateway.kube.close()
    assert response.status_code == expected, response.text
    if expected == 422:
        assert "runtime_class" in response.json()["detail"]


# ---- smaller defects -------------------------------------------------------------------------------


async def test_a_key_whose_profile_is_unreadable_gets_422_at_start(api: httpx.AsyncClient) -> None:
    """A Secret written by hand (or an older CLI) with a resourceCeiling that is no quantity: the key still
    authenticates; /start says what is wrong instead of a 500."""
    import base64
    import json

    from kubehands.api.keys import build_key_secret, hash_key

    secret = build_key_secret("broken", hash_key("khk_broken"), Profile(), "default")
    profile = json.dumps({"resourceCeiling": {"cpu": "lots"}}).encode()
    secret["data"]["profile.json"] = base64.b64encode(profile).decode()
    secret["metadata"]["resourceVersion"] = "1"
    _gateway(api).caches.api_keys.upsert(secret)
    headers = {"X-API-Key": "khk_broken"}
    assert (await api.get("/list", headers=headers)).status_code == 200
    response = await api.post("/start", json=START, headers=headers)
    assert response.status_code == 422
    assert "resourceCeiling" in response.json()["detail"]


@pytest.mark.parametrize(
    ("ceiling", "expected"),
    [(c, 422) for c in (0, -1, 2**31, 2**64, 1e300, True, "3600", "forever", [3600], {"s": 1})] + [(3600, 503)],
)
async def test_a_key_with_a_hostile_lifetime_ceiling_gets_422_at_start(
    api: httpx.AsyncClient, ceiling: Any, expected: int
) -> None:
    """A profile Secret written by hand with a lifetime ceiling the CLI would have refused: /start says so (422),
    before anything is written. This gateway has no API server behind it: 503 means a valid ceiling passed."""
    import base64
    import json

    from kubehands.api.keys import build_key_secret, hash_key

    secret = build_key_secret("hostile", hash_key("khk_hostile"), Profile(), "default")
    secret["data"]["profile.json"] = base64.b64encode(json.dumps({"maxLifetimeSeconds": ceiling}).encode()).decode()
    secret["metadata"]["resourceVersion"] = "1"
    _gateway(api).caches.api_keys.upsert(secret)
    response = await api.post("/start", json=START, headers={"X-API-Key": "khk_hostile"})
    assert response.status_code == expected, response.text
    if expected == 422:
        assert "maxLifetimeSeconds" in response.json()["detail"]


async def test_sessions_batch_checks_its_size_before_anything_else(api: httpx.AsyncClient) -> None:
    a = {"X-API-Key": KEY_A}
    repeated = await api.get("/sessions/batch", params={"ids": ",".join(["S-a"] * 1001)}, headers=a)
    assert repeated.status_code == 422 and "1000" in repeated.json()["detail"]
    many = await api.get("/sessions/batch", params={"ids": ",".join(f"id-{i}" for i in range(5000))}, headers=a)
    assert many.status_code == 422
    ordered = await api.get("/sessions/batch", params=[("ids", "S-p,S-a"), ("ids", "S-p")], headers=a)
    assert [r["session_id"] for r in ordered.json()] == ["S-p", "S-a"]  # de-duplicated, first-seen order


@pytest.mark.parametrize(
    "raw",
    [
        b'{"image": "python", "session_id": "s", "run_as_user": 10001, "run_as_user": 0}',
        b'{"image": "python", "session_id": "s", "session_id": "t"}',
        b'{"image": "python", "session_id": "s", "environment": {"A": "1", "A": "2"}}',
    ],
)
async def test_repeated_json_keys_are_422(api: httpx.AsyncClient, raw: bytes) -> None:
    response = await api.post(
        "/start", content=raw, headers={"X-API-Key": KEY_A, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "duplicate key" in response.json()["detail"][0]["msg"]
