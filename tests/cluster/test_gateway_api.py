"""The gateway's control API against the real API server: keys, tenancy, idempotent /start across
replicas, the running limit, bad input, stop-then-start, and the router's 503 for a paused sandbox.

No operator runs here: these behaviours depend only on what the gateway writes and reads.
"""

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, redirect_stdout
from typing import Any

import httpx
import pytest
from kubernetes import client

from kubehands.api.main import create_app
from kubehands.api.runtime import runtime_status
from kubehands.api.schemas import RuntimeStatus
from kubehands.api.settings import Settings
from kubehands.cli import main as kubehands_main
from kubehands.crd import constants
from kubehands.crd.names import session_label
from kubehands.crd.times import parse_time
from tests.helpers.kube import api_client
from tests.helpers.sandbox import SandboxApi

pytestmark = pytest.mark.cluster

IMAGE = "ghcr.io/openhands/agent-server:1.34.0-python"
SMALL = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def keys_cli(kubeconfig: str, namespace: str, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = kubehands_main(["keys", "--kubeconfig", kubeconfig, "-n", namespace, *args])
    return code, out.getvalue()


def create_key(kubeconfig: str, namespace: str, name: str, *extra: str) -> str:
    code, out = keys_cli(kubeconfig, namespace, "create", name, *extra)
    assert code == 0
    return out.strip()


@asynccontextmanager
async def gateway_client(
    kubeconfig: str, namespace: str, **overrides: Any
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """One gateway replica (its own caches and clients), served in-process through ASGI."""
    settings = Settings(
        namespace=namespace,
        kubeconfig=kubeconfig,
        public_url="http://gw.test",
        base_resources=SMALL,
        **overrides,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", timeout=30) as http:
            yield app.state.gateway, http


async def until(predicate: Callable[[], Any], changed: Any, timeout: float, describe: str) -> Any:
    """Await a cache-derived condition, waking on cache changes; fail with `describe` at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := predicate()):
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout}s waiting for {describe}")
        await changed.wait_changed(min(remaining, 1.0))
    return result


def sandboxes_in(kubeconfig: str, namespace: str, session_id: str | None = None) -> list[dict[str, Any]]:
    with api_client(kubeconfig) as api:
        selector = f"{constants.LABEL_SESSION}={session_label(session_id)}" if session_id else None
        kwargs = {"label_selector": selector} if selector else {}
        listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
            constants.GROUP, constants.VERSION, namespace, constants.PLURAL, **kwargs
        )
    return [item for item in listed["items"] if not item["metadata"].get("deletionTimestamp")]


def secrets_in(kubeconfig: str, namespace: str, selector: str) -> list[client.V1Secret]:
    with api_client(kubeconfig) as api:
        return list(client.CoreV1Api(api).list_namespaced_secret(namespace, label_selector=selector).items)


@pytest.fixture
def keys(kubeconfig: str, namespace: str) -> dict[str, str]:
    return {
        "a": create_key(kubeconfig, namespace, "team-a"),
        "b": create_key(kubeconfig, namespace, "team-b"),
        "limited": create_key(kubeconfig, namespace, "limited", "--max-running", "1"),
    }


def start_body(session_id: str, **extra: Any) -> dict[str, Any]:
    return {"image": IMAGE, "session_id": session_id, "image_pull_policy": "Never", **extra}


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def fail(kubeconfig: str, namespace: str, runtime_id: str) -> None:
    """Report the sandbox's pod as crash-looping, for the current generation, as the operator would."""
    with api_client(kubeconfig) as api:
        sandboxes = SandboxApi(api, namespace)
        generation = sandboxes.get(runtime_id)["metadata"]["generation"]
        sandboxes.patch_status(
            runtime_id, phase="Failed", podStatus="crashloopbackoff", observedGeneration=generation
        )


def state_of(kubeconfig: str, namespace: str, runtime_id: str) -> str:
    with api_client(kubeconfig) as api:
        return str(SandboxApi(api, namespace).get(runtime_id)["spec"]["state"])


async def until_status(gateway: Any, runtime_id: str, status: RuntimeStatus) -> None:
    await until(
        lambda: runtime_status(gateway.caches.sandbox(runtime_id), alive=False)[0] == status,
        gateway.caches.sandboxes,
        30,
        f"{runtime_id} to be {status} in the cache",
    )


async def test_keys_cli_stores_hashes_only(kubeconfig: str, namespace: str, keys: dict[str, str]) -> None:
    stored = secrets_in(kubeconfig, namespace, "kubehands.dev/api-key=true")
    assert sorted(s.metadata.name for s in stored) == [
        "kh-apikey-limited",
        "kh-apikey-team-a",
        "kh-apikey-team-b",
    ]
    import base64

    blobs = [base64.b64decode(v) for s in stored for v in (s.data or {}).values()]
    assert not any(raw.encode() in blob for raw in keys.values() for blob in blobs)
    code, listed = keys_cli(kubeconfig, namespace, "list")
    assert code == 0 and "team-a" in listed and keys["a"] not in listed
    assert keys_cli(kubeconfig, namespace, "create", "team-a")[0] == 1  # already exists
    assert keys_cli(kubeconfig, namespace, "create", "Bad_Name")[0] == 2


async def test_auth_matrix(kubeconfig: str, namespace: str, keys: dict[str, str]) -> None:
    async with gateway_client(kubeconfig, namespace) as (_, http):
        a, b = {"X-API-Key": keys["a"]}, {"X-API-Key": keys["b"]}
        started = await http.post("/start", json=start_body("auth-s"), headers=a)
        assert started.status_code == 200, started.text
        rid = started.json()["runtime_id"]
        endpoints: list[tuple[str, str, dict[str, Any] | None]] = [
            ("POST", "/start", start_body("auth-s")),
            ("GET", "/sessions/auth-s", None),
            ("GET", "/sessions/batch?ids=auth-s", None),
            ("GET", f"/runtime/{rid}", None),
            ("GET", "/list", None),
            ("POST", "/pause", {"runtime_id": rid}),
            ("POST", "/resume", {"runtime_id": rid}),
            ("GET", "/registry_prefix", None),
            ("GET", "/image_exists?image=busybox", None),
            ("POST", "/stop", {"runtime_id": rid}),
        ]
        for method, path, body in endpoints:
            for headers in ({}, {"X-API-Key": "khk_wrong"}, {"X-API-Key": keys["a"][:-1]}):
                response = await http.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (method, path, response.text)
                assert "detail" in response.json()
            other = await http.request(method, path, json=body, headers=b)
            if path in (f"/runtime/{rid}", "/pause", "/resume", "/stop"):
                assert other.status_code == 404, (method, path, other.text)
            elif path == "/start":  # team-b's own session with the same id: a different sandbox
                assert other.status_code == 200 and other.json()["runtime_id"] != rid
            else:  # team-b sees only its own runtimes, never team-a's
                assert other.status_code == 200 and rid not in other.text, (method, path, other.text)
            own = await http.request(method, path, json=body, headers=a)
            assert own.status_code == 200, (method, path, own.text)


async def test_start_creates_a_sandbox_and_an_owned_session_secret(
    kubeconfig: str, namespace: str, keys: dict[str, str]
) -> None:
    async with gateway_client(kubeconfig, namespace) as (gateway, http):
        a = {"X-API-Key": keys["a"]}
        response = await http.post(
            "/start",
            json=start_body(
                "Mixed-Case_Session.1",
                command="/usr/local/bin/openhands-agent-server --port 60000",
                resource_factor=2,
                unknown_field=1,
            ),
            headers=a,
        )
        assert response.status_code == 200, response.text
        runtime = response.json()
        rid = runtime["runtime_id"]
        assert runtime["status"] == "starting" and runtime["pod_status"] == "pending"
        assert runtime["url"] == f"http://gw.test/{rid}" and runtime["session_api_key"]
        [sandbox] = sandboxes_in(kubeconfig, namespace, "Mixed-Case_Session.1")
        assert sandbox["metadata"]["name"] == rid
        assert sandbox["metadata"]["labels"][constants.LABEL_OWNER] == "team-a"
        assert sandbox["spec"]["sessionID"] == "Mixed-Case_Session.1"
        assert sandbox["spec"]["command"] == ["/usr/local/bin/openhands-agent-server", "--port", "60000"]
        assert sandbox["spec"]["resources"]["limits"] == {"memory": "512Mi"}
        secret_name = sandbox["spec"]["sessionKeySecretRef"]["name"]
        with api_client(kubeconfig) as api:
            secret = client.CoreV1Api(api).read_namespaced_secret(secret_name, namespace)
        import base64

        assert base64.b64decode(secret.data["session-api-key"]).decode() == runtime["session_api_key"]
        [owner] = secret.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid) == ("Sandbox", rid, sandbox["metadata"]["uid"])
        # reads come from the watch cache, and agree with what /start said
        session = await http.get("/sessions/Mixed-Case_Session.1", headers=a)
        assert session.json()["runtime_id"] == rid
        assert session.json()["session_api_key"] == runtime["session_api_key"]
        assert (await http.get("/sessions/mixed-case_session.1", headers=a)).status_code == 404


async def test_concurrent_start_across_replicas_creates_one_sandbox(
    kubeconfig: str, namespace: str, keys: dict[str, str]
) -> None:
    a = {"X-API-Key": keys["a"]}
    async with (
        gateway_client(kubeconfig, namespace) as (_, one),
        gateway_client(kubeconfig, namespace) as (_, two),
    ):
        calls = [
            http.post("/start", json=start_body("race"), headers=a) for http in (one, two) for _ in range(10)
        ]
        responses = await asyncio.gather(*calls)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    assert len({r.json()["runtime_id"] for r in responses}) == 1
    assert len({r.json()["session_api_key"] for r in responses}) == 1
    assert len(sandboxes_in(kubeconfig, namespace, "race")) == 1
    assert len(secrets_in(kubeconfig, namespace, f"{constants.LABEL_SESSION}={session_label('race')}")) == 1


async def test_stop_then_start_gives_a_fresh_runtime(
    kubeconfig: str, namespace: str, keys: dict[str, str]
) -> None:
    async with gateway_client(kubeconfig, namespace) as (gateway, http):
        a = {"X-API-Key": keys["a"]}
        first = (await http.post("/start", json=start_body("again"), headers=a)).json()
        assert (
            await http.post("/stop", json={"runtime_id": first["runtime_id"]}, headers=a)
        ).status_code == 200
        after = await http.get("/sessions/again", headers=a)
        assert after.status_code == 404 or after.json()["status"] == "stopped"
        second = await http.post("/start", json=start_body("again"), headers=a)
        assert second.status_code == 200, second.text
        assert second.json()["runtime_id"] != first["runtime_id"]
        assert second.json()["session_api_key"] != first["session_api_key"]
        assert [s["metadata"]["name"] for s in sandboxes_in(kubeconfig, namespace, "again")] == [
            second.json()["runtime_id"]
        ]
        # stop is idempotent for the caller's view: a second stop of the old id is a 404
        assert (
            await http.post("/stop", json={"runtime_id": first["runtime_id"]}, headers=a)
        ).status_code == 404


async def test_pause_and_resume_keep_the_session_key(
    kubeconfig: str, namespace: str, keys: dict[str, str]
) -> None:
    async with gateway_client(kubeconfig, namespace) as (_, http):
        a = {"X-API-Key": keys["a"]}
        runtime = (await http.post("/start", json=start_body("pr"), headers=a)).json()
        rid = runtime["runtime_id"]
        paused = await http.post("/pause", json={"runtime_id": rid}, headers=a)
        assert (paused.json()["status"], paused.json()["pod_status"]) == ("paused", "not found")
        assert (
            await http.post("/pause", json={"runtime_id": rid}, headers=a)
        ).status_code == 200  # idempotent
        assert (await http.get("/list", headers=a)).json() == {"runtimes": []}
        resumed = await http.post("/resume", json={"runtime_id": rid}, headers=a)
        assert resumed.status_code == 200
        assert resumed.json()["session_api_key"] == runtime["session_api_key"]
        assert resumed.json()["status"] == "starting"
        assert [s["spec"]["state"] for s in sandboxes_in(kubeconfig, namespace, "pr")] == ["Running"]


async def test_resume_rotates_the_key_when_configured(
    kubeconfig: str, namespace: str, keys: dict[str, str]
) -> None:
    async with gateway_client(kubeconfig, namespace, rotate_session_key_on_resume=True) as (_, http):
        a = {"X-API-Key": keys["a"]}
        runtime = (await http.post("/start", json=start_body("rot"), headers=a)).json()
        await http.post("/pause", json={"runtime_id": runtime["runtime_id"]}, headers=a)
        resumed = (await http.post("/resume", json={"runtime_id": runtime["runtime_id"]}, headers=a)).json()
        assert resumed["session_api_key"] and resumed["session_api_key"] != runtime["session_api_key"]
        # the router's copy of the key (its sha256) changed with it, in the patch that resumed the sandbox
        [sandbox] = sandboxes_in(kubeconfig, namespace, "rot")
        assert sandbox["spec"]["state"] == "Running"
        assert sandbox["metadata"]["annotations"][constants.ANNOTATION_SESSION_KEY_SHA256] == sha256_hex(
            resumed["session_api_key"]
        )


async def test_running_limit_is_429(kubeconfig: str, namespace: str, keys: dict[str, str]) -> None:
    async with gateway_client(kubeconfig, namespace) as (_, http):
        limited = {"X-API-Key": keys["limited"]}
        first = await http.post("/start", json=start_body("l1"), headers=limited)
        assert first.status_code == 200
        over = await http.post("/start", json=start_body("l2"), headers=limited)
        assert over.status_code == 429
        assert "limit" in over.json()["detail"]
        assert sandboxes_in(kubeconfig, namespace, "l2") == []
        assert (
            await http.post("/start", json=start_body("l1"), headers=limited)
        ).status_code == 200  # same session
        await http.post("/pause", json={"runtime_id": first.json()["runtime_id"]}, headers=limited)
        assert (await http.post("/start", json=start_body("l2"), headers=limited)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"image": "Not A Valid Image", "session_id": "bad"},
        start_body("bad", environment={"NOT VALID": "x"}),
        start_body("bad", resource_factor=3),
        start_body("bad", working_dir="relative"),
        start_body("bad", environment={"BIG": "x" * 200_000}),  # above the CRD's limit for a value
        start_body("bad", run_as_user=0),
        start_body("bad", environment={"..x": "1"}),
    ],
)
async def test_bad_input_is_4xx_and_creates_nothing(
    kubeconfig: str, namespace: str, keys: dict[str, str], body: dict[str, Any]
) -> None:
    async with gateway_client(kubeconfig, namespace) as (_, http):
        response = await http.post("/start", json=body, headers={"X-API-Key": keys["a"]})
    assert 400 <= response.status_code < 500, response.text
    assert isinstance(response.json()["detail"], str | list)
    assert sandboxes_in(kubeconfig, namespace) == []
    assert secrets_in(kubeconfig, namespace, "kubehands.dev/session-key=true") == []


