"""Sandbox → runtime object: the consistent (status, pod_status) pairs of docs/runtime-api.md §8.16, and
every field of the runtime object (§2)."""

from typing import Any

import pytest

from kubehands.api import runtime
from kubehands.api.schemas import RuntimeObject
from kubehands.api.settings import Settings

pytestmark = pytest.mark.unit

RID = "kh-0123456789ab"


def _sandbox(
    state: str = "Running",
    phase: str | None = None,
    pod: str | None = None,
    deleting: bool = False,
    observed: int = 2,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": RID, "generation": 2}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"observedGeneration": observed}
    if phase:
        status["phase"] = phase
    if pod:
        status["podStatus"] = pod
        status["podIP"] = "10.0.0.5"
    return {"metadata": meta, "spec": {"state": state, "sessionID": "S1"}, "status": status}


def test_a_stale_status_is_never_routed_to() -> None:
    assert runtime.pod_identity(_sandbox(phase="Running", pod="ready")) == ("", "10.0.0.5")
    assert runtime.pod_identity(_sandbox(phase="Running", pod="ready", observed=1)) is None


@pytest.mark.parametrize(
    ("sandbox", "alive", "expected"),
    [
        (None, False, ("starting", "pending")),
        (_sandbox(), False, ("starting", "pending")),
        (_sandbox(phase="Starting", pod="pending"), False, ("starting", "pending")),
        (_sandbox(phase="Starting", pod="running"), False, ("starting", "running")),
        (_sandbox(phase="Running", pod="ready"), False, ("starting", "running")),  # not yet /alive
        (_sandbox(phase="Running", pod="ready"), True, ("running", "ready")),
        (_sandbox(state="Paused", phase="Paused", pod="not found"), False, ("paused", "not found")),
        (_sandbox(state="Paused", phase="Running", pod="ready"), True, ("paused", "not found")),
        (
            _sandbox(state="Running", phase="Paused", pod="not found"),
            False,
            ("starting", "pending"),
        ),  # resuming
        (_sandbox(phase="Failed", pod="crashloopbackoff"), False, ("error", "crashloopbackoff")),
        (_sandbox(phase="Failed", pod="pending"), False, ("error", "failed")),
        (_sandbox(phase="Starting", pod="unknown"), False, ("error", "failed")),
        (_sandbox(phase="Running", pod="ready", deleting=True), True, ("stopped", "not found")),
        # Resumed a moment ago: the status still describes the pod the pause deleted.
        (_sandbox(phase="Running", pod="ready", observed=1), True, ("starting", "pending")),
        (_sandbox(phase="Failed", pod="crashloopbackoff", observed=1), False, ("starting", "pending")),
    ],
)
def test_status_and_pod_status_are_consistent(sandbox: Any, alive: bool, expected: tuple[str, str]) -> None:
    status, pod_status = runtime.runtime_status(sandbox, alive)
    assert (status, pod_status) == expected
    # §8.16: the pairs V1-app-old (pod_status first) and V1-app (status) agree on
    allowed = {
        "starting": {"pending", "running"},
        "running": {"ready"},
        "error": {"failed", "crashloopbackoff"},
        "paused": {"not found"},
        "stopped": {"not found"},
    }
    assert pod_status in allowed[status]


def test_runtime_object_has_every_contract_field() -> None:
    settings = Settings(public_url="http://gw.test:8000/")
    sandbox = _sandbox(phase="Running", pod="ready")
    sandbox["status"] |= {"restartCount": 2, "restartReasons": ["OOMKilled"]}
    obj = runtime.runtime_object(settings, RID, "S1", sandbox, None, alive=True)
    data = obj.model_dump()
    assert set(data) >= {
        "runtime_id",
        "session_id",
        "url",
        "session_api_key",
        "status",
        "pod_status",
        "work_hosts",
        "restart_count",
        "restart_reasons",
    }
    assert data["url"] == f"http://gw.test:8000/{RID}"
    assert data["session_api_key"] is None  # present even when unknown
    assert data["work_hosts"] == {
        f"http://gw.test:8000/{RID}/work-1": 12000,
        f"http://gw.test:8000/{RID}/work-2": 12001,
    }
    assert (data["restart_count"], data["restart_reasons"]) == (2, ["OOMKilled"])
    assert RuntimeObject.model_validate(data) == obj


def test_status_strings_on_the_wire_are_the_contracts() -> None:
    """The enums serialise to the plain strings the clients compare against."""
    obj = runtime.runtime_object(Settings(), RID, "S1", _sandbox(phase="Failed", pod="crashloopbackoff"), "k", False)
    wire = obj.model_dump(mode="json")
    assert (wire["status"], wire["pod_status"]) == ("error", "crashloopbackoff")
    assert '"status":"error","pod_status":"crashloopbackoff"' in obj.model_dump_json()
