from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubehands.operator.config import OperatorConfig
from kubehands.operator.culling import CullAction, CullReason, cull_decision, last_activity, lifetime_start

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def body(
    state: str = "Running",
    generation: int = 1,
    observed: int | None = 1,
    spec: dict[str, Any] | None = None,
    **status: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "kh-a", "generation": generation, "creationTimestamp": ago(10_000)},
        "spec": {"state": state, **(spec or {})},
        "status": {"observedGeneration": observed, **status},
    }


CONFIG = OperatorConfig(idle_timeout_seconds=1200, paused_ttl_seconds=3600)


def test_idle_sandbox_is_paused() -> None:
    decision = cull_decision(body(lastActivityTime=ago(1300), readyTime=ago(5000)), CONFIG, NOW)
    assert decision is not None and decision.action is CullAction.PAUSE
    assert decision.reason is CullReason.IDLE_TIMEOUT and decision.reason == "IdleTimeout"


def test_recent_activity_keeps_it_running() -> None:
    assert cull_decision(body(lastActivityTime=ago(60)), CONFIG, NOW) is None


def test_a_resumed_sandbox_is_not_culled_for_old_activity() -> None:
    resumed = body(lastActivityTime=ago(90_000), podCreatedTime=ago(30))
    assert cull_decision(resumed, CONFIG, NOW) is None
    assert last_activity(resumed) == NOW - timedelta(seconds=30)


def test_resume_not_yet_observed_is_never_culled() -> None:
    assert cull_decision(body(generation=3, observed=2, lastActivityTime=ago(90_000)), CONFIG, NOW) is None


def test_a_starting_sandbox_is_not_idle() -> None:
    assert cull_decision(body(phase="Starting", lastActivityTime=ago(90_000)), CONFIG, NOW) is None
    assert cull_decision(body(phase="Failed", lastActivityTime=ago(90_000)), CONFIG, NOW) is not None


def test_without_activity_the_creation_time_counts() -> None:
    decision = cull_decision(body(), CONFIG, NOW)
    assert decision is not None and decision.action is CullAction.PAUSE


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"idleTimeoutSeconds": 0}, None),
        ({"idleTimeoutSeconds": 30}, CullAction.PAUSE),
        ({"idleTimeoutSeconds": 120}, None),
    ],
)
def test_per_sandbox_idle_timeout(spec: dict[str, Any], expected: CullAction | None) -> None:
    decision = cull_decision(body(spec=spec, lastActivityTime=ago(60)), CONFIG, NOW)
    assert (decision.action if decision else None) is expected


def test_paused_past_ttl_is_deleted() -> None:
    decision = cull_decision(body("Paused", pausedTime=ago(3700)), CONFIG, NOW)
    assert decision is not None and decision.action is CullAction.DELETE
    assert decision.reason is CullReason.PAUSED_TTL_EXPIRED and decision.reason == "PausedTTLExpired"
    assert "3600s" in decision.message


@pytest.mark.parametrize("status", [{"pausedTime": ago(100)}, {}])
def test_paused_within_ttl_or_not_yet_paused_is_kept(status: dict[str, Any]) -> None:
    assert cull_decision(body("Paused", **status), CONFIG, NOW) is None


def test_paused_ttl_zero_means_never() -> None:
    assert (
        cull_decision(body("Paused", spec={"pausedTTLSeconds": 0}, pausedTime=ago(10**7)), CONFIG, NOW)
        is None
    )


def test_a_sandbox_that_never_started_is_paused_then_deleted() -> None:
    """StartTimeout makes the phase Failed, which the culler treats like an idle Sandbox: paused after the
    idle timeout, deleted after the paused TTL, so a Sandbox that can never start does not live for ever."""
    from kubehands.operator.status import compute_status

    unschedulable = {
        "metadata": {"name": "kh-a"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"}
            ],
        },
    }
    config = OperatorConfig(idle_timeout_seconds=1200, paused_ttl_seconds=3600, start_timeout_seconds=600)
    stuck = body(  # created 10 000 s ago, never Ready
        phase="Starting",
        conditions=[
            {"type": "Ready", "status": "False", "reason": "Unschedulable", "lastTransitionTime": ago(10_000)},
            {"type": "Paused", "status": "False", "reason": "NotPaused", "lastTransitionTime": ago(10_000)},
        ],
    )
    assert cull_decision(stuck, config, NOW) is None  # starting is not idling
    stuck["status"] = compute_status(stuck, unschedulable, [], NOW, start_timeout_seconds=600)
    assert (stuck["status"]["phase"], stuck["status"]["conditions"][0]["reason"]) == ("Failed", "StartTimeout")

    decision = cull_decision(stuck, config, NOW)
    assert decision is not None and decision.action is CullAction.PAUSE

    paused = body("Paused", pausedTime=ago(3700))
    paused["status"]["conditions"] = stuck["status"]["conditions"]
    decision = cull_decision(paused, config, NOW)
    assert decision is not None and decision.action is CullAction.DELETE


