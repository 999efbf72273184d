from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from kubehands.crd import conditions as c
from kubehands.crd import generate
from kubehands.crd.model import DesiredState, Sandbox, SandboxSpec, Volume
from kubehands.crd.times import parse_time, rfc3339

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_minimal_spec_gets_the_documented_defaults() -> None:
    spec = SandboxSpec.model_validate({"image": "img", "sessionKeySecretRef": {"name": "s"}})
    assert spec.state is DesiredState.RUNNING
    assert [(p.name, p.container_port) for p in spec.ports] == [
        ("agent", 60000),
        ("vscode", 60001),
        ("work-1", 12000),
        ("work-2", 12001),
    ]
    assert (spec.workspace.size, spec.workspace.mount_path) == ("10Gi", "/workspace")
    assert spec.session_key_secret_ref.key == "session-api-key"
    assert spec.idle_timeout_seconds is None and spec.paused_ttl_seconds is None


@pytest.mark.parametrize("sources", [{}, {"configMap": {"name": "a"}, "secret": {"secretName": "b"}}])
def test_volume_needs_exactly_one_source(sources: dict) -> None:
    with pytest.raises(ValidationError, match="exactly one of"):
        Volume.model_validate({"name": "v", "mountPath": "/data", **sources})


def test_volume_source_type() -> None:
    volume = Volume.model_validate(
        {"name": "v", "mountPath": "/d", "persistentVolumeClaim": {"claimName": "c"}}
    )
    assert volume.source_type == "persistentVolumeClaim"


@pytest.mark.parametrize(
    "patch",
    [
        {"state": "Stopped"},
        {"idleTimeoutSeconds": -1},
        {"maxLifetimeSeconds": 0},
        {"maxLifetimeSeconds": -5},
        {"maxLifetimeSeconds": 2**31},
        {"imagePullPolicy": "Sometimes"},
        {"ports": [{"name": "agent", "containerPort": 70000}]},
        {"workingDir": "relative"},
        {"resources": {"requests": {"cpu": "lots"}}},
        {"env": [{"name": "1BAD", "value": "x"}]},
        {"securityContext": {"runAsUser": 0}},
        {"securityContext": {"runAsGroup": 0}},
        {"securityContext": {"fsGroup": 0}},
    ],
)
def test_model_refuses_what_the_crd_refuses(patch: dict) -> None:
    with pytest.raises(ValidationError):
        SandboxSpec.model_validate({"image": "img", "sessionKeySecretRef": {"name": "s"}, **patch})


@pytest.mark.parametrize("field", ["runAsUser", "runAsGroup", "fsGroup"])
def test_root_ids_are_refused_by_the_crd_schema(field: str) -> None:
    """The API server enforces the generated schema: no Sandbox can ask for id 0, even through kubectl."""
    schema = generate.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    context = schema["properties"]["spec"]["properties"]["securityContext"]["properties"]
    assert context[field]["minimum"] == 1
    spec = SandboxSpec.model_validate(
        {"image": "img", "sessionKeySecretRef": {"name": "s"}, "securityContext": {field: 1}}
    )
    assert spec.security_context is not None


def test_sandbox_properties() -> None:
    sandbox = Sandbox.model_validate(
        {
            "metadata": {"name": "kh-a", "namespace": "ns", "generation": 3, "labels": {"x": "y"}},
            "spec": {"image": "i", "sessionKeySecretRef": {"name": "s"}},
        }
    )
    assert (sandbox.name, sandbox.namespace, sandbox.generation, sandbox.labels) == (
        "kh-a",
        "ns",
        3,
        {"x": "y"},
    )


def test_rfc3339_round_trip() -> None:
    assert rfc3339(NOW) == "2026-01-02T03:04:05Z"
    assert rfc3339(NOW.replace(microsecond=1500)) == "2026-01-02T03:04:05.001500Z"
    assert rfc3339(NOW.astimezone(timezone(timedelta(hours=2)))) == "2026-01-02T03:04:05Z"
    assert parse_time("2026-01-02T03:04:05Z") == NOW
    assert parse_time("2026-01-02T03:04:05+00:00") == NOW
    assert parse_time(None) is None


def test_set_condition_keeps_transition_time_while_status_is_unchanged() -> None:
    first = c.set_condition([], c.READY, c.FALSE, c.POD_PENDING, "m", NOW, 1)
    later = NOW + timedelta(minutes=1)
    same = c.set_condition(first, c.READY, c.FALSE, c.CONTAINER_CREATING, "m2", later, 2)
    assert same == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "ContainerCreating",
            "message": "m2",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 2,
        }
    ]
    flipped = c.set_condition(same, c.READY, c.TRUE, c.POD_READY, "", later, 2)
    assert flipped[0]["lastTransitionTime"] == rfc3339(later)


def test_set_condition_keeps_other_types_and_puts_ready_first() -> None:
    conditions = c.set_condition([], c.PAUSED, c.FALSE, c.NOT_PAUSED, "", NOW, None)
    conditions = c.set_condition(conditions, c.READY, c.TRUE, c.POD_READY, "", NOW, None)
    assert [x["type"] for x in conditions] == ["Ready", "Paused"]
    assert "observedGeneration" not in conditions[1]
