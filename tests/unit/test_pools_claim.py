"""The claim of a warm-pool member, as pure decisions and patch bodies: which members may be claimed, why a
/start was not served warm, what the one claim patch makes of the member, what a claimed sandbox reads as
while its init is pending, when any gateway restarts a claimed sandbox cold, and the pools a key is shown."""

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubehands.api import runtime
from kubehands.api.keys import KeyRecord
from kubehands.api.pools import claims as pools
from kubehands.api.settings import Settings
from kubehands.crd.model import Sandbox
from kubehands.spec import objects
from kubehands.spec import pools as pool_rule
from kubehands.spec.request import StartRequest

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
MEMBER = "kh-member000001"
CALLER = KeyRecord(name="team-a", digest="0" * 64)
SETTINGS = Settings(public_url="https://gw.test")
REQUEST = StartRequest.model_validate(
    {"image": "ghcr.io/openhands/agent-server:1.58.2-python", "session_id": "S1", "environment": {"X": "1"}}
)
COLD = objects.build_sandbox(REQUEST, CALLER, SETTINGS, MEMBER, "kh-session-abc", session_key_sha256="ab" * 32)
TEMPLATE = pool_rule.template_from_spec(COLD["spec"])


def make_pool(name: str = "p", template: dict[str, Any] | None = None, template_hash: str | None = "h1") -> dict:
    pool: dict[str, Any] = {
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {"size": 2, "template": template or TEMPLATE},
        "status": {},
    }
    if template_hash:
        pool["status"]["templateHash"] = template_hash
    return pool


def make_member(name: str = MEMBER, pool: str = "p", template_hash: str = "h1", **status: Any) -> dict[str, Any]:
    """A member as the operator leaves it once its dormant pod is ready (docs/design/0010-warm-pools.md)."""
    return {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "41",
            "generation": 1,
            "labels": {"kubehands.dev/pool": pool, "kubehands.dev/pool-template": template_hash},
            "ownerReferences": [
                {
                    "apiVersion": "kubehands.dev/v1alpha1",
                    "kind": "SandboxPool",
                    "name": pool,
                    "uid": f"uid-{pool}",
                    "controller": True,
                }
            ],
        },
        "spec": {
            **copy.deepcopy(TEMPLATE),
            "env": [*TEMPLATE["env"], {"name": "OH_DEFERRED_INIT", "value": "true"}],
            "state": "Running",
            "sessionKeySecretRef": {"name": f"{name}-init", "key": "session-api-key"},
            "ports": [{"name": "agent", "containerPort": 60000}],
        },
        "status": {
            "phase": "Running",
            "podStatus": "ready",
            "podName": name,
            "podUID": f"pod-uid-{name}",
            "podIP": "10.0.0.7",
            "observedGeneration": 1,
            "restartCount": 0,
            **status,
        },
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---- claimable members and miss reasons ----------------------------------------------------------------


