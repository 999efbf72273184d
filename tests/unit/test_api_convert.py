"""Pure converters: /start request → Sandbox and Secret, Sandbox → runtime object (contract §2, §8)."""

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from kubehands.api import convert
from kubehands.api.errors import InvalidRequest
from kubehands.api.keys import KeyRecord, Profile
from kubehands.api.schemas import RuntimeObject, StartRequest
from kubehands.api.settings import Settings
from kubehands.crd.model import Sandbox

pytestmark = pytest.mark.unit

CALLER = KeyRecord(name="team-a", digest="0" * 64)
RID = "kh-0123456789ab"


def _start(**fields: Any) -> StartRequest:
    return StartRequest.model_validate(
        {"image": "ghcr.io/openhands/agent-server:1.34.0-python", "session_id": "S1"} | fields
    )


# ---- command (contract §8.6) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (None, None),
        ([], None),
        ("", None),
        ("   ", None),
        (
            ["/usr/local/bin/openhands-agent-server", "--port", "60000"],
            ["/usr/local/bin/openhands-agent-server", "--port", "60000"],
        ),
        (
            "/usr/local/bin/openhands-agent-server --port 60000",
            ["/usr/local/bin/openhands-agent-server", "--port", "60000"],
        ),
        (
            "/agent-server/.venv/bin/python -m openhands.agent_server --port 60000",
            ["/agent-server/.venv/bin/python", "-m", "openhands.agent_server", "--port", "60000"],
        ),
        ("cd /w && exec server", ["/bin/sh", "-c", "cd /w && exec server"]),
        ("echo $HOME", ["/bin/sh", "-c", "echo $HOME"]),
        ("run 'unterminated", ["/bin/sh", "-c", "run 'unterminated"]),
    ],
)
def test_parse_command(command: list[str] | str | None, expected: list[str] | None) -> None:
    assert convert.parse_command(command) == expected


def test_command_list_items_must_be_strings() -> None:
    with pytest.raises(ValidationError):
        _start(command=["a", 1])


# ---- request validation -------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["", "UPPER/case:1", "a b", "-bad", "x:" + "t" * 200, "repo@sha256:short"])
def test_invalid_images_are_rejected(image: str) -> None:
    with pytest.raises(ValidationError):
        _start(image=image)


@pytest.mark.parametrize(
    "image",
    [
        "python",
        "ghcr.io/openhands/agent-server:1.34.0-python",
        "localhost:5000/a/b:tag",
        "kubehands/agent-server:1.58.2",
        "docker.io/library/busybox@sha256:" + "a" * 64,
    ],
)
def test_valid_images(image: str) -> None:
    assert _start(image=image).image == image


@pytest.mark.parametrize("env", [{"1BAD": "x"}, {"A B": "x"}, {"": "x"}, {"OK": {"nested": 1}}, ["A=1"]])
def test_invalid_environment_is_rejected(env: Any) -> None:
    with pytest.raises(ValidationError):
        _start(environment=env)


def test_environment_scalars_become_strings() -> None:
    assert _start(environment={"A": 1, "B": True, "C": "x"}).environment == {"A": "1", "B": "true", "C": "x"}


def test_unknown_fields_are_tolerated() -> None:
    request = _start(runtime_class="sysbox-runc", something_new={"x": 1}, resource_factor=2)
    assert request.resource_factor == 2


@pytest.mark.parametrize(
    "field",
    [
        {"working_dir": "relative"},
        {"run_as_user": -1},
        {"image_pull_policy": "Sometimes"},
        {"session_id": ""},
        {"session_id": "a\nb"},
    ],
)
def test_other_invalid_fields(field: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _start(**field)


# ---- resources -----------------------------------------------------------------------------------


def test_resource_factor_scales_base_resources() -> None:
    settings = Settings(
        base_resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}}
    )
    assert convert.resources_for(settings, 4, {}) == {
        "requests": {"cpu": "2000m", "memory": "4Gi"},
        "limits": {"memory": "12Gi"},
    }
    assert convert.resources_for(settings, None, {}) == convert.resources_for(settings, 1, {})


@pytest.mark.parametrize("factor", [0, 3, 16, -1])
def test_unknown_resource_factor_is_4xx(factor: int) -> None:
    with pytest.raises(InvalidRequest, match="resource_factor"):
        convert.resources_for(Settings(), factor, {})


def test_resource_ceiling() -> None:
    settings = Settings(base_resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}})
    assert convert.resources_for(settings, 2, {"memory": "4Gi"})["limits"] == {"memory": "4Gi"}
    with pytest.raises(InvalidRequest, match="ceiling"):
        convert.resources_for(settings, 4, {"memory": "4Gi"})


# ---- objects ---------------------------------------------------------------------------------


