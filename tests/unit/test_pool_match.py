"""Whether any /start can match a pool template (`kubehands.spec.pool_match`), cause by cause: the gateway's own
derivation decides, so a template built by it matches and one that disagrees with its settings never does."""

from typing import Any

import pytest

from kubehands.api.keys import KeyRecord
from kubehands.api.settings import Settings
from kubehands.spec import objects, pools
from kubehands.spec.pool_match import Matchability, check
from kubehands.spec.request import StartRequest
from tests.helpers.warm_pool import app_start_body, load_pool_manifest

pytestmark = pytest.mark.unit

BASE = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
PATH_MODE: dict[str, Any] = {"public_url": "https://runtime.example.com", "base_resources": BASE}
# The OpenHands app server's default /start (docs/pools.md "make run").
APP_START = app_start_body("registry.example.com/kubehands/agent-server:1.58.2")


def settings(**values: Any) -> Settings:
    return Settings(**{**PATH_MODE, **values})


def template_for(body: dict[str, Any], gateway: Settings) -> dict[str, Any]:
    """The template hack/pool-manifest.py (the gateway's own code) writes for `body`."""
    template: dict[str, Any] = load_pool_manifest().pool_template(body, gateway)
    return template


def with_(template: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**template, **changes}


def env(template: dict[str, Any], **changes: str | None) -> dict[str, Any]:
    """The template with these variables set (None: removed)."""
    kept = [e for e in template.get("env", []) if e["name"] not in changes]
    return {**template, "env": kept + [{"name": k, "value": v} for k, v in changes.items() if v is not None]}


def never(result: Matchability) -> list[str]:
    return [m.reason for m in result.never]


GATEWAY = settings()
APP = template_for(APP_START, GATEWAY)


def test_a_template_the_gateway_derives_is_matchable() -> None:
    result = check(APP, GATEWAY)
    assert result == Matchability()
    assert result.condition() == ("True", "TemplateMatchable", "a /start can match this template")
    # ... and a /start does match it: the check is the gateway's own derivation and matcher.
    request = StartRequest.model_validate({**APP_START, "session_id": "s"})
    spec = objects.build_sandbox(request, KeyRecord(name="k", digest=""), GATEWAY, "kh-000000000000", "x")["spec"]
    assert pools.matches(APP, spec)


@pytest.mark.parametrize(
    "gateway",
    [
        settings(routing_mode="subdomain", domain="sandboxes.example.com"),
        settings(inject_url_env=False),
        settings(resource_factors=[2, 4], image_pull_policy="IfNotPresent", workspace_size="3Gi"),
        settings(workspace_storage_class="fast", workspace_mount_path="/home/user/work"),
        settings(runtime_class_map={"gvisor": "gvisor"}, default_runtime_class="gvisor", require_runtime_class=True),
    ],
    ids=["subdomain", "no-url-env", "factors-pull-size", "storage-mount", "runtime-class"],
)
def test_templates_derived_under_other_settings_are_matchable(gateway: Settings) -> None:
    body = {**APP_START, "resource_factor": gateway.resource_factors[-1]}
    assert check(template_for(body, gateway), gateway) == Matchability()


def test_a_factor_above_one_and_a_profile_s_node_selector_are_matchable() -> None:
    doubled = with_(
        APP, resources={"requests": {"cpu": "2000m", "memory": "4096Mi"}, "limits": {"cpu": 4, "memory": "8Gi"}}
    )
    assert check(doubled, GATEWAY) == Matchability()
    placed = with_(APP, nodeSelector={"pool": "a"}, tolerations=[{"key": "k", "operator": "Exists"}])
    assert check(placed, GATEWAY) == Matchability()  # a key's profile can give a /start both


def test_the_operator_s_own_variables_do_not_matter() -> None:
    """The gateway drops them from a /start and the matcher ignores them (the operator sets its own)."""
    assert check(env(APP, WORKER_1="9", OH_VSCODE_PORT="1"), GATEWAY) == Matchability()


def test_resources_that_are_no_accepted_factor_never_match() -> None:
    result = check(with_(APP, resources={"requests": {"cpu": "10m", "memory": "64Mi"}}), GATEWAY)
    assert never(result) == ["ResourcesNotOffered"]
    status, reason, message = result.condition()
    assert (status, reason) == ("False", "ResourcesNotOffered")
    assert message.startswith("no /start can match this template: resources: the template has ")
    assert 'factor 1: {"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "1", "memory": "2Gi"}}' in message
    assert 'factor 8: {"limits": {"cpu": "16", "memory": "32Gi"}' in message
    # Factor 3 is not offered here, even though its resources have the right shape.
    tripled = {"requests": {"cpu": "3", "memory": "6Gi"}, "limits": {"cpu": "6", "memory": "12Gi"}}
    assert never(check(with_(APP, resources=tripled), GATEWAY)) == ["ResourcesNotOffered"]
    assert check(with_(APP, resources=tripled), settings(resource_factors=[1, 3])) == Matchability()
    # Without resources a member would get the base resources, but a /start's spec names them: no match.
    without = {k: v for k, v in APP.items() if k != "resources"}
    assert never(check(without, GATEWAY)) == ["ResourcesNotOffered"]


