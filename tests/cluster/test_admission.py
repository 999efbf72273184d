"""Admission that holds, against the real API server and real gateway processes: a key never holds more than its
`maxRunning` sandboxes, whatever the concurrency of /start, /resume and router wakes, on one replica or two; a
revoked key's sandboxes are paused and nothing wakes them; a router wake rotates the session key as /resume does.

No operator runs here: a Sandbox holds resources from the moment it says `state: Running`, which is what the peak
watcher counts, event by event.
"""

import asyncio
import base64
import hashlib
import io
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, watch

from kubehands.api.admission import ledger_name
from kubehands.api.keys import KeyRecord
from kubehands.api.main import create_app
from kubehands.api.settings import Settings
from kubehands.cli import main as kubehands_main
from kubehands.crd import constants
from tests.helpers.kube import api_client
from tests.helpers.processes import GatewayProcess, free_port
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.cluster

IMAGE = "ghcr.io/openhands/agent-server:1.34.0-python"
CONCURRENT = 24
LIMIT = 2
OVER_LIMIT = re.compile(r"API key 'capped' already has (\d+) sandboxes .* \(its limit is 2\)")


def keys_cli(kubeconfig: str, namespace: str, *args: str) -> int:
    with redirect_stdout(io.StringIO()):
        return kubehands_main(["keys", "--kubeconfig", kubeconfig, "-n", namespace, *args])


def create_key(kubeconfig: str, namespace: str, name: str, *extra: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert kubehands_main(["keys", "--kubeconfig", kubeconfig, "-n", namespace, "create", name, *extra]) == 0
    return out.getvalue().strip()


def start_body(session_id: str) -> dict[str, Any]:
    return {"image": IMAGE, "session_id": session_id, "image_pull_policy": "Never"}


def sandboxes_of(kubeconfig: str, namespace: str, owner: str) -> list[dict[str, Any]]:
    with api_client(kubeconfig) as api:
        listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
            constants.GROUP, constants.VERSION, namespace, constants.PLURAL,
            label_selector=f"{constants.LABEL_OWNER}={owner}",
        )
    return [s for s in listed["items"] if not s["metadata"].get("deletionTimestamp")]


def running_of(kubeconfig: str, namespace: str, owner: str) -> list[str]:
    sandboxes = sandboxes_of(kubeconfig, namespace, owner)
    return sorted(s["metadata"]["name"] for s in sandboxes if s["spec"]["state"] == "Running")


def session_secrets_of(kubeconfig: str, namespace: str, owner: str) -> list[str]:
    with api_client(kubeconfig) as api:
        found = client.CoreV1Api(api).list_namespaced_secret(
            namespace, label_selector=f"{constants.LABEL_OWNER}={owner},kubehands.dev/session-key=true"
        )
    return sorted(s.metadata.name for s in found.items)


class PeakWatcher:
    """Watches the namespace's Sandboxes and records the most of `owner`'s that said `state: Running` at once."""

    def __init__(self, kubeconfig: str, namespace: str, owner: str) -> None:
        self._kubeconfig, self._namespace, self._owner = kubeconfig, namespace, owner
        self._running: set[str] = set()
        self.peak = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with api_client(self._kubeconfig) as api:
            custom = client.CustomObjectsApi(api)
            args = (constants.GROUP, constants.VERSION, self._namespace, constants.PLURAL)
            listed = custom.list_namespaced_custom_object(*args)
            for item in listed["items"]:
                self._see("ADDED", item)
            version = listed["metadata"]["resourceVersion"]
            self._ready.set()
            while not self._stop.is_set():
                for event in watch.Watch().stream(
                    custom.list_namespaced_custom_object, *args, resource_version=version, timeout_seconds=1
                ):
                    version = event["object"]["metadata"]["resourceVersion"]
                    self._see(event["type"], event["object"])

    def _see(self, kind: str, sandbox: dict[str, Any]) -> None:
        meta = sandbox["metadata"]
        if (meta.get("labels") or {}).get(constants.LABEL_OWNER) != self._owner:
            return
        running = sandbox["spec"].get("state") == "Running"
        holding = kind != "DELETED" and not meta.get("deletionTimestamp") and running
        (self._running.add if holding else self._running.discard)(meta["name"])
        self.peak = max(self.peak, len(self._running))

    def __enter__(self) -> "PeakWatcher":
        self._thread.start()
        assert self._ready.wait(30), "the watch did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@contextmanager