async def test_revoked_key_is_refused(kubeconfig: str, namespace: str, keys: dict[str, str]) -> None:
    async with gateway_client(kubeconfig, namespace) as (gateway, http):
        b = {"X-API-Key": keys["b"]}
        assert (await http.get("/list", headers=b)).status_code == 200
        assert keys_cli(kubeconfig, namespace, "revoke", "team-b")[0] == 0
        await until(
            lambda: all(r.name != "team-b" for r in gateway.caches.key_records()),
            gateway.caches.api_keys,
            30,
            "the revoked key to leave the cache",
        )
        assert (await http.get("/list", headers=b)).status_code == 401


async def test_paused_sandbox_answers_503_when_wake_is_off(
    kubeconfig: str, namespace: str, keys: dict[str, str]
) -> None:
    async with gateway_client(kubeconfig, namespace, wake_on_request=False) as (_, http):
        a = {"X-API-Key": keys["a"]}
        rid = (await http.post("/start", json=start_body("p503"), headers=a)).json()["runtime_id"]
        await http.post("/pause", json={"runtime_id": rid}, headers=a)
        response = await http.get(f"/{rid}/alive")
        assert response.status_code == 503
        assert "paused" in response.json()["detail"]
        assert [s["spec"]["state"] for s in sandboxes_in(kubeconfig, namespace, "p503")] == ["Paused"]
        assert (await http.get("/kh-000000000000/alive")).status_code == 404


