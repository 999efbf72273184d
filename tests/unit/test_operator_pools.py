"""Warm pools, pure: member builders, `plan_pool` case by case, the pool's status, orphan Secrets."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from kubehands.crd.model import Sandbox
from kubehands.crd.pool_model import SandboxPool
from kubehands.crd.times import rfc3339
from kubehands.operator import pools
from kubehands.operator.builders import build_pod
from kubehands.operator.config import OperatorConfig
from kubehands.operator.pools import PoolPlan, build_member, orphan_candidates, plan_pool, pool_status, template_hash
from kubehands.spec.pool_match import Matchability, Mismatch

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)
POOL_UID = "pool-uid-1"


def ago(seconds: float) -> str:
    return rfc3339(NOW - timedelta(seconds=seconds))


def make_pool(size: int = 3, name: str = "warm", **template: Any) -> SandboxPool:
    return SandboxPool.model_validate(
        {
            "metadata": {"name": name, "namespace": "ns", "uid": POOL_UID, "generation": 4},
            "spec": {"size": size, "template": {"image": "agent:1", **template}},
        }
    )


POOL = make_pool()
HASH = template_hash(POOL)


def test_build_member() -> None:
    template = {"env": [{"name": "LOG_JSON", "value": "true"}, {"name": "OH_DEFERRED_INIT", "value": "false"}]}
    pool = make_pool(**template, imagePullPolicy="Never", nodeSelector={"a": "b"})
    secret, sandbox = build_member(pool, "kh-abcdefghijkl", "h1", "the-key")
    pool_ref = {"apiVersion": "kubehands.dev/v1alpha1", "kind": "SandboxPool", "name": "warm", "uid": POOL_UID}
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": "kh-abcdefghijkl-init",
            "namespace": "ns",
            "labels": {
                "app.kubernetes.io/part-of": "kubehands",
                "app.kubernetes.io/managed-by": "kubehands-operator",
                "app.kubernetes.io/component": "pool-init",
                "kubehands.dev/pool": "warm",
            },
            "annotations": {"kubehands.dev/sandbox-name": "kh-abcdefghijkl"},
            # Not the controller: the member adopts it as its session Secret.
            "ownerReferences": [{**pool_ref, "controller": False, "blockOwnerDeletion": False}],
        },
        "stringData": {"session-api-key": "the-key"},
    }
    assert sandbox == {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": {
            "name": "kh-abcdefghijkl",
            "namespace": "ns",
            "labels": {"kubehands.dev/pool": "warm", "kubehands.dev/pool-template": "h1"},
            "ownerReferences": [{**pool_ref, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "image": "agent:1",
            "imagePullPolicy": "Never",
            "workspace": {"size": "10Gi", "mountPath": "/workspace"},
            "nodeSelector": {"a": "b"},
            "tolerations": [],
            # The template's own OH_DEFERRED_INIT cannot turn dormancy off.
            "env": [{"name": "LOG_JSON", "value": "true"}, {"name": "OH_DEFERRED_INIT", "value": "true"}],
            "state": "Running",
            "sessionKeySecretRef": {"name": "kh-abcdefghijkl-init", "key": "session-api-key"},
        },
    }


def test_a_members_pod_boots_dormant_with_its_init_key_from_the_secret() -> None:
    """The key the gateway presents as X-Init-API-Key is the pod's OH_SECRET_KEY, taken from the Secret."""
    _, body = build_member(POOL, "kh-abcdefghijkl", HASH, "k")
    member = Sandbox.model_validate({**body, "metadata": {**body["metadata"], "uid": "m-1"}})
    env = {e["name"]: e for e in build_pod(member, OperatorConfig())["spec"]["containers"][0]["env"]}
    from_secret = {"secretKeyRef": {"name": "kh-abcdefghijkl-init", "key": "session-api-key"}}
    assert env["OH_SECRET_KEY"]["valueFrom"] == env["OH_SESSION_API_KEYS_0"]["valueFrom"] == from_secret
    assert env["OH_DEFERRED_INIT"] == {"name": "OH_DEFERRED_INIT", "value": "true"}
    assert all("value" not in e or e["value"] != "k" for e in env.values())


def test_template_hash() -> None:
    assert template_hash(make_pool()) == HASH
    assert template_hash(make_pool(size=7)) == HASH  # the size is not the template
    assert template_hash(make_pool(name="other")) == HASH
    assert template_hash(make_pool(image="agent:2")) != HASH
    assert template_hash(make_pool(env=[{"name": "A", "value": "1"}])) != HASH
    # Defaults count as the API server stores them: an explicit default is the same template.
    assert template_hash(make_pool(workspace={"size": "10Gi"})) == HASH
    assert len(HASH) == 16 and HASH.isalnum()  # a label value