def gateways(kubeconfig: str, namespace: str, tmp_path: Path, *envs: dict[str, str]) -> Iterator[list[str]]:
    """One `kubehands gateway` process per environment, against the same namespace; their URLs."""
    started: list[GatewayProcess] = []
    try:
        for index, env in enumerate(envs):
            process = GatewayProcess(kubeconfig, namespace, free_port(), tmp_path / f"gateway-{index}.log", **env)
            started.append(process)
            process.start()
        yield [process.url for process in started]
    finally:
        for process in started:
            process.stop()


Request = tuple[str, str, dict[str, Any] | None, dict[str, str]]  # method, path, JSON body, headers


async def spread(urls: list[str], requests: list[Request]) -> list[httpx.Response]:
    """Send every request at once, round robin over the replicas."""
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=60)) for url in urls
        ]
        calls = [
            clients[i % len(clients)].request(method, path, json=body, headers=headers)
            for i, (method, path, body, headers) in enumerate(requests)
        ]
        return list(await asyncio.gather(*calls))


def assert_admitted_two(responses: list[httpx.Response], ok: int = 200) -> None:
    codes = Counter(r.status_code for r in responses)
    unexpected = [r.text for r in responses if r.status_code not in (ok, 429)]
    assert codes == {ok: LIMIT, 429: CONCURRENT - LIMIT}, unexpected
    for refused in (r for r in responses if r.status_code == 429):
        match = OVER_LIMIT.search(refused.json()["detail"])
        assert match and int(match.group(1)) >= LIMIT, refused.text


@pytest.mark.parametrize("replicas", [1, 2])
async def test_concurrent_starts_never_exceed_the_limit(
    kubeconfig: str, namespace: str, tmp_path: Path, replicas: int
) -> None:
    key = create_key(kubeconfig, namespace, "capped", "--max-running", str(LIMIT))
    headers = {"X-API-Key": key}
    with (
        gateways(kubeconfig, namespace, tmp_path, *[{}] * replicas) as urls,
        PeakWatcher(kubeconfig, namespace, "capped") as peak,
    ):
        responses = await spread(urls, [("POST", "/start", start_body(f"s{i}"), headers) for i in range(CONCURRENT)])
        assert_admitted_two(responses)
        started = sorted(r.json()["runtime_id"] for r in responses if r.status_code == 200)
        assert sorted(s["metadata"]["name"] for s in sandboxes_of(kubeconfig, namespace, "capped")) == started
        # A 429 leaves nothing behind: no Sandbox, no session Secret, and its ledger entry was never written.
        assert len(session_secrets_of(kubeconfig, namespace, "capped")) == LIMIT
        with api_client(kubeconfig) as api:
            ledger = client.CoreV1Api(api).read_namespaced_config_map(ledger_name("capped"), namespace).data or {}
        assert len(ledger) <= LIMIT
    assert peak.peak == LIMIT