async def test_health_reports_synced_caches(kubeconfig: str, namespace: str) -> None:
    async with gateway_client(kubeconfig, namespace) as (_, http):
        assert (await http.get("/health")).json() == {"status": "ok", "cache_synced": True}


async def test_restarting_a_failed_session_keeps_its_sandbox_and_workspace(
    kubeconfig: str, namespace: str, keys: dict[str, str]
) -> None:
    """A failed sandbox (e.g. its node was lost) is restarted in place by /start: same Sandbox, runtime_id,
    session key and so workspace PVC, with the spec of the new request and a fresh restarted-at annotation
    (the operator replaces the pod). It answers `starting` until the operator reports on the restart."""
    async with gateway_client(kubeconfig, namespace) as (gateway, http):
        a = {"X-API-Key": keys["a"]}
        body = start_body("failing", command=["old"], working_dir="/old", environment={"OLD": "1"})
        first = (await http.post("/start", json=body, headers=a)).json()
        rid = first["runtime_id"]
        [before] = sandboxes_in(kubeconfig, namespace, "failing")
        fail(kubeconfig, namespace, rid)
        await until_status(gateway, rid, RuntimeStatus.ERROR)
        assert (await http.get("/sessions/failing", headers=a)).json()["status"] == "error"

        again = await http.post("/start", json=start_body("failing", environment={"NEW": "1"}), headers=a)
        assert again.status_code == 200, again.text
        runtime = again.json()
        assert runtime["runtime_id"] == rid and runtime["session_api_key"] == first["session_api_key"]
        assert (runtime["status"], runtime["pod_status"]) == ("starting", "pending")
        [after] = sandboxes_in(kubeconfig, namespace, "failing")
        assert after["metadata"]["uid"] == before["metadata"]["uid"]  # the same object: its PVC stays
        annotations = after["metadata"]["annotations"]
        assert parse_time(annotations[constants.ANNOTATION_RESTARTED_AT]) is not None
        assert annotations[constants.ANNOTATION_SESSION_KEY_SHA256] == sha256_hex(first["session_api_key"])
        spec = after["spec"]
        assert spec["state"] == "Running" and "command" not in spec and "workingDir" not in spec
        env = {e["name"]: e["value"] for e in spec["env"]}
        assert env["NEW"] == "1" and "OLD" not in env
        assert spec["sessionKeySecretRef"] == before["spec"]["sessionKeySecretRef"]
        assert spec["workspace"] == before["spec"]["workspace"]
        assert "observedGeneration" not in (after.get("status") or {})  # the failure is no longer current
        session = (await http.get("/sessions/failing", headers=a)).json()
        assert (session["runtime_id"], session["status"]) == (rid, "starting")