def test_validate_pool_runs_the_sandbox_checks_on_the_member() -> None:
    strict = OperatorConfig(require_runtime_class=True, runtime_class_map={"gvisor": "gvisor"})
    assert pools.validate_pool(make_pool(runtimeClassName="gvisor"), strict) == []
    [problem] = pools.validate_pool(make_pool(runtimeClassName="kata"), strict)
    assert problem.startswith("spec.template: runtime class 'kata' is not available here")
    [problem] = pools.validate_pool(make_pool(), strict)
    assert "runtimeClassName is required" in problem
    assert pools.validate_pool(make_pool(), OperatorConfig()) == []


def member(
    name: str,
    *,
    template: str | None = HASH,
    pool: str | None = "warm",
    phase: str | None = "Starting",
    pod_status: str = "pending",
    reason: str = "ContainerCreating",
    not_ready_for: float = 5,
    created_ago: float = 10,
    deleting: bool = False,
) -> dict[str, Any]:
    labels = {}
    if pool is not None:
        labels["kubehands.dev/pool"] = pool
    if template is not None:
        labels["kubehands.dev/pool-template"] = template
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "labels": labels,
        "resourceVersion": f"rv-{name}",
        "creationTimestamp": ago(created_ago),
    }
    if deleting:
        metadata["deletionTimestamp"] = ago(1)
    ready = phase == "Running"
    condition = {
        "type": "Ready",
        "status": str(ready),
        "reason": "PodReady" if ready else reason,
        "message": "m",
        "lastTransitionTime": ago(not_ready_for),
    }
    status = {"phase": phase, "podStatus": pod_status, "conditions": [condition]} if phase else {}
    return {"metadata": metadata, "spec": {}, "status": status}


def running(name: str, **kwargs: Any) -> dict[str, Any]:
    return member(name, phase="Running", pod_status="ready", **kwargs)


def failed(name: str, reason: str = "ImagePullError", not_ready_for: float = 60, **kwargs: Any) -> dict[str, Any]:
    return member(name, phase="Failed", pod_status="failed", reason=reason, not_ready_for=not_ready_for, **kwargs)


PLAN_CASES = [
    # (id, pool, members, created, deleted, ready)
    ("empty pool: fill it", POOL, [], 3, [], 0),
    ("full and ready: nothing", POOL, [running("a"), running("b"), running("c")], 0, [], 3),
    ("full, still starting: nothing", POOL, [member("a"), member("b"), running("c")], 0, [], 1),
    ("one short: one more", POOL, [running("a"), running("b")], 1, [], 2),
    ("size 0: nothing", make_pool(0), [], 0, [], 0),
    ("scaled down: newest go first", make_pool(1), [running("old", created_ago=100), running("new")], 0, ["new"], 1),
    (
        "scaled down: not-ready members go before ready ones",
        make_pool(1),
        [running("ready-new", created_ago=1), member("starting-old", created_ago=100)],
        0,
        ["starting-old"],
        1,
    ),
    ("scaled to 0: every member goes", make_pool(0), [running("a"), member("b")], 0, ["a", "b"], 0),
    (
        "outdated template: replaced",
        POOL,
        [running("a"), running("b", template="old"), running("c", template=None)],
        2,
        ["b", "c"],
        1,
    ),
    ("failed past the grace: replaced", POOL, [running("a"), running("b"), failed("c")], 1, ["c"], 2),
    (
        "failed within the grace: kept for now",
        POOL,
        [running("a"), running("b"), failed("c", not_ready_for=10)],
        0,
        [],
        2,
    ),
    ("start timeout past the grace: replaced", POOL, [failed("a", "StartTimeout"), running("b"), running("c")], 1,
     ["a"], 2),
    (
        "failed within the grace, scaled down: it goes first",
        make_pool(2),
        [running("a"), running("b"), failed("c", not_ready_for=10, created_ago=100)],
        0,
        ["c"],
        2,
    ),
    (
        "a refused member (InvalidSpec) blocks the refill and is kept",
        POOL,
        [failed("a", "InvalidSpec", not_ready_for=600)],
        0,
        [],
        0,
    ),
    (
        "an outdated refused member is replaced",
        POOL,
        [failed("a", "InvalidSpec", template="old")],
        3,
        ["a"],
        0,
    ),
    (
        "claimed members (no pool label) are never counted or touched",
        POOL,
        [running("a"), running("claimed", pool=None, template=None), member("other", pool="other-pool")],
        2,
        [],
        1,
    ),
    ("members being deleted are not counted", POOL, [running("a"), running("b", deleting=True)], 2, [], 1),
]


@pytest.mark.parametrize(
    ("pool", "members", "created", "deleted", "ready"), [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES]
)
def test_plan_pool(
    pool: SandboxPool, members: list[dict[str, Any]], created: int, deleted: list[str], ready: int
) -> None:
    decided = plan_pool(pool, members, NOW)
    assert decided.create == created
    assert sorted(d.name for d in decided.delete) == sorted(deleted)
    assert decided.ready == ready
    assert decided.template_hash == template_hash(pool)
    assert all(d.resource_version == f"rv-{d.name}" and d.reason for d in decided.delete)