def test_a_runtime_class_the_gateway_refuses_never_matches() -> None:
    mapped = settings(runtime_class_map={"gvisor": "gvisor"})
    result = check(with_(APP, runtimeClassName="kata"), mapped)
    assert result.condition() == (
        "False",
        "RuntimeClassNotOffered",
        "no /start can match this template: runtimeClassName: runtime_class 'kata' is not offered here; "
        "use one of ['gvisor']",
    )
    required = settings(runtime_class_map={"gvisor": "gvisor"}, require_runtime_class=True)
    assert "a runtime_class is required here" in check(APP, required).condition()[2]
    assert check(with_(APP, runtimeClassName="gvisor"), required) == Matchability()


def test_a_template_without_the_default_runtime_class_never_matches() -> None:
    """A /start that names no class gets the default: the template must name it."""
    defaulted = settings(runtime_class_map={"gvisor": ""}, default_runtime_class="gvisor")
    result = check(APP, defaulted)
    assert never(result) == ["RuntimeClassNotOffered"]
    assert result.never[0].message == (
        'runtimeClassName: the template has unset, the gateway derives "gvisor" '
        '(from KUBEHANDS_DEFAULT_RUNTIME_CLASS): set it to "gvisor"'
    )


@pytest.mark.parametrize(
    ("workspace", "gateway"),
    [
        ({"size": "1Gi", "mountPath": "/workspace"}, GATEWAY),
        ({"size": "10Gi", "mountPath": "/work"}, GATEWAY),
        ({"size": "10Gi", "mountPath": "/workspace"}, settings(workspace_storage_class="fast")),
        ({"size": "10Gi", "mountPath": "/workspace", "storageClassName": "slow"}, GATEWAY),
    ],
    ids=["size", "mount-path", "no-storage-class", "another-storage-class"],
)
def test_a_workspace_unlike_the_gateway_s_never_matches(workspace: dict[str, Any], gateway: Settings) -> None:
    result = check(with_(APP, workspace=workspace), gateway)
    assert never(result) == ["WorkspaceMismatch"]
    assert "KUBEHANDS_WORKSPACE_SIZE" in result.never[0].message


def test_a_template_without_the_default_pull_policy_never_matches() -> None:
    result = check(APP, settings(image_pull_policy="Always"))
    assert never(result) == ["PullPolicyMismatch"]
    assert result.never[0].message.endswith('set it to "Always"')
    assert check(with_(APP, imagePullPolicy="Never"), settings(image_pull_policy="Always")) == Matchability()


def test_a_missing_boot_only_variable_the_gateway_writes_never_matches() -> None:
    """In path mode every /start has the VS Code base paths, and a member cannot take them on after boot."""
    result = check(env(APP, OH_VSCODE_BASE_PATH=None), GATEWAY)
    assert never(result) == ["GatewayEnvMismatch"]
    assert result.never[0].message == (
        "env OH_VSCODE_BASE_PATH: missing; the gateway writes '/$(RUNTIME_ID)/vscode' and the variable is boot-only: "
        "add it"
    )
    # RUNTIME_URL is not boot-only: a template without it matches (the init delivers it).
    assert check(env(APP, RUNTIME_URL=None), GATEWAY) == Matchability()


def test_an_image_the_gateway_refuses_never_matches() -> None:
    result = check(with_(APP, image="UPPER/Case:1"), GATEWAY)
    assert never(result) == ["RequestRefused"]
    assert "invalid image reference" in result.never[0].message


def test_every_cause_is_reported_with_the_main_one_first() -> None:
    broken = env(
        with_(APP, resources={"requests": {"cpu": "10m"}}, workspace={"size": "1Gi"}),
        OH_VSCODE_BASE_PATH=None,
    )
    result = check(broken, GATEWAY)
    assert never(result) == ["ResourcesNotOffered", "WorkspaceMismatch", "GatewayEnvMismatch"]
    assert result.condition()[1] == "ResourcesNotOffered"
    # Each message says what to change: doing so makes the template match.
    fixed = env(
        with_(broken, resources=BASE, workspace={"size": "10Gi", "mountPath": "/workspace"}),
        OH_VSCODE_BASE_PATH="/$(RUNTIME_ID)/vscode",
    )
    assert check(fixed, GATEWAY) == Matchability()


def test_the_factor_whose_resources_fit_is_the_one_reported() -> None:
    doubled = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}
    result = check(with_(APP, resources=doubled, workspace={"size": "1Gi"}), GATEWAY)
    assert never(result) == ["WorkspaceMismatch"]


def test_the_gateway_s_variables_with_other_values_only_match_a_start_that_sends_them() -> None:
    """A template made for another routing mode or URL can still be matched, by a /start that sends the
    variables itself: Matchable stays True (the members are kept), and the condition says so."""
    subdomain = settings(routing_mode="subdomain", domain="sandboxes.example.com")
    result = check(APP, subdomain)
    assert result.matchable and [m.message for m in result.overrides] == [
        "env RUNTIME_URL: the template has 'https://runtime.example.com/$(RUNTIME_ID)', the gateway writes "
        "'https://$(RUNTIME_ID).sandboxes.example.com': set it to that",
        "env OH_VSCODE_BASE_PATH: the gateway does not write it in subdomain routing mode; remove it",
        "env OPENVSCODE_SERVER_BASE_PATH: the gateway does not write it in subdomain routing mode; remove it",
    ]
    status, reason, message = result.condition()
    assert (status, reason) == ("True", "GatewayEnvOverridden")
    assert message.startswith("only a /start that sends these variables itself can match: env RUNTIME_URL:")
    off = check(APP, settings(inject_url_env=False))
    assert off.matchable and "(KUBEHANDS_INJECT_URL_ENV is off)" in off.overrides[0].message