def test_build_minimal_sandbox() -> None:
    settings = Settings(public_url="https://rt.example.test")
    body = convert.build_sandbox(_start(), CALLER, settings, RID, "kh-session-x")
    assert body == {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": {
            "name": RID,
            "namespace": "default",
            "labels": {"kubehands.dev/owner": "team-a", "kubehands.dev/session": convert.session_label("S1")},
            "annotations": {"kubehands.dev/session-id": "S1"},
        },
        "spec": {
            "image": "ghcr.io/openhands/agent-server:1.34.0-python",
            "env": [
                {"name": "RUNTIME_URL", "value": f"https://rt.example.test/{RID}"},
                {"name": "OH_VSCODE_BASE_PATH", "value": f"/{RID}/vscode"},
                {"name": "OPENVSCODE_SERVER_BASE_PATH", "value": f"/{RID}/vscode"},
            ],
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
            "workspace": {"size": "10Gi", "mountPath": "/workspace"},
            "sessionKeySecretRef": {"name": "kh-session-x", "key": "session-api-key"},
            "state": "Running",
            "sessionID": "S1",
        },
    }
    Sandbox.model_validate(body)  # the operator's model accepts it


def test_build_sandbox_with_every_option() -> None:
    profile = Profile.model_validate(
        {
            "volumes": [
                {"name": "data", "mountPath": "/data", "persistentVolumeClaim": {"claimName": "team-data"}}
            ],
            "env": {"TEAM": "a", "LLM_MODEL": "admin-choice"},
            "nodeSelector": {"pool": "sandboxes"},
        }
    )
    caller = KeyRecord(name="team-a", digest="0" * 64, profile=profile)
    request = _start(
        command="/usr/local/bin/openhands-agent-server --port 60000",
        working_dir="/",
        environment={"LLM_MODEL": "client-choice", "SESSION_API_KEY": "smuggled", "X": "1"},
        resource_factor=2,
        runtime_class="sysbox-runc",
        run_as_user=10001,
        fs_group=10001,
        image_pull_policy="Never",
    )
    spec = convert.build_sandbox(
        request, caller, Settings(routing_mode="subdomain", domain="d.test"), RID, "s"
    )["spec"]
    env = {e["name"]: e["value"] for e in spec["env"]}
    assert env["LLM_MODEL"] == "admin-choice" and env["X"] == "1" and env["TEAM"] == "a"
    assert "SESSION_API_KEY" not in env and "OH_VSCODE_BASE_PATH" not in env
    assert env["RUNTIME_URL"] == f"https://{RID}.d.test"
    assert spec["command"] == ["/usr/local/bin/openhands-agent-server", "--port", "60000"]
    assert spec["workingDir"] == "/"
    assert spec["runtimeClassName"] == "sysbox-runc"
    assert spec["securityContext"] == {"runAsUser": 10001, "fsGroup": 10001}
    assert spec["imagePullPolicy"] == "Never"
    assert spec["resources"]["limits"] == {"memory": "6Gi"}
    assert spec["volumes"] == [
        {
            "name": "data",
            "mountPath": "/data",
            "readOnly": False,
            "persistentVolumeClaim": {"claimName": "team-data"},
        }
    ]
    assert spec["nodeSelector"] == {"pool": "sandboxes"}
    Sandbox.model_validate({"metadata": {}, "spec": spec})


def test_session_secret_is_the_claim() -> None:
    secret = convert.build_session_secret("kh-session-x", "ns", "team-a", "S1", RID, "key")
    assert secret["stringData"] == {"session-api-key": "key"}
    assert secret["metadata"]["labels"]["kubehands.dev/runtime-id"] == RID
    assert secret["metadata"]["labels"]["kubehands.dev/session-key"] == "true"
    encoded = {"data": {"session-api-key": base64.b64encode(b"key").decode()}}
    assert convert.secret_session_key(encoded) == "key"


def test_claim_names_are_deterministic_per_tenant_and_session() -> None:
    a = convert.claim_name("team-a", "Session-1")
    assert a == convert.claim_name("team-a", "Session-1")
    assert a != convert.claim_name("team-b", "Session-1")
    assert a != convert.claim_name("team-a", "session-1")  # V1-app ids are case-sensitive
    assert len(a) <= 63 and a.startswith("kh-session-")


def test_runtime_ids_are_random_dns_labels() -> None:
    ids = {convert.mint_runtime_id() for _ in range(200)}
    assert len(ids) == 200
    from kubehands.api.urls import is_runtime_id

    assert all(is_runtime_id(i) for i in ids)


# ---- status (contract §8.16) --------------------------------------------------------------------


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
    assert convert.pod_identity(_sandbox(phase="Running", pod="ready")) == ("", "10.0.0.5")
    assert convert.pod_identity(_sandbox(phase="Running", pod="ready", observed=1)) is None


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
    status, pod_status = convert.runtime_status(sandbox, alive)
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
    runtime = convert.runtime_object(settings, RID, "S1", sandbox, None, alive=True)
    data = runtime.model_dump()
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
    assert RuntimeObject.model_validate(data) == runtime