async def paused_sandboxes(http: httpx.AsyncClient, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    """`count` paused sandboxes of the key (started and paused one at a time: the limit allows that)."""
    runtimes = []
    for i in range(count):
        started = await http.post("/start", json=start_body(f"p{i}"), headers=headers)
        assert started.status_code == 200, started.text
        paused = await http.post("/pause", json={"runtime_id": started.json()["runtime_id"]}, headers=headers)
        assert paused.json()["status"] == "paused", paused.text
        runtimes.append(started.json())
    return runtimes


async def until_seen_paused(urls: list[str], runtime_id: str) -> None:
    """Every replica's cache shows `runtime_id`, the last one paused, as paused (and so every earlier pause: a watch
    delivers events in order). An anonymous request to a paused sandbox says so, and wakes nothing."""
    async with httpx.AsyncClient(timeout=30) as http:
        for url in urls:
            deadline = asyncio.get_running_loop().time() + 30
            while "is paused" not in (await http.get(f"{url}/{runtime_id}/alive")).json()["detail"]:
                assert asyncio.get_running_loop().time() < deadline, f"{url} does not show {runtime_id} paused"
                await asyncio.sleep(0.1)


async def test_concurrent_resumes_over_two_replicas_never_exceed_the_limit(
    kubeconfig: str, namespace: str, tmp_path: Path
) -> None:
    key = create_key(kubeconfig, namespace, "capped", "--max-running", str(LIMIT))
    headers = {"X-API-Key": key}
    with gateways(kubeconfig, namespace, tmp_path, {}, {}) as urls:
        async with httpx.AsyncClient(base_url=urls[0], timeout=60) as http:
            runtimes = await paused_sandboxes(http, headers, CONCURRENT)
        await until_seen_paused(urls, runtimes[-1]["runtime_id"])
        with PeakWatcher(kubeconfig, namespace, "capped") as peak:
            resumes = [("POST", "/resume", {"runtime_id": r["runtime_id"]}, headers) for r in runtimes]
            assert_admitted_two(await spread(urls, resumes))
            assert len(running_of(kubeconfig, namespace, "capped")) == LIMIT
        assert peak.peak == LIMIT


async def test_concurrent_router_wakes_never_exceed_the_limit(kubeconfig: str, namespace: str, tmp_path: Path) -> None:
    """Over a full gateway and a router without the control API (it reads no Secrets, so no API keys: it has the
    limit from the Sandbox's annotation). The admitted wakes time out waiting for a pod (no operator): 503."""
    key = create_key(kubeconfig, namespace, "capped", "--max-running", str(LIMIT))
    headers = {"X-API-Key": key}
    wake = {"KUBEHANDS_WAKE_TIMEOUT_SECONDS": "1"}
    with gateways(kubeconfig, namespace, tmp_path, wake, wake | {"KUBEHANDS_ENABLE_CONTROL_API": "false"}) as urls:
        async with httpx.AsyncClient(base_url=urls[0], timeout=60) as http:
            runtimes = await paused_sandboxes(http, headers, CONCURRENT)
        await until_seen_paused(urls, runtimes[-1]["runtime_id"])
        with PeakWatcher(kubeconfig, namespace, "capped") as peak:
            wakes = [
                ("GET", f"/{r['runtime_id']}/alive", None, {"X-Session-API-Key": r["session_api_key"]})
                for r in runtimes
            ]
            responses = await spread(urls, wakes)
            assert_admitted_two(responses, ok=503)
            assert all("in time" in r.json()["detail"] for r in responses if r.status_code == 503)
            assert len(running_of(kubeconfig, namespace, "capped")) == LIMIT
        assert peak.peak == LIMIT


@asynccontextmanager
async def app(kubeconfig: str, namespace: str, **overrides: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """A gateway served in-process (its parts reachable), for what a process cannot show."""
    settings = Settings(namespace=namespace, kubeconfig=kubeconfig, public_url="http://gw.test", **overrides)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", timeout=30) as http:
            yield application.state.gateway, http


async def test_revoke_pauses_the_keys_sandboxes_and_nothing_wakes_them(
    kubeconfig: str, namespace: str, tmp_path: Path
) -> None:
    """Revoked while no gateway runs: the command alone pauses the running sandbox; then neither the router (full
    gateway or router alone) nor the control API wakes either sandbox, even a replica still holding the key."""
    key = create_key(kubeconfig, namespace, "leaving")
    headers = {"X-API-Key": key}
    async with app(kubeconfig, namespace) as (gateway, http):
        running = (await http.post("/start", json=start_body("running"), headers=headers)).json()
        paused = (await http.post("/start", json=start_body("paused"), headers=headers)).json()
        await http.post("/pause", json={"runtime_id": paused["runtime_id"]}, headers=headers)
        stale_record: KeyRecord = gateway.caches.key_record("leaving")
    assert running_of(kubeconfig, namespace, "leaving") == [running["runtime_id"]]

    assert keys_cli(kubeconfig, namespace, "revoke", "leaving") == 0
    assert running_of(kubeconfig, namespace, "leaving") == []  # paused by the command, at once

    wake = {"KUBEHANDS_WAKE_TIMEOUT_SECONDS": "1"}
    with gateways(kubeconfig, namespace, tmp_path, wake, wake | {"KUBEHANDS_ENABLE_CONTROL_API": "false"}) as urls:
        async with httpx.AsyncClient(timeout=30) as http:
            for url in urls:
                for runtime in (running, paused):
                    rid, session_key = runtime["runtime_id"], runtime["session_api_key"]
                    woken = await http.get(f"{url}/{rid}/alive", headers={"X-Session-API-Key": session_key})
                    assert woken.status_code == 403, woken.text
                    assert "'leaving' was revoked" in woken.json()["detail"]
            for runtime in (running, paused):
                calls = (("/resume", {"runtime_id": runtime["runtime_id"]}), ("/start", start_body("paused")))
                for path, body in calls:
                    refused = await http.post(f"{urls[0]}{path}", json=body, headers=headers)
                    assert refused.status_code == 401, refused.text
    # A replica whose cache still held the key (authenticated before the revocation reached it): the ledger refuses.
    async with app(kubeconfig, namespace) as (gateway, _):
        from kubehands.api.errors import Forbidden

        for runtime in (running, paused):
            with pytest.raises(Forbidden, match="revoked"):
                await gateway.sandboxes.resume(stale_record, runtime["runtime_id"])
    assert running_of(kubeconfig, namespace, "leaving") == []
    assert len(sandboxes_of(kubeconfig, namespace, "leaving")) == 2  # paused, with their workspaces


async def test_revoke_delete_sandboxes_deletes_them(kubeconfig: str, namespace: str) -> None:
    key = create_key(kubeconfig, namespace, "leaving")
    headers = {"X-API-Key": key}
    async with app(kubeconfig, namespace) as (_, http):
        running = (await http.post("/start", json=start_body("running"), headers=headers)).json()
        paused = (await http.post("/start", json=start_body("paused"), headers=headers)).json()
        await http.post("/pause", json={"runtime_id": paused["runtime_id"]}, headers=headers)
    assert running["runtime_id"] and len(sandboxes_of(kubeconfig, namespace, "leaving")) == 2
    assert keys_cli(kubeconfig, namespace, "revoke", "leaving", "--delete-sandboxes") == 0
    assert sandboxes_of(kubeconfig, namespace, "leaving") == []
    assert session_secrets_of(kubeconfig, namespace, "leaving") == []


async def test_a_key_deleted_by_hand_is_paused_by_the_gateway(kubeconfig: str, namespace: str) -> None:
    """The gateway's own backstop: its watch sees the key Secret go (here deleted without `kubehands keys`), and it
    pauses the key's running sandboxes."""
    key = create_key(kubeconfig, namespace, "leaving")
    async with app(kubeconfig, namespace) as (_, http):
        running = (await http.post("/start", json=start_body("running"), headers={"X-API-Key": key})).json()
        with api_client(kubeconfig) as api:
            client.CoreV1Api(api).delete_namespaced_secret("kh-apikey-leaving", namespace)
        await asyncio.to_thread(
            wait_for, lambda: running_of(kubeconfig, namespace, "leaving") == [], 30, "the gateway to pause it"
        )
    assert [s["metadata"]["name"] for s in sandboxes_of(kubeconfig, namespace, "leaving")] == [running["runtime_id"]]


async def test_creating_a_revoked_name_again_gives_its_sandboxes_back(kubeconfig: str, namespace: str) -> None:
    key = create_key(kubeconfig, namespace, "returning")
    async with app(kubeconfig, namespace) as (gateway, http):
        rid = (await http.post("/start", json=start_body("s"), headers={"X-API-Key": key})).json()["runtime_id"]
        assert keys_cli(kubeconfig, namespace, "revoke", "returning") == 0
        again = {"X-API-Key": create_key(kubeconfig, namespace, "returning")}
        deadline = asyncio.get_running_loop().time() + 30
        digest = hashlib.sha256(again["X-API-Key"].encode()).hexdigest()
        while getattr(gateway.caches.key_record("returning"), "digest", None) != digest:
            assert asyncio.get_running_loop().time() < deadline
            await gateway.caches.api_keys.wait_changed(1.0)
        resumed = await http.post("/resume", json={"runtime_id": rid}, headers=again)
        assert resumed.status_code == 200, resumed.text
    assert running_of(kubeconfig, namespace, "returning") == [rid]


async def test_a_router_wake_rotates_the_session_key_when_resume_would(kubeconfig: str, namespace: str) -> None:
    """With KUBEHANDS_ROTATE_SESSION_KEY_ON_RESUME the wake rotates the key as /resume does (the Secret, then the
    digest with the state); the waking request carried the old key, so it gets 401 naming where the new one is, and
    the old key neither wakes nor counts any more. A router that reads no Secrets cannot rotate: 409, no wake."""
    key = create_key(kubeconfig, namespace, "rotating")
    headers = {"X-API-Key": key}
    async with (
        app(kubeconfig, namespace, rotate_session_key_on_resume=True, wake_timeout_seconds=1) as (_, http),
        app(kubeconfig, namespace, rotate_session_key_on_resume=True, enable_control_api=False) as (router, only),
    ):
        runtime = (await http.post("/start", json=start_body("rot"), headers=headers)).json()
        rid, old = runtime["runtime_id"], runtime["session_api_key"]
        await http.post("/pause", json={"runtime_id": rid}, headers=headers)
        deadline = asyncio.get_running_loop().time() + 30
        while (router.caches.sandbox(rid) or {}).get("spec", {}).get("state") != "Paused":
            assert asyncio.get_running_loop().time() < deadline
            await router.caches.sandboxes.wait_changed(1.0)

        cannot = await only.get(f"/{rid}/alive", headers={"X-Session-API-Key": old})
        assert cannot.status_code == 409 and "/resume" in cannot.json()["detail"], cannot.text
        assert [s["spec"]["state"] for s in sandboxes_of(kubeconfig, namespace, "rotating")] == ["Paused"]

        woken = await http.get(f"/{rid}/alive", headers={"X-Session-API-Key": old})
        assert woken.status_code == 401, woken.text
        assert f"GET /runtime/{rid}" in woken.json()["detail"]
        new = (await http.get(f"/runtime/{rid}", headers=headers)).json()["session_api_key"]
        assert new and new != old
        [sandbox] = sandboxes_of(kubeconfig, namespace, "rotating")
        assert sandbox["spec"]["state"] == "Running"
        digest = sandbox["metadata"]["annotations"][constants.ANNOTATION_SESSION_KEY_SHA256]
        assert digest == hashlib.sha256(new.encode()).hexdigest()
        with api_client(kubeconfig) as api:
            ref = sandbox["spec"]["sessionKeySecretRef"]["name"]
            secret = client.CoreV1Api(api).read_namespaced_secret(ref, namespace)
        assert base64.b64decode(secret.data["session-api-key"]).decode() == new
        stale = await http.get(f"/{rid}/alive", headers={"X-Session-API-Key": old})
        assert stale.status_code == 503 and "session key" in stale.json()["detail"]  # no longer its key


async def test_revoke_in_a_separate_sandbox_namespace(kubeconfig: str, namespace: str) -> None:
    """Keys in one namespace, sandboxes in another (the chart's layout): revoking without --sandbox-namespace finds
    no sandbox and says so; run again with it, the key being gone already, it revokes and pauses there."""
    sandboxes_ns = f"{namespace}-sbx"
    with api_client(kubeconfig) as api:
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=sandboxes_ns)))
    try:
        key = create_key(kubeconfig, namespace, "elsewhere")
        async with app(kubeconfig, sandboxes_ns, keys_namespace=namespace) as (_, http):
            started = await http.post("/start", json=start_body("s"), headers={"X-API-Key": key})
            assert started.status_code == 200, started.text
        err = io.StringIO()
        with redirect_stderr(err):
            assert keys_cli(kubeconfig, namespace, "revoke", "elsewhere") == 0
        assert "--sandbox-namespace" in err.getvalue()
        assert running_of(kubeconfig, sandboxes_ns, "elsewhere") == [started.json()["runtime_id"]]
        assert keys_cli(kubeconfig, namespace, "revoke", "elsewhere", "--sandbox-namespace", sandboxes_ns) == 0
        assert running_of(kubeconfig, sandboxes_ns, "elsewhere") == []
        with api_client(kubeconfig) as api:
            ledger = client.CoreV1Api(api).read_namespaced_config_map(ledger_name("elsewhere"), sandboxes_ns)
        assert "revoked" in (ledger.data or {})
    finally:
        with api_client(kubeconfig) as api:
            client.CoreV1Api(api).delete_namespace(sandboxes_ns, propagation_policy="Background")
