"""Every decision of a converge, case by case: `plan`, `binding_wait`, `drifted`, `start_deadline_passed` and
`refusal` are pure."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubehands.crd.model import Sandbox
from kubehands.operator.builders import pod_spec_hash
from kubehands.operator.plan import (
    Step,
    binding_wait,
    claimed,
    drifted,
    outdated,
    plan,
    refusal,
    start_deadline_passed,
)

pytestmark = pytest.mark.unit

CLAIM, SECRET, AWAIT, CREATE, DELETE, RESTAMP = (
    Step.CREATE_CLAIM,
    Step.ADOPT_SECRET,
    Step.AWAIT_BINDING,
    Step.CREATE_POD,
    Step.DELETE_POD,
    Step.RESTAMP_POD,
)
POD_UID = "pod-uid-1"


def sandbox(state: str = "Running", annotations: dict[str, str] | None = None, **spec: Any) -> Sandbox:
    return Sandbox.model_validate(
        {
            "metadata": {
                "name": "kh-a",
                "namespace": "ns",
                "uid": "u-1",
                "generation": 1,
                "annotations": annotations or {},
            },
            "spec": {"image": "agent:1", "sessionKeySecretRef": {"name": "s"}, "state": state, **spec},
        }
    )


def claimed_sandbox(uid: str = POD_UID, state: str = "Running", **annotations: str) -> Sandbox:
    """A claim replaced the member's spec (new env) and named the dormant pod it took over."""
    marks = {"kubehands.dev/claimed-pod": uid, **annotations}
    return sandbox(state, marks, env=[{"name": "LLM_MODEL", "value": "m"}])


CURRENT_HASH = pod_spec_hash(sandbox().spec)


def pod(
    phase: str = "Running",
    *,
    spec_hash: str | None = CURRENT_HASH,
    terminating: bool = False,
    ready: bool = False,
    **status: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "kh-a", "namespace": "ns", "uid": POD_UID, "annotations": {}}
    if spec_hash is not None:
        metadata["annotations"]["kubehands.dev/spec-hash"] = spec_hash
    if terminating:
        metadata["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    conditions = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": str(ready)}]
    return {"metadata": metadata, "status": {"phase": phase, "conditions": conditions, **status}}


