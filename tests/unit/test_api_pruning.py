"""Per-sandbox state of the gateway is dropped when the sandbox is deleted: the /alive results and probe
tasks (alive.py) and the activity throttle (activity.py) must not grow with every sandbox ever seen."""

import asyncio

import pytest

from kubehands.api.settings import Settings
from tests.helpers.api import offline_gateway, sandbox_object

pytestmark = pytest.mark.unit

RIDS = [f"kh-prune{i:07d}" for i in range(5)]


async def test_deleted_sandboxes_leave_no_trace() -> None:
    settings = Settings(alive_retry_seconds=30, activity_interval_seconds=3600)
    gateway = offline_gateway(settings)  # no API server: the activity writes fail at once, harmlessly
    try:
        for rid in RIDS:  # ready pods on a port where nothing answers: each gets a probe that keeps retrying
            gateway.caches.sandboxes.upsert(sandbox_object(rid, "team-a", rid, 9))
            gateway.activity.touch(rid)
        await asyncio.gather(*list(gateway.activity._tasks))
        probes = list(gateway.alive._tasks.values())
        assert set(gateway.alive._tasks) == set(RIDS) and set(gateway.activity._last) == set(RIDS)

        gateway.alive._ok[RIDS[0]] = ("kh-prune0000000", "127.0.0.1")  # as if it had answered
        for rid in RIDS:
            gateway.caches.sandboxes.discard(rid)  # the watch's DELETED event goes through the same path
        assert gateway.alive._ok == {} and gateway.alive._tasks == {} and gateway.activity._last == {}
        await asyncio.gather(*probes, return_exceptions=True)
        assert all(task.cancelled() for task in probes)  # no probe keeps running for a deleted sandbox
    finally:
        await gateway.alive.stop()
        await gateway.activity.stop()
        await gateway.http.aclose()
        await gateway.kube.close()


async def test_finished_probes_are_forgotten() -> None:
    gateway = offline_gateway(Settings())
    try:
        gateway.caches.sandboxes.upsert(sandbox_object(RIDS[0], "team-a", "s", 9, ready=False))
        ready = sandbox_object(RIDS[0], "team-a", "s", 9)
        ready["metadata"]["resourceVersion"] = "2"
        gateway.caches.sandboxes.upsert(ready)
        [probe] = gateway.alive._tasks.values()
        stopped = sandbox_object(RIDS[0], "team-a", "s", 9, ready=False)  # the pod went away: the probe ends
        stopped["metadata"]["resourceVersion"] = "3"
        gateway.caches.sandboxes.upsert(stopped)
        await asyncio.wait_for(asyncio.gather(probe, return_exceptions=True), 60)  # its own callback ran first
        assert gateway.alive._tasks == {}
    finally:
        await gateway.alive.stop()
        await gateway.http.aclose()
        await gateway.kube.close()
