"""Which warm pool may serve a /start: a pool template against the Sandbox spec the gateway derives for it.

The template of most cases is built from the gateway's own `build_sandbox` of a plain request, so it matches
that request by construction; each case changes one thing and expects the field named in the miss."""

import copy
from typing import Any

import pytest

from kubehands.api.keys import KeyRecord
from kubehands.api.settings import Settings
from kubehands.crd.pool_model import PoolTemplate
from kubehands.spec import objects, pools
from kubehands.spec.profile import Profile
from kubehands.spec.request import StartRequest

pytestmark = pytest.mark.unit

IMAGE = "ghcr.io/openhands/agent-server:1.58.2-python"
CALLER = KeyRecord(name="team-a", digest="0" * 64)
SETTINGS = Settings(public_url="https://rt.example.test", image_pull_policy="IfNotPresent")


def spec_of(caller: KeyRecord = CALLER, settings: Settings = SETTINGS, **fields: Any) -> dict[str, Any]:
    request = StartRequest.model_validate({"image": IMAGE, "session_id": "S1"} | fields)
    return objects.build_sandbox(request, caller, settings, objects.mint_runtime_id(), "kh-session-x")["spec"]


PLAIN = spec_of()
TEMPLATE = pools.template_from_spec(PLAIN)


def test_the_template_of_a_plain_start_is_a_valid_pool_template() -> None:
    PoolTemplate.model_validate(TEMPLATE)  # the operator's model of spec.template accepts it as is
    assert {e["value"] for e in TEMPLATE["env"]} == {
        "https://rt.example.test/$(RUNTIME_ID)",
        "/$(RUNTIME_ID)/vscode",
    }


def test_two_starts_of_one_request_derive_the_same_spec_whatever_their_runtime_id() -> None:
    # the runtime id only ever appears as $(RUNTIME_ID): a member can be claimed under its own name
    assert spec_of()["env"] == spec_of()["env"] == PLAIN["env"]