def _changed(member: dict[str, Any], path: str | tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy with the field at `path` (dotted, or a tuple of keys) set, or removed when `value` is None."""
    changed = copy.deepcopy(member)
    *parents, last = path.split(".") if isinstance(path, str) else path
    node = changed
    for part in parents:
        node = node[part]
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return changed


CLAIMABLE: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("ready member", make_member(), make_pool(), True),
    ("the pool has no template hash yet", make_member(), make_pool(template_hash=None), True),
    ("built from an older template", make_member(template_hash="h0"), make_pool(), False),
    ("another pool's", make_member(pool="q"), make_pool(), False),
    ("claimed: no pool label", _changed(make_member(), "metadata.labels", {}), make_pool(), False),
    (
        "being deleted",
        _changed(make_member(), "metadata.deletionTimestamp", "2026-01-01T00:00:00Z"),
        make_pool(),
        False,
    ),
    ("pod not ready", make_member(podStatus="running"), make_pool(), False),
    ("phase starting", make_member(phase="Starting"), make_pool(), False),
    ("status of an older generation", make_member(observedGeneration=0), make_pool(), False),
    ("no pod uid to name in the claim", _changed(make_member(), "status.podUID", None), make_pool(), False),
    ("no pod IP to initialise", _changed(make_member(), "status.podIP", None), make_pool(), False),
    ("paused", _changed(make_member(), "spec.state", "Paused"), make_pool(), False),
]


@pytest.mark.parametrize(("member", "pool", "expected"), [c[1:] for c in CLAIMABLE], ids=[c[0] for c in CLAIMABLE])
def test_claimable(member: dict[str, Any], pool: dict[str, Any], expected: bool) -> None:
    assert pools.claimable(member, pool) is expected


OTHER = {**TEMPLATE, "image": "ghcr.io/openhands/agent-server:1.0.0-python"}

CANDIDATES: list[
    tuple[str, list[dict[str, Any]], dict[str, list[str]], list[str] | None, list[tuple[str, str]], str | None]
] = [
    ("no pools", [], {}, None, [], "no_pool"),
    ("no pool matches", [make_pool("p", OTHER)], {"p": ["m1"]}, None, [], "no_pool"),
    ("matches, but the key may not use it", [make_pool("p")], {"p": ["m1"]}, ["q"], [], "not_allowed"),
    ("matches, but the key's profile lists no pool", [make_pool("p")], {"p": ["m1"]}, [], [], "not_allowed"),
    ("matches, no ready member", [make_pool("p")], {"p": []}, None, [], "empty"),
    (
        "every member of every matching pool the key may use",
        [make_pool("p"), make_pool("q"), make_pool("r", OTHER)],
        {"p": ["m1"], "q": ["m2", "m3"], "r": ["m4"]},
        None,
        [("p", "m1"), ("q", "m2"), ("q", "m3")],
        None,
    ),
    (
        "only the allowed pools",
        [make_pool("p"), make_pool("q")],
        {"p": ["m1"], "q": ["m2"]},
        ["q"],
        [("q", "m2")],
        None,
    ),
    (
        "a pool being deleted",
        [_changed(make_pool("p"), "metadata.deletionTimestamp", "x")],
        {"p": ["m1"]},
        None,
        [],
        "no_pool",
    ),
]


@pytest.mark.parametrize(
    ("pool_list", "members", "permitted", "expected", "miss"),
    [c[1:] for c in CANDIDATES],
    ids=[c[0] for c in CANDIDATES],
)
def test_candidates_and_miss_reasons(
    pool_list: list[dict[str, Any]],
    members: dict[str, list[str]],
    permitted: list[str] | None,
    expected: list[tuple[str, str]],
    miss: str | None,
) -> None:
    def of(pool: dict[str, Any]) -> list[dict[str, Any]]:
        return [make_member(n, pool["metadata"]["name"]) for n in members.get(pool["metadata"]["name"], [])]

    found, reason = pools.candidates(pool_list, of, permitted, COLD["spec"])
    assert [(p, m["metadata"]["name"]) for p, m in found] == expected
    assert reason == miss
    assert reason is None or reason in pools.MISS_REASONS


def _spec(**body: Any) -> dict[str, Any]:
    request = StartRequest.model_validate({**REQUEST.model_dump(exclude_none=True), **body})
    return objects.build_sandbox(request, CALLER, SETTINGS, MEMBER, "kh-session-abc")["spec"]


SDK_LIKE = {"working_dir": "/", "run_as_user": 10001, "fs_group": 10001}
APP_LIKE = {"working_dir": "/workspace", "run_as_user": 10001, "run_as_group": 10001, "fs_group": 10001}
APP_POOL = make_pool("b", pool_rule.template_from_spec(_spec(**APP_LIKE)))
BOOTED = {**TEMPLATE, "env": [{"name": "OH_ENABLE_VNC", "value": "0"}, {"name": "TEAM_TOKEN_URL", "value": "x"}]}

REASONS: list[tuple[str, list[dict[str, Any]], list[str] | None, str, dict[str, Any], str]] = [
    ("no pool at all", [], None, "no_pool", {}, "no_pool"),
    ("only a pool being deleted", [_changed(make_pool("p"), "metadata.deletionTimestamp", "x")], None, "no_pool", {},
     "no_pool"),
    ("another image", [make_pool("p", OTHER)], None, "no_pool", {}, "mismatch: image"),
    # the closest pool: the one of the same image, not the first one
    ("the closest pool's field", [make_pool("a", OTHER), APP_POOL], None, "no_pool", SDK_LIKE, "mismatch: workingDir"),
    ("the SDK's ids against the app's, same working dir",
     [APP_POOL], None, "no_pool",
     {**SDK_LIKE, "working_dir": "/workspace"}, "mismatch: securityContext"),
    # among the pools the key may use: another pool that differs later does not count
    ("the key's pools first", [make_pool("a", OTHER), APP_POOL], ["a"], "no_pool", SDK_LIKE, "mismatch: image"),
    ("a boot-only variable is named", [make_pool("p", BOOTED)], None, "no_pool", {}, "mismatch: env.OH_ENABLE_VNC"),
    ("an administrator's variable is not named", [make_pool("p", BOOTED)], None, "no_pool",
     {"environment": {"X": "1", "OH_ENABLE_VNC": "0"}}, "mismatch: env"),
    ("the request's own variable is named", [make_pool("p", BOOTED)], None, "no_pool",
     {"environment": {"X": "1", "OH_ENABLE_VNC": "0", "TEAM_TOKEN_URL": "y"}}, "mismatch: env.TEAM_TOKEN_URL"),
    ("other miss reasons as they are", [make_pool("p")], ["q"], "not_allowed", {}, "not_allowed"),
    ("an empty pool", [make_pool("p")], None, "empty", {}, "empty"),
]


@pytest.mark.parametrize(
    ("pool_list", "permitted", "miss", "body", "expected"), [c[1:] for c in REASONS], ids=[c[0] for c in REASONS]
)
def test_a_cold_start_says_why(
    pool_list: list[dict[str, Any]], permitted: list[str] | None, miss: str, body: dict[str, Any], expected: str
) -> None:
    """The runtime object's `cold_start_reason`: the miss reason, or for `no_pool` while pools exist the field the
    closest pool differs in. A template variable's name is shown only when it is boot-only or the request's own."""
    spec = _spec(**body)
    assert pools.cold_start_reason(miss, pool_list, permitted, spec) == expected
    field = pools.closest_mismatch(pool_list, permitted, spec)
    if expected.startswith(pools.MISMATCH_PREFIX):
        assert field is not None and pools.mismatch_label(field) in pools.MISMATCH_LABELS


def test_a_template_variable_of_an_administrator_is_not_named() -> None:
    template = {**TEMPLATE, "env": [{"name": "TEAM_TOKEN_URL", "value": "https://secret.example"}]}
    assert pools.cold_start_reason("no_pool", [make_pool("p", template)], None, COLD["spec"]) == "mismatch: env"
    assert pools.mismatch_label("env.TEAM_TOKEN_URL") == "env"
    assert pools.mismatch_label("workingDir") == "workingDir"


# ---- the claim patch ----------------------------------------------------------------------------------


def test_the_claim_patch_makes_the_member_the_sessions_sandbox() -> None:
    member = make_member(restartCount=2)
    patch = pools.claim_patch(member, COLD, "p", NOW)
    # one patch, only valid on the version of the member the gateway chose: a second claim gets 409
    assert patch["metadata"]["resourceVersion"] == "41"
    claimed = merge_patch(member, patch)
    meta = claimed["metadata"]
    assert meta["labels"] == COLD["metadata"]["labels"]  # the pool's labels are gone: it no longer counts it
    assert "ownerReferences" not in meta  # deleting the pool must not delete a user's session
    assert meta["annotations"] == {
        **COLD["metadata"]["annotations"],
        "kubehands.dev/claimed-pod": f"pod-uid-{MEMBER}",  # the operator keeps this pod despite the new spec
        "kubehands.dev/claimed-from": "p",
        "kubehands.dev/claimed-at": "2026-03-01T12:00:00Z",
        "kubehands.dev/claimed-restarts": "2",
        "kubehands.dev/start": "warm",  # the runtime object says so (`start`)
    }
    assert runtime.start_of(claimed) == ("warm", None)
    # the spec is the session's cold spec, nothing of the member's left (the API server defaults `ports` again)
    assert claimed["spec"] == COLD["spec"]
    assert claimed["spec"]["sessionKeySecretRef"] == {"name": "kh-session-abc", "key": "session-api-key"}
    assert "OH_DEFERRED_INIT" not in {e["name"] for e in claimed["spec"]["env"]}
    Sandbox.model_validate(claimed)
    # as the runtime it is now: starting (never routed to) until the init is done
    assert runtime.awaiting_init(claimed)
    assert runtime.pod_identity(claimed) is None
    assert not runtime.is_pool_member(claimed)


def test_a_claimed_member_lives_for_the_sessions_lifetime_from_the_claim() -> None:
    """The claim brings the lifetime a cold /start would get; the operator counts it from `claimed-at`, not from
    the member's creation (it may have waited dormant for longer than the lifetime)."""
    from kubehands.operator.config import OperatorConfig
    from kubehands.operator.culling import CullReason, cull_decision, lifetime_start
    from kubehands.spec.profile import Profile

    capped = KeyRecord(name="team-a", digest="0" * 64, profile=Profile(maxLifetimeSeconds=3_600))
    cold = objects.build_sandbox(REQUEST, capped, SETTINGS, MEMBER, "kh-session-abc")
    assert pool_rule.matches(TEMPLATE, cold["spec"])  # the lifetime does not shape the pod: the pool still serves it
    member = make_member()
    member["metadata"]["creationTimestamp"] = "2026-02-01T00:00:00Z"  # a month dormant
    claimed = merge_patch(member, pools.claim_patch(member, cold, "p", NOW))
    assert claimed["spec"]["maxLifetimeSeconds"] == 3_600
    assert lifetime_start(claimed) == NOW
    config = OperatorConfig(idle_timeout_seconds=0)
    assert cull_decision(claimed, config, NOW + timedelta(seconds=3_599)) is None
    decision = cull_decision(claimed, config, NOW + timedelta(seconds=3_600))
    assert decision is not None and decision.reason is CullReason.MAX_LIFETIME_EXCEEDED


def test_after_the_init_the_claimed_sandbox_is_an_ordinary_one() -> None:
    claimed = merge_patch(make_member(), pools.claim_patch(make_member(), COLD, "p", NOW))
    claimed["metadata"]["generation"] = claimed["status"]["observedGeneration"] = 2  # the operator re-stamped
    assert runtime.runtime_status(claimed, alive=True) == ("starting", "running")
    done = merge_patch(claimed, pools.init_done_patch())
    assert not runtime.awaiting_init(done)
    assert runtime.pod_identity(done) == (MEMBER, "10.0.0.7")
    assert runtime.runtime_status(done, alive=True) == ("running", "ready")


def test_the_cold_restart_patch_gives_up_the_claimed_pod() -> None:
    claimed = merge_patch(make_member(), pools.claim_patch(make_member(), COLD, "p", NOW))
    patch = pools.cold_restart_patch(NOW + timedelta(seconds=5), resource_version="57")
    assert patch == {
        "metadata": {
            "resourceVersion": "57",
            "annotations": {"kubehands.dev/claimed-pod": None, "kubehands.dev/restarted-at": "2026-03-01T12:00:05Z"},
        }
    }
    restarted = merge_patch(claimed, patch)
    assert not runtime.awaiting_init(restarted)  # an ordinary sandbox, starting cold on a new pod
    assert runtime.start_of(restarted) == ("warm", None)  # a warm start whose container restarted later
    assert "resourceVersion" not in pools.cold_restart_patch(NOW)["metadata"]
    # a claim whose init never finished: the session's start was cold, and the runtime object says why
    failed = merge_patch(claimed, pools.cold_restart_patch(NOW, init_failed=True))
    assert pools.init_pending(claimed) and runtime.start_of(failed) == ("cold", "init_failed")
    assert not pools.init_pending(merge_patch(claimed, pools.init_done_patch()))


def test_a_member_is_never_a_sessions_runtime() -> None:
    member = make_member()
    assert runtime.is_pool_member(member)
    assert runtime.pod_identity(member) is None  # never probed, never routed to


# ---- when a claimed sandbox restarts cold -------------------------------------------------------------


def _claimed() -> dict[str, Any]:
    return merge_patch(make_member(), pools.claim_patch(make_member(), COLD, "p", NOW))


def _annotation(name: str) -> tuple[str, ...]:
    return ("metadata", "annotations", f"kubehands.dev/{name}")


RECOVERY: list[tuple[str, dict[str, Any], float, bool]] = [
    ("init pending, within the grace", _claimed(), 10, False),
    ("init pending past the grace: its gateway died mid-init", _claimed(), 31, True),
    ("init done", merge_patch(_claimed(), pools.init_done_patch()), 3600, False),
    (
        "init done, the claimed pod's container restarted",
        merge_patch(_changed(_claimed(), "status.restartCount", 1), pools.init_done_patch()),
        60,
        True,
    ),
    (
        "init done, restarts from before the claim",
        merge_patch(
            _changed(_changed(_claimed(), "status.restartCount", 2), _annotation("claimed-restarts"), "2"),
            pools.init_done_patch(),
        ),
        60,
        False,
    ),
    (
        "init done, the claimed pod failed (its container cannot be created without the init Secret)",
        merge_patch(_changed(_claimed(), "status.podStatus", "failed"), pools.init_done_patch()),
        60,
        True,
    ),
    ("a later pod runs (started cold)", _changed(_claimed(), "status.podUID", "another-pod"), 3600, False),
    ("no pod reported, init pending past the grace", _changed(_claimed(), "status.podUID", None), 31, True),
    ("already restarted cold", merge_patch(_claimed(), pools.cold_restart_patch(NOW)), 3600, False),
    ("paused", _changed(_claimed(), "spec.state", "Paused"), 3600, False),
    ("being deleted", _changed(_claimed(), "metadata.deletionTimestamp", "x"), 3600, False),
    ("never claimed", make_member(), 3600, False),
    ("no claim time", _changed(_claimed(), _annotation("claimed-at"), None), 0, True),
]


@pytest.mark.parametrize(("sandbox", "after", "restart"), [c[1:] for c in RECOVERY], ids=[c[0] for c in RECOVERY])
def test_cold_restart_reason(sandbox: dict[str, Any], after: float, restart: bool) -> None:
    reason = pools.cold_restart_reason(sandbox, NOW + timedelta(seconds=after))
    assert (reason is not None) is restart, reason


# ---- GET /api/warm-runtime-configs --------------------------------------------------------------------


def test_a_pool_as_the_app_reads_it() -> None:
    template = {
        **TEMPLATE,
        "command": ["/usr/local/bin/openhands-agent-server", "--port", "60000"],
        "workingDir": "/workspace/project",
        "securityContext": {"runAsUser": 10001, "fsGroup": 10001},
        "env": [*TEMPLATE["env"], {"name": "OH_DEFERRED_INIT", "value": "true"}, {"name": "LOG_JSON", "value": "1"}],
    }
    assert pools.warm_config(make_pool("python", template)) == {
        "name": "python",
        "image": TEMPLATE["image"],
        "command": ["/usr/local/bin/openhands-agent-server", "--port", "60000"],
        "environment": {},  # never the template's values: tests/unit/test_pools_per_key.py
        "working_dir": "/workspace/project",
        "run_as_user": 10001,
        "fs_group": 10001,
    }
    without_command = pools.warm_config(make_pool("p", {**template, "command": None}))
    assert without_command is not None and without_command["command"] is None


def test_a_pool_without_a_working_dir_is_not_listed() -> None:
    # the app needs a working dir and sends it back in /start, where it would never match this template
    assert pools.warm_config(make_pool("p", TEMPLATE)) is None