def test_a_start_timeout_within_the_idle_timeout_is_kept_for_a_look() -> None:
    """The Failed status stays visible (and a restart possible) until the idle timeout has passed."""
    config = OperatorConfig(idle_timeout_seconds=1200, start_timeout_seconds=600)
    recent = body(phase="Failed", podCreatedTime=ago(700))
    recent["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "StartTimeout"}]
    assert cull_decision(recent, config, NOW) is None


def test_a_dormant_pool_member_is_never_culled() -> None:
    """A member is the pool's capacity; its claim removes the pool label, and from then on it is culled as usual."""
    member = body(lastActivityTime=ago(90_000))
    member["metadata"]["labels"] = {"kubehands.dev/pool": "warm", "kubehands.dev/pool-template": "abc"}
    assert cull_decision(member, CONFIG, NOW) is None
    member["status"]["phase"] = "Failed"  # the pool replaces failed members itself
    assert cull_decision(member, CONFIG, NOW) is None
    claimed = body(lastActivityTime=ago(90_000))
    claimed["metadata"]["annotations"] = {"kubehands.dev/claimed-from": "warm"}
    decision = cull_decision(claimed, CONFIG, NOW)
    assert decision is not None and decision.action is CullAction.PAUSE


# ---- maximum lifetime ------------------------------------------------------------------------------------------


def test_the_reasons_are_a_fixed_set_of_condition_reasons() -> None:
    """The handler counts culls by reason: the values are the stable CamelCase reasons of conditions and Events."""
    assert [r.value for r in CullReason] == ["IdleTimeout", "PausedTTLExpired", "MaxLifetimeExceeded"]


@pytest.mark.parametrize(
    "sandbox",
    [
        body(lastActivityTime=ago(1)),  # busy
        body(phase="Starting"),  # still starting
        body("Paused", pausedTime=ago(1)),  # paused within its TTL
        body(generation=3, observed=2),  # a spec change in flight
        body(phase="Failed"),
    ],
    ids=["busy", "starting", "paused", "generation-in-flight", "failed"],
)
def test_past_its_lifetime_a_sandbox_is_deleted_whatever_its_state(sandbox: dict[str, Any]) -> None:
    sandbox["spec"]["maxLifetimeSeconds"] = 9_000  # created 10 000 s ago
    decision = cull_decision(sandbox, OperatorConfig(idle_timeout_seconds=0, paused_ttl_seconds=0), NOW)
    assert decision is not None
    assert (decision.action, decision.reason) == (CullAction.DELETE, CullReason.MAX_LIFETIME_EXCEEDED)
    assert decision.reason == "MaxLifetimeExceeded"
    assert "9000s" in decision.message and ago(10_000)[:19] in decision.message


@pytest.mark.parametrize(("lifetime", "culled"), [(10_001, False), (10_000, True), (None, False)])
def test_the_lifetime_is_measured_from_creation(lifetime: int | None, culled: bool) -> None:
    sandbox = body(lastActivityTime=ago(1), spec={"maxLifetimeSeconds": lifetime} if lifetime else {})
    decision = cull_decision(sandbox, CONFIG, NOW)
    assert (decision is not None and decision.reason is CullReason.MAX_LIFETIME_EXCEEDED) is culled


def test_the_lifetime_wins_over_idle_culling() -> None:
    """Idle and past its lifetime: deleted, not merely paused (a resume would only restart the clock of idleness)."""
    sandbox = body(lastActivityTime=ago(9_000), spec={"maxLifetimeSeconds": 5_000})
    decision = cull_decision(sandbox, CONFIG, NOW)
    assert decision is not None and decision.reason is CullReason.MAX_LIFETIME_EXCEEDED


def test_a_claimed_member_lives_from_its_claim() -> None:
    """A pool member waited dormant since its creation; its session's lifetime starts at the claim."""
    claimed = body(lastActivityTime=ago(1), spec={"maxLifetimeSeconds": 3_600})  # created 10 000 s ago
    claimed["metadata"]["annotations"] = {"kubehands.dev/claimed-at": ago(3_000), "kubehands.dev/claimed-from": "p"}
    assert lifetime_start(claimed) == NOW - timedelta(seconds=3_000)
    assert cull_decision(claimed, CONFIG, NOW) is None
    claimed["metadata"]["annotations"]["kubehands.dev/claimed-at"] = ago(3_600)
    decision = cull_decision(claimed, CONFIG, NOW)
    assert decision is not None and decision.reason is CullReason.MAX_LIFETIME_EXCEEDED
    assert ago(3_600)[:19] in decision.message


def test_a_claim_time_that_is_no_timestamp_counts_from_creation() -> None:
    claimed = body(lastActivityTime=ago(1), spec={"maxLifetimeSeconds": 3_600})
    claimed["metadata"]["annotations"] = {"kubehands.dev/claimed-at": "yesterday"}
    assert lifetime_start(claimed) == NOW - timedelta(seconds=10_000)
    decision = cull_decision(claimed, CONFIG, NOW)
    assert decision is not None and decision.reason is CullReason.MAX_LIFETIME_EXCEEDED


def test_a_dormant_member_is_never_culled_for_its_lifetime() -> None:
    member = body(spec={"maxLifetimeSeconds": 1})
    member["metadata"]["labels"] = {"kubehands.dev/pool": "warm"}
    assert cull_decision(member, CONFIG, NOW) is None


def test_a_sandbox_being_deleted_is_left_alone() -> None:
    going = body("Paused", pausedTime=ago(90_000), spec={"maxLifetimeSeconds": 1})
    going["metadata"]["deletionTimestamp"] = ago(1)
    assert cull_decision(going, CONFIG, NOW) is None