def test_plan_pool_never_exceeds_the_size() -> None:
    for _, pool, members, *_ in PLAN_CASES:
        decided = plan_pool(pool, members, NOW)
        remaining = len(pools.members_of(pool.name, members)) - len(decided.delete)
        assert remaining + decided.create <= max(pool.spec.size, remaining)
        if decided.blocked is None:
            assert remaining + decided.create == pool.spec.size


def test_an_invalid_pool_retires_every_member() -> None:
    members = [running("a"), member("b"), running("claimed", pool=None)]
    decided = plan_pool(POOL, members, NOW, problems=["spec.template: bad"])
    assert (decided.create, sorted(d.name for d in decided.delete), decided.ready) == (0, ["a", "b"], 0)
    assert decided.template_hash == HASH


def pool_body(size: int = 3, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "warm", "generation": 4}, "spec": {"size": size}, "status": status}


def ready_condition(status: dict[str, Any]) -> dict[str, Any]:
    [condition] = status["conditions"]
    return condition


STATUS_CASES = [
    # (id, plan, size, problems, Ready status, reason, message)
    ("full", PoolPlan(0, (), 3, HASH), 3, [], "True", "PoolReady", "3 of 3 members ready"),
    ("size 0 is full", PoolPlan(0, (), 0, HASH), 0, [], "True", "PoolReady", "0 of 0 members ready"),
    ("filling", PoolPlan(2, (), 1, HASH), 3, [], "False", "Filling", "1 of 3 members ready"),
    (
        "a member failed",
        PoolPlan(1, (), 2, HASH, failing="member kh-x: ImagePullError: no such image"),
        3,
        [],
        "False",
        "MemberFailed",
        "2 of 3 members ready; member kh-x: ImagePullError: no such image",
    ),
    (
        "invalid",
        PoolPlan(0, (), 0, HASH),
        3,
        ["spec.template: runtime class 'kata' is not available here"],
        "False",
        "InvalidSpec",
        "invalid spec: spec.template: runtime class 'kata' is not available here",
    ),
    (
        "a member was refused",
        PoolPlan(0, (), 0, HASH, blocked="member kh-x: InvalidSpec: the API server refused the pod"),
        3,
        [],
        "False",
        "InvalidSpec",
        "no new members: member kh-x: InvalidSpec: the API server refused the pod",
    ),
]


@pytest.mark.parametrize(
    ("plan", "size", "problems", "ready", "reason", "message"),
    [c[1:] for c in STATUS_CASES],
    ids=[c[0] for c in STATUS_CASES],
)
def test_pool_status(
    plan: PoolPlan, size: int, problems: list[str], ready: str, reason: str, message: str
) -> None:
    status = pool_status(pool_body(size), plan, 5, problems, NOW)
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "ready": plan.ready,
        "claimed": 5,
        "desired": size,
        "selector": "kubehands.dev/pool=warm",
        "templateHash": HASH,
        "observedGeneration": 4,
    }
    assert ready_condition(status) == {
        "type": "Ready",
        "status": ready,
        "reason": reason,
        "message": message,
        "lastTransitionTime": rfc3339(NOW),
        "observedGeneration": 4,
    }


def test_pool_status_keeps_the_transition_time_while_ready_is_unchanged() -> None:
    first = pool_status(pool_body(), PoolPlan(3, (), 0, HASH), 0, [], NOW - timedelta(minutes=5))
    later = pool_status(pool_body(**first), PoolPlan(0, (), 2, HASH), 0, [], NOW)
    assert ready_condition(later)["lastTransitionTime"] == ready_condition(first)["lastTransitionTime"]
    full = pool_status(pool_body(**later), PoolPlan(0, (), 3, HASH), 0, [], NOW)
    assert ready_condition(full)["lastTransitionTime"] == rfc3339(NOW)


def secret(
    name: str = "kh-a-init",
    member_name: str | None = "kh-a",
    owners: tuple[str, ...] = ("SandboxPool",),
    created_ago: float = 120,
) -> dict[str, Any]:
    annotations = {"kubehands.dev/sandbox-name": member_name} if member_name else {}
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "labels": {"kubehands.dev/pool": "warm", "app.kubernetes.io/component": "pool-init"},
            "annotations": annotations,
            "ownerReferences": [{"kind": kind, "name": "x"} for kind in owners],
            "creationTimestamp": ago(created_ago),
        }
    }