CRASH_LOOP = {"containerStatuses": [{"name": "sandbox", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}

PLAN_CASES = [
    # (id, sandbox, pod, bind wait seconds, steps)
    ("paused with pod: delete it", sandbox("Paused"), pod(), 5, (SECRET, DELETE)),
    ("paused with ready pod: delete it", sandbox("Paused"), pod(ready=True), 5, (SECRET, DELETE)),
    ("paused with terminating pod: wait", sandbox("Paused"), pod(terminating=True), 5, (SECRET,)),
    ("paused with failed pod: delete it", sandbox("Paused"), pod("Failed"), 5, (SECRET, DELETE)),
    ("paused with outdated pod: delete it", sandbox("Paused"), pod(spec_hash="old"), 5, (SECRET, DELETE)),
    ("paused without pod: nothing to do", sandbox("Paused"), None, 5, (SECRET,)),
    ("created paused: no claim until the first run", sandbox("Paused"), None, 0, (SECRET,)),
    ("running without pod: claim, wait for binding, pod", sandbox(), None, 5, (CLAIM, SECRET, AWAIT, CREATE)),
    ("running without pod, bind wait off: no wait", sandbox(), None, 0, (CLAIM, SECRET, CREATE)),
    ("terminating pod: wait for its DELETED event", sandbox(), pod(terminating=True), 5, (CLAIM, SECRET)),
    (
        "terminating outdated pod: no second delete",
        sandbox(),
        pod(spec_hash="old", terminating=True),
        5,
        (CLAIM, SECRET),
    ),
    ("terminating failed pod: no second delete", sandbox(), pod("Failed", terminating=True), 5, (CLAIM, SECRET)),
    ("terminal pod (Failed): replace", sandbox(), pod("Failed", reason="Evicted"), 5, (CLAIM, SECRET, DELETE)),
    ("terminal pod (Succeeded): replace", sandbox(), pod("Succeeded"), 5, (CLAIM, SECRET, DELETE)),
    ("outdated template: replace", sandbox(), pod(spec_hash="old"), 5, (CLAIM, SECRET, DELETE)),
    ("pod without a spec hash: replace", sandbox(), pod(spec_hash=None), 5, (CLAIM, SECRET, DELETE)),
    ("outdated by a new image: replace", sandbox(image="agent:2"), pod(), 5, (CLAIM, SECRET, DELETE)),
    ("up-to-date pending pod: keep", sandbox(), pod("Pending"), 5, (CLAIM, SECRET)),
    ("up-to-date ready pod: keep", sandbox(), pod(ready=True), 5, (CLAIM, SECRET)),
    ("crash-looping pod: keep, the kubelet restarts it", sandbox(), pod(**CRASH_LOOP), 5, (CLAIM, SECRET)),
    ("idle timeout changed: not in the pod, keep", sandbox(idleTimeoutSeconds=60), pod(), 5, (CLAIM, SECRET)),
    # Warm pools: a claim replaces a member's spec and names the dormant pod it took over.
    ("claimed dormant pod, outdated: keep, re-stamp", claimed_sandbox(), pod(ready=True), 5, (CLAIM, SECRET, RESTAMP)),
    ("claimed pod not ready yet: re-stamp too", claimed_sandbox(), pod(), 5, (CLAIM, SECRET, RESTAMP)),
    (
        "claimed pod already re-stamped: nothing to do",
        claimed_sandbox(),
        pod(spec_hash=pod_spec_hash(claimed_sandbox().spec), ready=True),
        5,
        (CLAIM, SECRET),
    ),
    ("another pod than the claimed one (after a pause): replace", claimed_sandbox("other-uid"), pod(), 5,
     (CLAIM, SECRET, DELETE)),
    ("claimed pod, paused: delete it", claimed_sandbox(state="Paused"), pod(), 5, (SECRET, DELETE)),
    ("claimed pod that stopped: replace", claimed_sandbox(), pod("Failed"), 5, (CLAIM, SECRET, DELETE)),
    ("claimed pod terminating: wait", claimed_sandbox(), pod(terminating=True), 5, (CLAIM, SECRET)),
    ("claim annotation removed (a restart request): replace", sandbox(env=[{"name": "LLM_MODEL", "value": "m"}]),
     pod(), 5, (CLAIM, SECRET, DELETE)),
    ("claimed pod with a restart request still marked: re-stamp (the gateway removes the mark)",
     claimed_sandbox(**{"kubehands.dev/restarted-at": "2026-01-02T03:04:05Z"}), pod(), 5, (CLAIM, SECRET, RESTAMP)),
    ("empty claimed-pod never matches a pod without uid", claimed_sandbox(""), pod(), 5, (CLAIM, SECRET, DELETE)),
]


@pytest.mark.parametrize(
    ("box", "current", "bind_wait", "steps"), [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES]
)
def test_plan(box: Sandbox, current: dict[str, Any] | None, bind_wait: float, steps: tuple[Step, ...]) -> None:
    decided = plan(box, current, bind_wait_seconds=bind_wait)
    assert decided.steps == steps
    assert decided.reason


def test_steps_run_in_the_order_of_the_api_calls() -> None:
    """Claim, then Secret, then the bind wait, then the pod: a pod never waits for a claim not yet asked for."""
    assert list(Step) == [CLAIM, SECRET, AWAIT, CREATE, DELETE, RESTAMP]
    for _, box, current, bind_wait, _ in PLAN_CASES:
        steps = plan(box, current, bind_wait_seconds=bind_wait).steps
        assert list(steps) == sorted(steps, key=list(Step).index)


def test_outdated_compares_the_pod_spec_hash() -> None:
    assert not outdated(sandbox(), pod())
    assert outdated(sandbox(image="agent:2"), pod())
    assert outdated(sandbox(), None)


def test_claimed_compares_the_pod_uid() -> None:
    assert claimed(claimed_sandbox(), pod())
    assert not claimed(claimed_sandbox("other-uid"), pod())
    assert not claimed(sandbox(), pod())
    assert not claimed(claimed_sandbox(), None)
    unnamed = pod()
    del unnamed["metadata"]["uid"]
    assert not claimed(claimed_sandbox(""), unnamed)


def claim(phase: str | None = None, storage_class: str | None = "standard") -> dict[str, Any]:
    spec = {"storageClassName": storage_class} if storage_class else {}
    return {"metadata": {"name": "kh-a-workspace", "namespace": "ns"}, "spec": spec, "status": {"phase": phase}}


BINDING_CASES = [
    # (id, claim as created or read, binding mode of its class, wait)
    ("new claim, Immediate class: wait", claim(), "Immediate", True),
    ("unbound claim, Immediate class: wait", claim("Pending"), "Immediate", True),
    ("bound claim: no wait", claim("Bound"), "Immediate", False),
    ("bound claim, mode not looked up: no wait", claim("Bound"), None, False),
    ("unbound claim, WaitForFirstConsumer: no wait, it binds for the pod", claim("Pending"), "WaitForFirstConsumer",
     False),
    ("unbound claim, class unreadable: no wait", claim("Pending"), None, False),
    ("unbound claim without class: no wait", claim("Pending", storage_class=None), None, False),
]


@pytest.mark.parametrize(
    ("pvc", "mode", "wait"), [c[1:] for c in BINDING_CASES], ids=[c[0] for c in BINDING_CASES]
)
def test_binding_wait(pvc: dict[str, Any], mode: str | None, wait: bool) -> None:
    assert binding_wait(pvc, mode) is wait


def body(state: str | None = "Running", pod_status: str | None = None) -> dict[str, Any]:
    spec = {"image": "agent:1"} | ({"state": state} if state else {})
    return {"metadata": {"name": "kh-a", "namespace": "ns"}, "spec": spec, "status": {"podStatus": pod_status}}


DRIFT_CASES = [
    # (id, Sandbox body, indexed pod, drifted)
    ("running without pod: drifted", body(), None, True),
    ("state defaults to Running: drifted without pod", body(state=None), None, True),
    ("paused with pod: drifted", body("Paused"), pod(), True),
    ("paused without pod: in line", body("Paused"), None, False),
    ("running, pending pod, not reported ready: in line", body(pod_status="pending"), pod("Pending"), False),
    ("running, ready pod, reported ready: in line", body(pod_status="ready"), pod(ready=True), False),
    ("ready pod not reported ready: drifted", body(pod_status="running"), pod(ready=True), True),
    ("reported ready, pod no longer ready: drifted", body(pod_status="ready"), pod(), True),
    ("reported ready, pod gone: drifted", body(pod_status="ready"), None, True),
    ("no status yet, pod not ready: in line", {"metadata": {}, "spec": {}, "status": None}, pod(), False),
]


@pytest.mark.parametrize(
    ("sandbox_body", "indexed", "expected"), [c[1:] for c in DRIFT_CASES], ids=[c[0] for c in DRIFT_CASES]
)
def test_drifted(sandbox_body: dict[str, Any], indexed: dict[str, Any] | None, expected: bool) -> None:
    assert drifted(sandbox_body, indexed) is expected


def test_a_restart_request_makes_the_pod_outdated() -> None:
    """The gateway restarts a session in error by setting `restarted-at`: same spec, new pod, same claim."""
    restarted = sandbox()
    restarted.metadata["annotations"] = {"kubehands.dev/restarted-at": "2026-01-02T03:04:05Z"}
    assert outdated(restarted, pod())
    assert plan(restarted, pod(ready=True), bind_wait_seconds=5).steps == (CLAIM, SECRET, DELETE)
    current = pod(spec_hash=pod_spec_hash(restarted.spec, "2026-01-02T03:04:05Z"))
    assert not outdated(restarted, current)


@pytest.mark.parametrize(
    ("status", "body_text", "expected"),
    [
        (422, '{"kind": "Status", "message": "Pod \\"kh-a\\" is invalid: spec.nodeSelector: Invalid value"}',
         'Pod "kh-a" is invalid: spec.nodeSelector: Invalid value'),
        (400, b'{"kind": "Status", "message": "bad request"}', "bad request"),
        (422, "not json", "Unprocessable Entity"),
        (403, '{"message": "exceeded quota"}', None),  # a quota may allow it later: retried
        (409, '{"message": "already exists"}', None),
        (500, None, None),
        (None, None, None),
    ],
)
def test_refusal(status: int | None, body_text: str | bytes | None, expected: str | None) -> None:
    assert refusal(status, body_text, "Unprocessable Entity") == expected


def invalid(generation: int = 1, observed: int = 1, reason: str = "InvalidSpec") -> dict[str, Any]:
    ready = {"type": "Ready", "status": "False", "reason": reason}
    status = {"podStatus": "failed", "phase": "Failed", "observedGeneration": observed, "conditions": [ready]}
    return {"metadata": {"name": "kh-a", "generation": generation}, "spec": {"state": "Running"}, "status": status}


INVALID_DRIFT_CASES = [
    ("invalid spec, no pod: in line (nothing to create)", invalid(), None, False),
    ("invalid spec of an older generation, no pod: drifted", invalid(generation=2), None, True),
    ("start timeout, no pod: drifted (a pod must be made)", invalid(reason="StartTimeout"), None, True),
]


@pytest.mark.parametrize(
    ("sandbox_body", "indexed", "expected"),
    [c[1:] for c in INVALID_DRIFT_CASES],
    ids=[c[0] for c in INVALID_DRIFT_CASES],
)
def test_an_invalid_spec_is_not_retried_by_the_resync(
    sandbox_body: dict[str, Any], indexed: dict[str, Any] | None, expected: bool
) -> None:
    assert drifted(sandbox_body, indexed) is expected


NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)


def reported(phase: str | None, created_ago: int, state: str = "Running") -> dict[str, Any]:
    created = (NOW - timedelta(seconds=created_ago)).isoformat()
    status = {"phase": phase} if phase else {}
    return {"metadata": {"name": "kh-a", "creationTimestamp": created}, "spec": {"state": state}, "status": status}


DEADLINE_CASES = [
    # (id, Sandbox body, start timeout, converge now)
    ("Starting past the deadline: converge (no pod event will come)", reported("Starting", 700), 600, True),
    ("no status yet, past the deadline: converge", reported(None, 700), 600, True),
    ("Starting within the deadline: wait", reported("Starting", 500), 600, False),
    ("deadline off", reported("Starting", 10**6), 0, False),
    ("already Failed (e.g. StartTimeout): nothing more to report", reported("Failed", 700), 600, False),
    ("Running: ready, no deadline", reported("Running", 700), 600, False),
    ("Paused", reported("Paused", 700, state="Paused"), 600, False),
    (
        "a pool member is held to the deadline too (it is then replaced)",
        {**reported("Starting", 700), "metadata": {**reported("Starting", 700)["metadata"],
                                                    "labels": {"kubehands.dev/pool": "warm"}}},
        600,
        True,
    ),
]


@pytest.mark.parametrize(
    ("sandbox_body", "timeout", "expected"), [c[1:] for c in DEADLINE_CASES], ids=[c[0] for c in DEADLINE_CASES]
)
def test_start_deadline_passed(sandbox_body: dict[str, Any], timeout: int, expected: bool) -> None:
    assert start_deadline_passed(sandbox_body, NOW, timeout) is expected