def _with(template: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changed = copy.deepcopy(template)
    for key, value in changes.items():
        if value is None:
            changed.pop(key, None)
        else:
            changed[key] = value
    return changed


def _env(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [*TEMPLATE["env"], *({"name": n, "value": v} for n, v in pairs)]


# (id, template, the request's spec, the field named in the miss or None for a match)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    ("same request", TEMPLATE, PLAIN, None),
    ("extra client env is delivered by init", TEMPLATE, spec_of(environment={"GITHUB_TOKEN": "t", "X": "1"}), None),
    (
        "webhooks, CORS and paths are delivered by init",
        TEMPLATE,
        spec_of(
            environment={
                "OH_WEBHOOKS_0_BASE_URL": "http://app/api/v1/webhooks",
                "OH_WEBHOOKS_0_NUM_RETRIES": "5",
                "OH_ALLOW_CORS_ORIGINS_0": "https://app.example.test",
                "OH_CONVERSATIONS_PATH": "/workspace/conversations",
                "OH_BASH_EVENTS_DIR": "/workspace/bash_events",
            }
        ),
        None,
    ),
    ("another image", TEMPLATE, spec_of(image="ghcr.io/openhands/agent-server:1.57.0-python"), "image"),
    ("a command", TEMPLATE, spec_of(command=["/bin/sh", "-c", "serve"]), "command"),
    (
        "the same command",
        _with(TEMPLATE, command=["serve", "--port", "60000"]),
        spec_of(command="serve --port 60000"),
        None,
    ),
    ("a working dir", TEMPLATE, spec_of(working_dir="/workspace"), "workingDir"),
    ("a resource factor", TEMPLATE, spec_of(resource_factor=2), "resources"),
    (
        "resources spelled differently are equal",
        _with(TEMPLATE, resources={"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"memory": "3072Mi"}}),
        PLAIN,
        None,
    ),
    ("no resources in the template", _with(TEMPLATE, resources=None), PLAIN, "resources"),
    ("a runtime class", TEMPLATE, spec_of(runtime_class="gvisor"), "runtimeClassName"),
    ("a user id", TEMPLATE, spec_of(run_as_user=1000), "securityContext"),
    ("another pull policy", TEMPLATE, spec_of(image_pull_policy="Always"), "imagePullPolicy"),
    ("no pull policy", TEMPLATE, spec_of(settings=Settings(public_url="https://rt.example.test")), "imagePullPolicy"),
    ("another workspace size", _with(TEMPLATE, workspace={"size": "20Gi"}), PLAIN, "workspace"),
    ("workspace defaults spelled out or not", _with(TEMPLATE, workspace=None), PLAIN, None),
    (
        "a key's node selector",
        TEMPLATE,
        spec_of(KeyRecord(name="b", digest="0" * 64, profile=Profile.model_validate({"nodeSelector": {"n": "x"}}))),
        "nodeSelector",
    ),
    (
        "a key's tolerations",
        TEMPLATE,
        spec_of(
            KeyRecord(
                name="b",
                digest="0" * 64,
                profile=Profile.model_validate({"tolerations": [{"key": "k", "operator": "Exists"}]}),
            )
        ),
        "tolerations",
    ),
    (
        "a key's volumes (a member mounts none)",
        TEMPLATE,
        spec_of(
            KeyRecord(
                name="b",
                digest="0" * 64,
                profile=Profile.model_validate(
                    {"volumes": [{"name": "d", "mountPath": "/d", "persistentVolumeClaim": {"claimName": "c"}}]}
                ),
            )
        ),
        "volumes",
    ),
    ("a template variable the request lacks", _with(TEMPLATE, env=_env(("LOG_JSON", "true"))), PLAIN, "env.LOG_JSON"),
    (
        "a template variable the request has",
        _with(TEMPLATE, env=_env(("LOG_JSON", "true"))),
        spec_of(environment={"LOG_JSON": "true", "MORE": "1"}),
        None,
    ),
    (
        "a template variable with another value",
        _with(TEMPLATE, env=_env(("LOG_JSON", "true"))),
        spec_of(environment={"LOG_JSON": "false"}),
        "env.LOG_JSON",
    ),
    (
        "a literal runtime URL is not the pool's",
        _with(TEMPLATE, env=[{"name": "RUNTIME_URL", "value": "https://rt.example.test/kh-0123456789ab"}]),
        PLAIN,
        "env.RUNTIME_URL",
    ),
    (
        "another public URL",
        TEMPLATE,
        spec_of(settings=Settings(public_url="https://other.test", image_pull_policy="IfNotPresent")),
        "env.RUNTIME_URL",
    ),
    ("boot-only: VNC on", TEMPLATE, spec_of(environment={"OH_ENABLE_VNC": "1"}), "env.OH_ENABLE_VNC"),
    (
        "boot-only: VS Code root",
        TEMPLATE,
        spec_of(environment={"OPENVSCODE_SERVER_ROOT": "/x"}),
        "env.OPENVSCODE_SERVER_ROOT",
    ),
    ("boot-only: preload", TEMPLATE, spec_of(environment={"OH_PRELOAD_TOOLS": "false"}), "env.OH_PRELOAD_TOOLS"),
    (
        "boot-only: the VS Code base path, changed by the client",
        TEMPLATE,
        spec_of(environment={"OH_VSCODE_BASE_PATH": "/elsewhere"}),
        "env.OH_VSCODE_BASE_PATH",
    ),
    (
        "boot-only, same value as the pool booted with",
        _with(TEMPLATE, env=_env(("OH_ENABLE_VNC", "0"))),
        spec_of(environment={"OH_ENABLE_VNC": "0"}),
        None,
    ),
    (
        "agent-server setting init cannot carry",
        TEMPLATE,
        spec_of(environment={"OH_ENABLE_BROWSER": "false"}),
        "env.OH_ENABLE_BROWSER",
    ),
    (
        "webhooks as JSON (init carries the indexed form only)",
        TEMPLATE,
        spec_of(environment={"OH_WEBHOOKS": '[{"base_url": "http://x"}]'}),
        "env.OH_WEBHOOKS",
    ),
    (
        "an unknown webhook field",
        TEMPLATE,
        spec_of(environment={"OH_WEBHOOKS_0_SECRET": "s"}),
        "env.OH_WEBHOOKS_0_SECRET",
    ),
    (
        "OH_DEFERRED_INIT in a template is the operator's, never compared",
        _with(TEMPLATE, env=_env(("OH_DEFERRED_INIT", "true"))),
        PLAIN,
        None,
    ),
    (
        "the operator's own variables are ignored on both sides",
        _with(TEMPLATE, env=_env(("SESSION_API_KEY", "x"), ("RUNTIME_ID", "y"))),
        PLAIN,
        None,
    ),
]


@pytest.mark.parametrize(("template", "spec", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_difference(template: dict[str, Any], spec: dict[str, Any], expected: str | None) -> None:
    assert pools.difference(template, spec) == expected
    assert pools.matches(template, spec) is (expected is None)


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("1Gi", 2**30), ("1024Mi", 2**30), ("500m", 0.5), ("0.5", 0.5), ("1e3", 1000), ("2k", 2000), ("1E", 10**18)],
)
def test_quantities_compare_by_value(quantity: str, value: float) -> None:
    assert float(pools.quantity_value(quantity)) == value


@pytest.mark.parametrize(
    ("name", "boot_only"),
    [
        ("OH_ENABLE_VNC", True),
        ("OPENVSCODE_SERVER_ROOT", True),
        ("OPENVSCODE_SERVER_BASE_PATH", True),
        ("OH_SECRET_KEY", True),
        ("OH_WEBHOOKS_0_BASE_URL", False),
        ("OH_WEBHOOKS_12_HEADERS", False),
        ("OH_WEBHOOKS_01_BASE_URL", True),  # the server's parser reads index "1", never "01"
        ("OH_ALLOW_CORS_ORIGINS_3", False),
        ("OH_ALLOW_CORS_ORIGIN_REGEX", True),
        ("OH_CONVERSATIONS_PATH", False),
        ("OH_BASH_EVENTS_DIR", False),
        ("GITHUB_TOKEN", False),
        ("LOG_JSON", False),
    ],
)
def test_boot_only_variables(name: str, boot_only: bool) -> None:
    assert pools.boot_only(name) is boot_only