async def test_failed_sandboxes_count_and_every_resume_checks_the_limit(
    kubeconfig: str, namespace: str, keys: dict[str, str]
) -> None:
    async with gateway_client(kubeconfig, namespace) as (gateway, http):
        limited = {"X-API-Key": keys["limited"]}  # --max-running 1
        first = (await http.post("/start", json=start_body("l1"), headers=limited)).json()
        fail(kubeconfig, namespace, first["runtime_id"])
        await until_status(gateway, first["runtime_id"], RuntimeStatus.ERROR)
        over = await http.post("/start", json=start_body("l2"), headers=limited)
        assert over.status_code == 429 and "limit" in over.json()["detail"]  # the failed one holds its place
        again = await http.post("/start", json=start_body("l1"), headers=limited)  # adds nothing: allowed
        assert again.status_code == 200 and again.json()["runtime_id"] == first["runtime_id"]

        await http.post("/pause", json={"runtime_id": first["runtime_id"]}, headers=limited)
        assert (await http.post("/start", json=start_body("l2"), headers=limited)).status_code == 200
        for method, path, body in (
            ("POST", "/resume", {"runtime_id": first["runtime_id"]}),
            ("POST", "/start", start_body("l1")),  # resumes the paused session
        ):
            refused = await http.request(method, path, json=body, headers=limited)
            assert refused.status_code == 429 and "limit" in refused.json()["detail"], path
        assert state_of(kubeconfig, namespace, first["runtime_id"]) == "Paused"