ORPHAN_CASES = [
    ("no Sandbox owns it, old: candidate", secret(), True),
    ("its member adopted it: not", secret(owners=("SandboxPool", "Sandbox")), False),
    ("too young (its Sandbox is being created): not", secret(created_ago=30), False),
    ("outlived its member (the pool still owns it): candidate", secret(owners=("SandboxPool",)), True),
    ("no owner at all: candidate", secret(owners=()), True),
    ("not built by the pool (no member annotation): not", secret(member_name=None), False),
    ("named otherwise than its member's Secret: not", secret(name="kh-a-session"), False),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in ORPHAN_CASES], ids=[c[0] for c in ORPHAN_CASES])
def test_orphan_candidates(body: dict[str, Any], expected: bool) -> None:
    found = orphan_candidates([body], NOW)
    assert bool(found) is expected
    if found:
        assert found[0] == pools.OrphanCandidate(body["metadata"]["name"], body["metadata"]["uid"], "kh-a")


def test_pool_of_and_claimed_from() -> None:
    assert pools.pool_of(running("a")) == "warm"
    assert pools.pool_of(running("a", pool=None)) is None
    claimed = {"metadata": {"annotations": {"kubehands.dev/claimed-from": "warm"}}}
    assert pools.claimed_from(claimed) == "warm" and pools.claimed_from(running("a")) is None


# ---- templates no /start can match (the operator's pool_match_check) -----------------------------------------

UNMATCHABLE = Matchability(never=(Mismatch("ResourcesNotOffered", "resources: the template has ..."),))


def test_an_unmatchable_pool_retires_every_member_and_makes_none() -> None:
    members = [running("a"), member("b"), running("claimed", pool=None)]
    decided = plan_pool(POOL, members, NOW, unmatchable=UNMATCHABLE.never)
    assert (decided.create, sorted(d.name for d in decided.delete), decided.ready) == (0, ["a", "b"], 0)
    assert {d.reason for d in decided.delete} == {"no /start can match the pool's template"}
    assert plan_pool(make_pool(size=2), [], NOW, unmatchable=()).create == 2  # matchable: filled as usual


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


def test_pool_status_of_an_unmatchable_pool() -> None:
    status = pool_status(pool_body(), PoolPlan(0, (), 0, HASH), 0, [], NOW, UNMATCHABLE)
    message = "no /start can match this template: resources: the template has ..."
    assert conditions(status) == {
        "Ready": ("False", "ResourcesNotOffered", message),
        "Matchable": ("False", "ResourcesNotOffered", message),
    }
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Matchable"]
    # An invalid spec is reported first: it is what to fix first.
    invalid = pool_status(pool_body(), PoolPlan(0, (), 0, HASH), 0, ["spec.template: bad"], NOW, UNMATCHABLE)
    assert conditions(invalid)["Ready"][1] == "InvalidSpec"


def test_pool_status_of_a_matchable_pool_and_of_an_unchecked_one() -> None:
    before = pool_status(pool_body(), PoolPlan(0, (), 0, HASH), 0, [], NOW - timedelta(minutes=5), UNMATCHABLE)
    fixed = pool_status(pool_body(**before), PoolPlan(3, (), 0, HASH), 0, [], NOW, Matchability())
    assert conditions(fixed) == {
        "Ready": ("False", "Filling", "0 of 3 members ready"),
        "Matchable": ("True", "TemplateMatchable", "a /start can match this template"),
    }
    overridden = Matchability(overrides=(Mismatch("GatewayEnvMismatch", "env RUNTIME_URL: ..."),))
    warned = pool_status(pool_body(**fixed), PoolPlan(0, (), 3, HASH), 0, [], NOW, overridden)
    assert conditions(warned)["Matchable"] == (
        "True",
        "GatewayEnvOverridden",
        "only a /start that sends these variables itself can match: env RUNTIME_URL: ...",
    )
    assert conditions(warned)["Ready"][1] == "PoolReady"
    # The check turned off: a stale Matchable condition goes.
    unchecked = pool_status(pool_body(**warned), PoolPlan(0, (), 3, HASH), 0, [], NOW)
    assert set(conditions(unchecked)) == {"Ready"}


def test_the_operator_reads_the_gateway_s_settings_only_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEHANDS_ROUTING_MODE", "subdomain")
    monkeypatch.setenv("KUBEHANDS_DOMAIN", "sandboxes.example.com")
    assert OperatorConfig().gateway_settings() is None
    monkeypatch.setenv("KUBEHANDS_POOL_MATCH_CHECK", "true")
    gateway = OperatorConfig().gateway_settings()
    assert gateway is not None and (gateway.routing_mode, gateway.domain) == ("subdomain", "sandboxes.example.com")
    monkeypatch.delenv("KUBEHANDS_DOMAIN")
    with pytest.raises(ValidationError, match="KUBEHANDS_DOMAIN is required"):
        OperatorConfig().gateway_settings()  # the operator does not start with settings the gateway refuses
