"""The objects a /start writes: the Sandbox and the session-key Secret (the claim), and their names."""

import base64
import hashlib
from typing import Any

import pytest

from kubehands.api.keys import KeyRecord
from kubehands.api.runtime import secret_session_key
from kubehands.api.settings import Settings
from kubehands.crd.model import Sandbox
from kubehands.crd.names import session_label
from kubehands.spec import objects
from kubehands.spec.profile import Profile
from kubehands.spec.request import StartRequest
from kubehands.spec.urls import is_runtime_id

pytestmark = pytest.mark.unit

CALLER = KeyRecord(name="team-a", digest="0" * 64)
RID = "kh-0123456789ab"


def _start(**fields: Any) -> StartRequest:
    return StartRequest.model_validate(
        {"image": "ghcr.io/openhands/agent-server:1.34.0-python", "session_id": "S1"} | fields
    )


def test_build_minimal_sandbox() -> None:
    settings = Settings(public_url="https://rt.example.test")
    digest = objects.session_key_digest("the-session-key")
    body = objects.build_sandbox(_start(), CALLER, settings, RID, "kh-session-x", session_key_sha256=digest)
    assert body == {
        "apiVersion": "kubehands.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": {
            "name": RID,
            "namespace": "default",
            "labels": {"kubehands.dev/owner": "team-a", "kubehands.dev/session": session_label("S1")},
            "annotations": {
                "kubehands.dev/session-id": "S1",
                # the router checks presented keys against it, and wakes within the owner's limit
                "kubehands.dev/session-key-sha256": hashlib.sha256(b"the-session-key").hexdigest(),
                "kubehands.dev/max-running": "10",
            },
        },
        "spec": {
            "image": "ghcr.io/openhands/agent-server:1.34.0-python",
            "env": [
                # the runtime id as a reference Kubernetes expands (RUNTIME_ID comes first in the pod), so the
                # spec is the same whatever the sandbox's name: the form a warm pool's template has
                {"name": "RUNTIME_URL", "value": "https://rt.example.test/$(RUNTIME_ID)"},
                {"name": "OH_VSCODE_BASE_PATH", "value": "/$(RUNTIME_ID)/vscode"},
                {"name": "OPENVSCODE_SERVER_BASE_PATH", "value": "/$(RUNTIME_ID)/vscode"},
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
    spec = objects.build_sandbox(
        request, caller, Settings(routing_mode="subdomain", domain="d.test"), RID, "s"
    )["spec"]
    env = {e["name"]: e["value"] for e in spec["env"]}
    assert env["LLM_MODEL"] == "admin-choice" and env["X"] == "1" and env["TEAM"] == "a"
    assert "SESSION_API_KEY" not in env and "OH_VSCODE_BASE_PATH" not in env
    assert env["RUNTIME_URL"] == "https://$(RUNTIME_ID).d.test"
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


def test_the_operators_environment_is_dropped_from_requests_and_profiles() -> None:
    caller = KeyRecord(name="team-a", digest="0" * 64, profile=Profile(env={"RUNTIME_ID": "admin", "TEAM": "a"}))
    request = _start(environment={"OH_SESSION_API_KEYS_0": "smuggled", "WORKER_1": "1", "X": "1"})
    env = objects.build_environment(request, caller, Settings(inject_url_env=False))
    assert env == [{"name": "X", "value": "1"}, {"name": "TEAM", "value": "a"}]


def test_session_secret_is_the_claim() -> None:
    secret = objects.build_session_secret("kh-session-x", "ns", "team-a", "S1", RID, "key")
    assert secret["stringData"] == {"session-api-key": "key"}
    assert secret["metadata"]["labels"]["kubehands.dev/runtime-id"] == RID
    assert secret["metadata"]["labels"]["kubehands.dev/session-key"] == "true"
    encoded = {"data": {"session-api-key": base64.b64encode(b"key").decode()}}
    assert secret_session_key(encoded) == "key"
    assert secret_session_key(secret) == "key"  # as written, before the API server encodes it


def test_claim_names_are_deterministic_per_tenant_and_session() -> None:
    a = objects.claim_name("team-a", "Session-1")
    assert a == objects.claim_name("team-a", "Session-1")
    assert a != objects.claim_name("team-b", "Session-1")
    assert a != objects.claim_name("team-a", "session-1")  # V1-app ids are case-sensitive
    assert len(a) <= 63 and a.startswith("kh-session-")


def test_runtime_ids_are_random_dns_labels() -> None:
    ids = {objects.mint_runtime_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(is_runtime_id(i) for i in ids)


def test_the_sandbox_gets_the_requested_or_the_default_runtime_class() -> None:
    settings = Settings(runtime_class_map={"gvisor": "gvisor", "sysbox-runc": ""}, default_runtime_class="gvisor")
    chosen = objects.build_sandbox(_start(runtime_class="sysbox-runc"), CALLER, settings, RID, "s")["spec"]
    default = objects.build_sandbox(_start(), CALLER, settings, RID, "s")["spec"]
    assert (chosen["runtimeClassName"], default["runtimeClassName"]) == ("sysbox-runc", "gvisor")
    assert "runtimeClassName" not in objects.build_sandbox(_start(), CALLER, Settings(), RID, "s")["spec"]


@pytest.mark.parametrize(
    "settings",
    [
        {"default_runtime_class": "gvisor"},  # not a key of an (empty) map
        {"runtime_class_map": {"kata": "kata"}, "default_runtime_class": "gvisor"},
        {"require_runtime_class": True},  # nothing could ever be started
    ],
)
def test_runtime_class_settings_that_would_refuse_every_start_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Settings(**settings)


def test_runtime_class_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same variables as the operator's (the chart sets them for both)."""
    monkeypatch.setenv("KUBEHANDS_RUNTIME_CLASS_MAP", '{"gvisor": "gvisor", "sysbox-runc": ""}')
    monkeypatch.setenv("KUBEHANDS_DEFAULT_RUNTIME_CLASS", "gvisor")
    monkeypatch.setenv("KUBEHANDS_REQUIRE_RUNTIME_CLASS", "true")
    settings = Settings()
    assert settings.runtime_class_map == {"gvisor": "gvisor", "sysbox-runc": ""}
    assert (settings.default_runtime_class, settings.require_runtime_class) == ("gvisor", True)
    monkeypatch.setenv("KUBEHANDS_DEFAULT_RUNTIME_CLASS", "")
    assert Settings().default_runtime_class is None


def test_a_restart_patch_replaces_the_spec_and_keeps_session_and_workspace() -> None:
    from datetime import UTC, datetime

    old = objects.build_sandbox(
        _start(command=["old"], working_dir="/old", runtime_class="gvisor", environment={"OLD": "1"}),
        CALLER,
        Settings(),
        RID,
        "kh-session-x",
    )
    old["spec"]["workspace"] = {"size": "50Gi", "mountPath": "/workspace"}  # as it was created, long ago
    fresh = objects.build_sandbox(
        _start(environment={"NEW": "1"}), CALLER, Settings(), RID, "kh-session-x", session_key_sha256="d" * 64
    )
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    patch = objects.restart_patch(old, fresh, now)
    spec = patch["spec"]
    assert spec["state"] == "Running"
    assert spec["command"] is None and spec["workingDir"] is None and spec["runtimeClassName"] is None
    assert {"name": "NEW", "value": "1"} in spec["env"] and {"name": "OLD", "value": "1"} not in spec["env"]
    for kept in ("sessionKeySecretRef", "sessionID", "workspace"):
        assert kept not in spec  # a merge patch leaves them as they are
    annotations = patch["metadata"]["annotations"]
    assert annotations["kubehands.dev/restarted-at"] == "2026-05-01T12:00:00Z"
    assert annotations["kubehands.dev/session-key-sha256"] == "d" * 64
    assert set(patch) == {"metadata", "spec"}


# ---- maximum lifetime --------------------------------------------------------------------------------------


def _keyed(ceiling: int | None) -> KeyRecord:
    return KeyRecord(name="team-a", digest="0" * 64, profile=Profile(maxLifetimeSeconds=ceiling))


@pytest.mark.parametrize(
    ("default", "ceiling", "expected"),
    [
        (0, None, None),  # no limit anywhere: the spec has no field
        (86_400, None, 86_400),  # the gateway's default
        (0, 3_600, 3_600),  # the key's ceiling alone
        (86_400, 3_600, 3_600),  # the ceiling lowers the default
        (1_800, 3_600, 1_800),  # a ceiling never raises it
    ],
)
def test_the_lifetime_is_the_default_capped_by_the_keys_ceiling(
    default: int, ceiling: int | None, expected: int | None
) -> None:
    settings = Settings(default_max_lifetime_seconds=default)
    spec = objects.build_sandbox(_start(), _keyed(ceiling), settings, RID, "kh-session-x")["spec"]
    assert spec.get("maxLifetimeSeconds") == expected
    assert ("maxLifetimeSeconds" in spec) is (expected is not None)
    assert Sandbox.model_validate({"spec": spec}).spec.max_lifetime_seconds == expected


@pytest.mark.parametrize("field", ["max_lifetime_seconds", "maxLifetimeSeconds", "timeout", "keep_alive"])
def test_a_client_cannot_ask_for_another_lifetime(field: str) -> None:
    """No OpenHands client sends a lifetime: such a field is ignored like any unknown one (docs/runtime-api.md)."""
    settings = Settings(default_max_lifetime_seconds=600)
    for value in (1, 10**9, 0, None):
        spec = objects.build_sandbox(_start(**{field: value}), _keyed(None), settings, RID, "kh-session-x")["spec"]
        assert spec["maxLifetimeSeconds"] == 600


@pytest.mark.parametrize("value", [-1, 2**31, "a day"])
def test_the_default_lifetime_setting_is_checked_at_startup(value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEHANDS_DEFAULT_MAX_LIFETIME_SECONDS", str(value))
    with pytest.raises(ValueError, match="default_max_lifetime_seconds"):
        Settings()


def test_the_default_lifetime_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().default_max_lifetime_seconds == 0  # no limit unless configured
    monkeypatch.setenv("KUBEHANDS_DEFAULT_MAX_LIFETIME_SECONDS", "86400")
    assert Settings().default_max_lifetime_seconds == 86_400


def test_a_restart_applies_the_current_lifetime_policy() -> None:
    """A re-/start of a failed session rebuilds the lifetime from the key's current ceiling (the clock still counts
    from the creation): an administrator's lowered ceiling reaches it, a removed limit removes it."""
    from datetime import UTC, datetime

    old = objects.build_sandbox(_start(), _keyed(7_200), Settings(), RID, "kh-session-x")
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    lowered = objects.build_sandbox(_start(), _keyed(600), Settings(), RID, "kh-session-x")
    assert objects.restart_patch(old, lowered, now)["spec"]["maxLifetimeSeconds"] == 600
    unlimited = objects.build_sandbox(_start(), _keyed(None), Settings(), RID, "kh-session-x")
    assert objects.restart_patch(old, unlimited, now)["spec"]["maxLifetimeSeconds"] is None