async def test_only_a_request_with_the_session_key_wakes_a_paused_sandbox(
    kubeconfig: str, namespace: str, keys: dict[str, str]
) -> None:
    """No operator runs here: a wake sets `spec.state: Running` and then times out waiting for the pod."""
    a = {"X-API-Key": keys["a"]}
    async with (
        gateway_client(kubeconfig, namespace, wake_timeout_seconds=1) as (_, http),
        gateway_client(kubeconfig, namespace, wake_timeout_seconds=1, enable_control_api=False) as (router, only),
    ):
        runtime = (await http.post("/start", json=start_body("wake"), headers=a)).json()
        rid, key = runtime["runtime_id"], runtime["session_api_key"]
        [sandbox] = sandboxes_in(kubeconfig, namespace, "wake")
        assert sandbox["metadata"]["annotations"][constants.ANNOTATION_SESSION_KEY_SHA256] == sha256_hex(key)
        for gateway_http in (http, only):  # the full gateway, and a router that reads no Secrets
            await http.post("/pause", json={"runtime_id": rid}, headers=a)
            await until(
                lambda: (router.caches.sandbox(rid) or {}).get("spec", {}).get("state") == "Paused",
                router.caches.sandboxes,
                30,
                "the router to see the pause",
            )
            for headers in ({}, {"X-Session-API-Key": "wrong"}, {"X-API-Key": keys["a"]}):
                anonymous = await gateway_http.get(f"/{rid}/alive", headers=headers)
                assert anonymous.status_code == 503 and anonymous.headers["retry-after"]
                assert "session key" in anonymous.json()["detail"]
            assert state_of(kubeconfig, namespace, rid) == "Paused"
            keyed = await gateway_http.get(f"/{rid}/alive", headers={"X-Session-API-Key": key})
            assert keyed.status_code == 503 and "in time" in keyed.json()["detail"]
            assert state_of(kubeconfig, namespace, rid) == "Running"
        assert router.caches.session_keys._task is None and router.caches.api_keys._task is None
