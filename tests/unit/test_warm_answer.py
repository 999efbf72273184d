"""A warm /start answers `running` (docs/runtime-api.md §8.5): once the claimed sandbox's init is done and the
operator has reported on the claim's spec, the agent server that answered the init is alive for the router without an
/alive probe, and every read after the /start says `running` too. Each runtime object says how its sandbox started.

Served gateway on loopback, its caches filled by the test (the operator's status arrives as a cache update)."""

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kubehands.api import runtime
from kubehands.api.gateway import Gateway
from kubehands.api.pools import warm_start
from kubehands.api.schemas import RuntimeObject
from kubehands.api.settings import Settings
from tests.helpers.api import add_key, add_session_secret, sandbox_object, serve_gateway

pytestmark = pytest.mark.unit

RID = "kh-claimed00001"
TENANT = "team-a"
KEY = "khk_" + "w" * 43
SESSION_KEY = "session-key-of-the-claim"


def claimed_sandbox(port: int, *, operator_caught_up: bool) -> dict[str, Any]:
    """A claimed member right after the gateway marked its init done: the claim's spec is generation 2; until the
    operator reports on it, the status still describes generation 1 (the same pod, which the claim keeps)."""
    sandbox = sandbox_object(RID, TENANT, "S1", port, session_key=SESSION_KEY)
    sandbox["metadata"]["generation"] = 2
    sandbox["metadata"]["resourceVersion"] = "5"
    sandbox["metadata"]["annotations"] |= {
        "kubehands.dev/claimed-pod": "pod-uid-1",
        "kubehands.dev/claimed-from": "agents",
        "kubehands.dev/init": "ready",
        runtime.ANNOTATION_START: runtime.WARM,
    }
    sandbox["status"] |= {"podUID": "pod-uid-1", "observedGeneration": 2 if operator_caught_up else 1}
    return sandbox


def operator_reported(sandbox: dict[str, Any]) -> dict[str, Any]:
    reported = copy.deepcopy(sandbox)
    reported["status"]["observedGeneration"] = reported["metadata"]["generation"]
    reported["metadata"]["resourceVersion"] = str(int(reported["metadata"]["resourceVersion"]) + 1)
    return reported


# Nothing listens there: the gateway's own /alive probe never succeeds, so `running` can only come from the init's
# answer (`AliveTracker.confirm`).
NO_SERVER_PORT = 9


@pytest.fixture
async def served() -> AsyncIterator[tuple[Gateway, httpx.AsyncClient, int]]:
    async with serve_gateway(Settings(public_url="http://127.0.0.1:1")) as (gateway, port):
        add_key(gateway, TENANT, KEY)
        add_session_secret(gateway, RID, TENANT, "S1", SESSION_KEY)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}) as http:
            yield gateway, http, NO_SERVER_PORT


async def test_a_warm_start_is_running_once_the_operator_reported_and_stays_running(
    served: tuple[Gateway, httpx.AsyncClient, int],
) -> None:
    gateway, http, port = served
    stale = claimed_sandbox(port, operator_caught_up=False)
    gateway.caches.sandboxes.upsert(stale)
    waiting = asyncio.create_task(gateway.sandboxes._until_running(RID, "127.0.0.1"))
    await asyncio.sleep(0)  # it waits on the cache: the status describes the member's generation
    assert not waiting.done()
    assert (await http.get("/sessions/S1")).json()["status"] == "starting"
    gateway.caches.sandboxes.upsert(operator_reported(stale))  # the watch brings the operator's status
    sandbox, alive = await asyncio.wait_for(waiting, 5)
    assert alive and sandbox is not None
    answer = runtime.runtime_object(gateway.settings, RID, "S1", sandbox, SESSION_KEY, alive)
    assert (answer.status, answer.pod_status, answer.start, answer.cold_start_reason) == (
        "running", "ready", "warm", None
    )
    # the reads after the /start agree, without an /alive probe of their own
    read = (await http.get("/sessions/S1")).json()
    assert (read["status"], read["pod_status"], read["start"], read["cold_start_reason"]) == (
        "running", "ready", "warm", None
    )
    # a later watch event of the same pod (the operator's next status write) keeps it running
    later = operator_reported(operator_reported(stale))
    gateway.caches.sandboxes.upsert(later)
    assert gateway.alive.is_alive(later)
    assert (await http.get(f"/runtime/{RID}")).json()["status"] == "running"


async def test_a_warm_start_whose_status_is_current_already_answers_at_once(
    served: tuple[Gateway, httpx.AsyncClient, int],
) -> None:
    gateway, _, port = served
    gateway.caches.sandboxes.upsert(claimed_sandbox(port, operator_caught_up=True))
    sandbox, alive = await asyncio.wait_for(gateway.sandboxes._until_running(RID, "127.0.0.1"), 0.5)
    assert alive and sandbox is not None


async def test_without_the_operator_a_warm_start_answers_starting_after_the_bound(
    served: tuple[Gateway, httpx.AsyncClient, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, http, port = served
    monkeypatch.setattr(warm_start, "RUNNING_WAIT_SECONDS", 0.2)
    gateway.caches.sandboxes.upsert(claimed_sandbox(port, operator_caught_up=False))
    sandbox, alive = await asyncio.wait_for(gateway.sandboxes._until_running(RID, "127.0.0.1"), 5)
    assert not alive and sandbox is not None
    assert runtime.runtime_status(sandbox, alive) == ("starting", "pending")


async def test_an_init_answered_elsewhere_than_the_router_forwards_to_proves_nothing(
    served: tuple[Gateway, httpx.AsyncClient, int],
) -> None:
    gateway, _, port = served
    sandbox = claimed_sandbox(port, operator_caught_up=True)
    gateway.caches.sandboxes.upsert(sandbox)
    assert not gateway.alive.confirm(sandbox, "10.9.9.9")  # the status names another pod IP
    stale = claimed_sandbox(port, operator_caught_up=False)
    assert not gateway.alive.confirm(stale, "127.0.0.1")  # not routable yet: nothing to confirm


def test_every_runtime_object_says_how_its_sandbox_started() -> None:
    settings = Settings(public_url="http://gw.test")
    cold = sandbox_object(RID, TENANT, "S1", 1, annotations={
        runtime.ANNOTATION_START: runtime.COLD, runtime.ANNOTATION_COLD_START_REASON: "mismatch: workingDir",
    })
    old_claimed = sandbox_object(RID, TENANT, "S1", 1, annotations={"kubehands.dev/claimed-from": "agents"})
    old_cold = sandbox_object(RID, TENANT, "S1", 1)
    cases = [(cold, ("cold", "mismatch: workingDir")), (old_claimed, ("warm", None)), (old_cold, ("cold", None)),
             (None, (None, None))]
    for sandbox, expected in cases:
        obj = runtime.runtime_object(settings, RID, "S1", sandbox, None, alive=False)
        assert (obj.start, obj.cold_start_reason) == expected
        wire = obj.model_dump(mode="json")
        assert {"start", "cold_start_reason"} <= set(wire)  # always present, like every field
        assert RuntimeObject.model_validate(wire) == obj
