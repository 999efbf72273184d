"""The pod details of runtime objects (docs/gateway.md#pod-details): the shaping of container statuses, events and
log lines, and the per-sandbox TTL that keeps polling clients from turning into API calls. The fetches go to an
address where no API server listens, so they fail the way an unreachable API server does."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kubehands.api.main import create_app
from kubehands.api.observe import metrics
from kubehands.api.observe.caches import trim_pod
from kubehands.api.observe.pod_details import (
    MAX_MESSAGE_CHARS,
    PodDetails,
    container_statuses,
    last_lines,
    log_source,
    shape_events,
)
from kubehands.api.schemas import RuntimeStatus
from kubehands.api.settings import Settings
from tests.helpers.api import add_key, offline_gateway, sandbox_object

pytestmark = pytest.mark.unit

RID = "kh-dddddddddddd"


def pod(uid: str = "uid-1", *statuses: dict[str, Any], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending", "containerStatuses": list(statuses)}
    if init is not None:
        status["initContainerStatuses"] = init
    return {"metadata": {"name": RID, "uid": uid, "resourceVersion": "7"}, "spec": {"nodeName": "n1"}, "status": status}


WAITING_PULL = {
    "name": "sandbox",
    "image": "kubehands/missing:1",
    "ready": False,
    "restartCount": 0,
    "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "Container image is not present"}},
}
CRASH_LOOP = {
    "name": "sandbox",
    "image": "kubehands/agent-server:1",
    "ready": False,
    "restartCount": 3,
    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
    "lastState": {"terminated": {"reason": "Error", "exitCode": 3, "finishedAt": "2026-01-01T00:00:09Z"}},
}


def test_container_statuses_carry_state_reason_exit_code_and_restarts() -> None:
    chown = {"name": "workspace-chown", "ready": False, "restartCount": 0,
             "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}
    shaped = container_statuses(pod("u", CRASH_LOOP, init=[chown]))
    assert shaped == [
        {"name": "workspace-chown", "image": "", "init": True, "ready": False, "restart_count": 0,
         "state": "terminated", "reason": "Completed", "message": "", "exit_code": 0, "last_termination": None},
        {"name": "sandbox", "image": "kubehands/agent-server:1", "init": False, "ready": False, "restart_count": 3,
         "state": "waiting", "reason": "CrashLoopBackOff", "message": "back-off 40s", "exit_code": None,
         "last_termination": {"reason": "Error", "exit_code": 3, "message": "",
                              "finished_at": "2026-01-01T00:00:09Z"}},
    ]
    assert container_statuses(pod("u", WAITING_PULL))[0]["reason"] == "ErrImageNeverPull"
    assert container_statuses(None) == [] and container_statuses(pod("u")) == []
    running = {"name": "sandbox", "ready": True, "state": {"running": {"startedAt": "x"}}}
    assert container_statuses(pod("u", running))[0]["state"] == "running"
    assert container_statuses(pod("u", {"name": "sandbox"}))[0]["state"] == "unknown"


def test_messages_are_bounded() -> None:
    huge = {**WAITING_PULL, "state": {"waiting": {"reason": "ErrImagePull", "message": "x" * 100_000}}}
    assert len(container_statuses(pod("u", huge))[0]["message"]) == MAX_MESSAGE_CHARS
    event = {"type": "Warning", "reason": "Failed", "message": "y" * 100_000}
    assert len(shape_events([event])[0]["message"]) == MAX_MESSAGE_CHARS


def test_events_are_shaped_oldest_first_and_only_the_newest_kept() -> None:
    items = [
        {"type": "Normal", "reason": f"R{i}", "message": f"m{i}", "count": 2,
         "involvedObject": {"kind": "Pod", "name": RID}, "lastTimestamp": f"2026-01-01T00:00:{i:02d}Z"}
        for i in reversed(range(30))
    ]
    shaped = shape_events(items, limit=5)
    assert [e["reason"] for e in shaped] == ["R25", "R26", "R27", "R28", "R29"]
    assert shaped[-1] == {"type": "Normal", "reason": "R29", "message": "m29", "count": 2,
                          "object": f"Pod/{RID}", "time": "2026-01-01T00:00:29Z"}
    # Events without lastTimestamp (events.k8s.io writers, kopf) are timed by eventTime, then their creation.
    late = {"reason": "B", "eventTime": "2026-01-01T00:01:00.123456Z", "involvedObject": {"kind": "Sandbox"}}
    early = {"reason": "A", "metadata": {"creationTimestamp": "2026-01-01T00:00:30Z"}}
    assert [(e["reason"], e["time"], e["count"]) for e in shape_events([late, early])] == [
        ("A", "2026-01-01T00:00:30Z", 1),
        ("B", "2026-01-01T00:01:00Z", 1),
    ]
    assert shape_events(items, limit=0) == []


def test_the_log_is_read_only_once_the_container_ran() -> None:
    assert log_source(pod("u", WAITING_PULL)) is None  # no image yet: nothing to read (the kubelet says 400)
    assert log_source(pod("u", CRASH_LOOP)) == ("sandbox", True)  # waiting for a restart: the previous run's
    exited = {"name": "sandbox", "state": {"terminated": {"reason": "Error", "exitCode": 1}}}
    assert log_source(pod("u", exited)) == ("sandbox", False)
    assert log_source(pod("u", {"name": "sandbox", "state": {"running": {}}})) == ("sandbox", False)
    assert log_source(pod("u", {**CRASH_LOOP, "name": "other"})) is None
    assert log_source(None) is None


def test_last_lines_bounds_lines_and_bytes() -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    assert last_lines(text, 3, 10_000) == "line 97\nline 98\nline 99"
    assert last_lines(text, 100, 20) == "line 98\nline 99"  # cut at a line start within the byte bound
    assert len(last_lines("é" * 10_000, 1, 1025).encode()) <= 1025  # never half a character
    assert last_lines(text, 0, 10_000) == ""


def test_trimmed_pods_keep_what_the_details_and_the_command_show() -> None:
    full = {**pod("u", CRASH_LOOP), "spec": {"nodeName": "n1", "containers": [{"name": "sandbox", "env": []}]}}
    full["metadata"]["managedFields"] = [{"big": "x" * 1000}]
    trimmed = trim_pod(full)
    assert trimmed["spec"] == {"nodeName": "n1"} and "managedFields" not in trimmed["metadata"]
    assert container_statuses(trimmed) == container_statuses(full)
    assert trim_pod({"metadata": {"resourceVersion": "9"}}) == {  # a watch BOOKMARK
        "metadata": {"resourceVersion": "9"}, "spec": {"nodeName": None}, "status": {}
    }


def calls(call: str, outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "kubehands_pod_detail_calls_total", {"call": call, "outcome": outcome}
    ) or 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def unreachable() -> AsyncIterator[tuple[PodDetails, Clock, dict[str, dict[str, Any]]]]:
    """PodDetails over an API server that refuses connections, a clock the test moves, and the pod cache."""
    settings = Settings(pod_details_ttl_seconds=5)
    gateway = offline_gateway(settings)
    clock, pods = Clock(), {RID: pod("uid-1", CRASH_LOOP)}
    details = PodDetails(settings, gateway.kube, pods.get, clock)
    yield details, clock, pods
    await details.stop()
    await gateway.http.aclose()
    await gateway.kube.close()


async def settle(details: PodDetails) -> None:
    await asyncio.gather(*details._tasks.values())


async def test_a_polled_sandbox_is_fetched_at_most_once_per_ttl(
    unreachable: tuple[PodDetails, Clock, dict[str, dict[str, Any]]],
) -> None:
    details, clock, _ = unreachable
    before, before_log = calls("events", "error"), calls("log", "error")
    for _ in range(10):  # ten polls within the TTL, each after the previous fetch ended: one fetch
        got = details.details(RID, RuntimeStatus.ERROR)
        await settle(details)
        assert got.events == [] and got.pod_logs == ""  # an unreachable API server: empty, never an error
        assert got.container_statuses[0]["reason"] == "CrashLoopBackOff"  # the cache's, whatever the API does
        clock.now += 0.4
    await settle(details)
    assert calls("events", "error") - before == 1 and calls("log", "error") - before_log == 1

    clock.now += 1.0  # the TTL (5 s) has passed since the first fetch
    details.details(RID, RuntimeStatus.ERROR)
    await settle(details)
    assert calls("events", "error") - before == 2


async def test_lists_running_and_paused_sandboxes_fetch_nothing(
    unreachable: tuple[PodDetails, Clock, dict[str, dict[str, Any]]],
) -> None:
    details, clock, _ = unreachable
    before = calls("events", "error") + calls("events", "ok")
    for status in (RuntimeStatus.RUNNING, RuntimeStatus.PAUSED, RuntimeStatus.STOPPED):
        got = details.details(RID, status)
        assert got.events == [] and got.pod_logs == "" and got.container_statuses
    details.details(RID, RuntimeStatus.STARTING, fetch=False)  # /list and /sessions/batch
    assert not details._tasks
    await settle(details)
    assert calls("events", "error") + calls("events", "ok") == before


async def test_a_failed_log_call_is_counted_and_a_new_pod_drops_the_old_lines(
    unreachable: tuple[PodDetails, Clock, dict[str, dict[str, Any]]],
) -> None:
    details, clock, pods = unreachable
    before_log = calls("log", "error")
    details.details(RID, RuntimeStatus.ERROR)
    await settle(details)
    assert calls("log", "error") - before_log == 1  # the container ran: its previous run's log is asked for
    details._fetched[RID].pod_logs = "old pod's lines"  # as a successful fetch would have left them
    assert details.details(RID, RuntimeStatus.ERROR).pod_logs == "old pod's lines"
    pods[RID] = pod("uid-2", WAITING_PULL)  # a re-/start replaced the pod
    assert details.details(RID, RuntimeStatus.STARTING).pod_logs == ""
    await settle(details)
    assert calls("log", "error") - before_log == 1  # the new container never ran: no log call
    details.on_event("DELETED", {"metadata": {"name": RID}})
    assert RID not in details._fetched


async def test_runtime_reads_answer_200_with_empty_details_when_the_api_server_is_down() -> None:
    settings = Settings(public_url="http://gw.test")
    gateway = offline_gateway(settings)
    add_key(gateway, "team-a", "khk_a")
    gateway.caches.sandboxes.upsert(sandbox_object(RID, "team-a", "S-d", 1, failed=True))
    gateway.caches.pods.items[RID] = pod("uid-1", CRASH_LOOP)
    app = create_app(settings)
    app.state.gateway = gateway
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as http:
            for _ in range(3):
                for path in (f"/runtime/{RID}", "/sessions/S-d", "/sessions/batch?ids=S-d"):
                    response = await http.get(path, headers={"X-API-Key": "khk_a"})
                    assert response.status_code == 200, response.text
                    body = response.json()
                    runtime = body[0] if isinstance(body, list) else body
                    assert runtime["status"] == "error" and runtime["events"] == [] and runtime["pod_logs"] == ""
                    assert runtime["container_statuses"][0]["last_termination"]["exit_code"] == 3
                await settle(gateway.details)
    finally:
        await gateway.details.stop()
        await gateway.http.aclose()
        await gateway.kube.close()
