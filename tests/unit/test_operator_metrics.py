"""The operator's metrics: start latency from status timestamps, phase and pool numbers, cull reasons, error
classes, and the endpoint that serves them."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.crd import constants
from kubehands.crd.times import rfc3339
from kubehands.operator import metrics
from kubehands.operator.cli import port_clash
from kubehands.operator.config import OperatorConfig
from kubehands.operator.culling import CullAction, CullDecision, CullReason
from kubehands.operator.status import compute_status
from tests.helpers.processes import free_port

pytestmark = pytest.mark.unit
T0 = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sandbox(
    state: str = "Running", status: dict[str, Any] | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "kh-a",
            "namespace": "ns",
            "generation": 1,
            "creationTimestamp": rfc3339(T0),
            "labels": labels or {},
        },
        "spec": {"image": "i", "sessionKeySecretRef": {"name": "s"}, "state": state},
        "status": status or {},
    }


def pod(ready_since: float | None = None, created: float = 0) -> dict[str, Any]:
    """A scheduled pod, Running and Ready since `ready_since` seconds after T0, else still creating."""
    conditions = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": rfc3339(at(created))}]
    status: dict[str, Any] = {"phase": "Pending", "conditions": conditions}
    if ready_since is not None:
        status["phase"] = "Running"
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": rfc3339(at(ready_since))})
        status["containerStatuses"] = [
            {"name": "sandbox", "restartCount": 0, "state": {"running": {"startedAt": rfc3339(at(ready_since - 1))}}}
        ]
    return {"metadata": {"name": "kh-a", "uid": "u1", "creationTimestamp": rfc3339(at(created))}, "status": status}


def converge(body: dict[str, Any], pod_: dict[str, Any] | None, seconds: float) -> tuple[dict[str, Any], Any]:
    """One converge at T0 + seconds: (the body as it is afterwards, what `metrics.cold_start` says of it)."""
    desired = compute_status(body, pod_, [], at(seconds), start_timeout_seconds=600)
    return {**body, "status": {**body["status"], **desired}}, metrics.cold_start(body, desired)


def test_cold_start_counts_from_the_creation_to_the_pods_ready_time_once() -> None:
    # The first report comes 3 s after the creation (the claim's bind wait); the pod is Ready at 8 s, seen at 9 s.
    body, started = converge(sandbox(), pod(created=2.5), 3)
    assert started is None
    body, started = converge(body, pod(created=2.5), 5)
    assert started is None
    body, started = converge(body, pod(ready_since=8, created=2.5), 9)
    assert started == (metrics.START_COLD, 8.0)
    body, started = converge(body, pod(ready_since=8, created=2.5), 20)
    assert started is None  # still Ready: not a start


def test_a_loss_of_readiness_counts_from_the_loss() -> None:
    body, _ = converge(sandbox(), pod(created=1), 1)
    body, started = converge(body, pod(ready_since=6, created=1), 6)
    assert started == (metrics.START_COLD, 6.0)
    body, started = converge(body, pod(created=1), 100)  # readiness lost at 100 s
    assert started is None
    body, started = converge(body, pod(ready_since=104, created=1), 105)
    assert started == (metrics.START_COLD, 4.0)


def test_a_resume_counts_from_the_resume() -> None:
    body, _ = converge(sandbox(state="Paused"), None, 1)
    body = {**body, "spec": {**body["spec"], "state": "Running"}}
    body, started = converge(body, None, 500)  # the resume: Paused turns False now
    assert started is None
    body, started = converge(body, pod(ready_since=507, created=501), 508)
    assert started == (metrics.START_COLD, 7.0)


def test_a_pool_member_boot_is_labelled_apart() -> None:
    body, _ = converge(sandbox(labels={constants.LABEL_POOL: "python"}), pod(created=1), 1)
    _, started = converge(body, pod(ready_since=9, created=1), 10)
    assert started == (metrics.START_POOL_MEMBER, 9.0)


def test_a_ready_time_before_the_start_never_gives_a_negative_latency() -> None:
    body, _ = converge(sandbox(), pod(created=1), 1)
    _, started = converge(body, pod(ready_since=-5, created=1), 10)  # the node's clock is behind
    assert started == (metrics.START_COLD, 0.0)


def claimed(**annotations: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {constants.ANNOTATION_CLAIMED_AT: rfc3339(T0), **annotations}}}


def test_warm_start_is_the_claim_to_the_init_mark_once() -> None:
    ready = claimed(**{constants.ANNOTATION_INIT: constants.INIT_READY})
    assert metrics.warm_start(claimed(), ready, at(0.4)) == pytest.approx(0.4)
    assert metrics.warm_start(ready, ready, at(9)) is None  # an update after the mark
    assert metrics.warm_start(None, ready, at(9)) is None  # a resume or create: no transition seen
    assert metrics.warm_start(claimed(), claimed(), at(9)) is None  # init not done yet
    garbled = claimed(**{constants.ANNOTATION_CLAIMED_AT: "yesterday", constants.ANNOTATION_INIT: "ready"})
    assert metrics.warm_start({"metadata": {}}, garbled, at(9)) is None


def test_phase_counts_cover_every_phase_and_role() -> None:
    bodies = [
        {"status": {"phase": "Running"}},
        {"status": {"phase": "Running"}},
        {"metadata": {"labels": {constants.LABEL_POOL: "p"}}, "status": {"phase": "Starting"}},
        {"status": {}},
        {"status": {"phase": "Failed"}},
    ]
    counts = metrics.phase_counts(bodies)
    assert counts[("Running", "session")] == 2
    assert counts[("Starting", "pool_member")] == 1
    assert counts[("Unknown", "session")] == 1
    assert counts[("Failed", "session")] == 1
    assert counts[("Paused", "session")] == 0 and counts[("Paused", "pool_member")] == 0
    assert sum(counts.values()) == len(bodies)
    assert len(counts) == 10  # 4 phases and Unknown, times 2 roles


def test_pool_numbers() -> None:
    assert metrics.pool_numbers({"status": {"ready": 2, "desired": 3, "claimed": 1}}) == (2, 3, 1)
    assert metrics.pool_numbers({}) == (0, 0, 0)


def test_cull_reasons() -> None:
    pause = CullDecision(CullAction.PAUSE, CullReason.IDLE_TIMEOUT, "idle")
    delete = CullDecision(CullAction.DELETE, CullReason.PAUSED_TTL_EXPIRED, "ttl")
    lifetime = CullDecision(CullAction.DELETE, CullReason.MAX_LIFETIME_EXCEEDED, "old")
    assert metrics.cull_reason(pause, {"status": {"phase": "Running"}}) == metrics.CULL_IDLE
    assert metrics.cull_reason(pause, {"status": {"phase": "Failed"}}) == metrics.CULL_FAILED
    assert metrics.cull_reason(delete, {"status": {"phase": "Paused"}}) == metrics.CULL_PAUSED_TTL
    for phase in ("Running", "Paused", "Failed"):
        assert metrics.cull_reason(lifetime, {"status": {"phase": phase}}) == metrics.CULL_MAX_LIFETIME


def test_error_classes_and_counting() -> None:
    assert metrics.error_class(TimeoutError()) == "timeout"
    assert metrics.error_class(ApiException(status=500)) == "api"
    assert metrics.error_class(aiohttp.ClientConnectionError()) == "connection"
    assert metrics.error_class(KeyError("x")) == "unexpected"

    def count() -> float:
        value = metrics.REGISTRY.get_sample_value(
            "kubehands_operator_errors_total", {"handler": "culling", "error": "timeout"}
        )
        assert value is not None  # exported at 0 from the start
        return value

    before = count()
    with pytest.raises(TimeoutError), metrics.counting_errors("culling"):
        raise TimeoutError
    with metrics.counting_errors("culling"):
        pass
    assert count() == before + 1


def test_refresh_sets_gauges_and_forgets_deleted_pools() -> None:
    pool = {"metadata": {"namespace": "ns", "name": "python"}, "status": {"ready": 2, "desired": 3, "claimed": 4}}
    metrics.refresh([{"status": {"phase": "Paused"}}], [pool])
    sample = metrics.REGISTRY.get_sample_value
    assert sample("kubehands_operator_sandboxes", {"phase": "Paused", "role": "session"}) == 1
    assert sample("kubehands_operator_pool_ready", {"namespace": "ns", "pool": "python"}) == 2
    assert sample("kubehands_operator_pool_desired", {"namespace": "ns", "pool": "python"}) == 3
    assert sample("kubehands_operator_pool_claimed", {"namespace": "ns", "pool": "python"}) == 4
    metrics.refresh([], [])
    assert sample("kubehands_operator_sandboxes", {"phase": "Paused", "role": "session"}) == 0
    assert sample("kubehands_operator_pool_ready", {"namespace": "ns", "pool": "python"}) is None


def test_endpoint_serves_the_registry_after_refreshing() -> None:
    port = free_port()
    refreshed: list[bool] = []

    async def scrape() -> httpx.Response:
        runner = await metrics.serve("127.0.0.1", port, lambda: refreshed.append(True))
        try:
            async with httpx.AsyncClient() as client:
                missing = await client.get(f"http://127.0.0.1:{port}/other")
                assert missing.status_code == 404
                return await client.get(f"http://127.0.0.1:{port}/metrics")
        finally:
            await runner.cleanup()

    response = asyncio.run(scrape())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'kubehands_operator_reconciles_total{kind="Sandbox",outcome="ok"}' in response.text
    assert "kubehands_operator_sandbox_start_seconds_bucket" in response.text
    assert refreshed == [True]


def test_a_port_in_use_fails_to_serve() -> None:
    async def twice() -> None:
        port = free_port()
        runner = await metrics.serve("127.0.0.1", port, lambda: None)
        try:
            with pytest.raises(OSError):
                await metrics.serve("127.0.0.1", port, lambda: None)
        finally:
            await runner.cleanup()

    asyncio.run(twice())


def test_metrics_port_setting_and_the_liveness_clash(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorConfig().metrics_port == 8090
    monkeypatch.setenv("KUBEHANDS_METRICS_PORT", "0")
    assert OperatorConfig().metrics_port == 0
    monkeypatch.setenv("KUBEHANDS_METRICS_PORT", "70000")
    with pytest.raises(ValueError):
        OperatorConfig()
    clash = port_clash("http://0.0.0.0:8090/healthz", 8090)
    assert clash is not None and "KUBEHANDS_METRICS_PORT" in clash
    assert port_clash("http://0.0.0.0:8080/healthz", 8090) is None
    assert port_clash("http://0.0.0.0:8090/healthz", 0) is None  # metrics off
    assert port_clash(None, 8090) is None
