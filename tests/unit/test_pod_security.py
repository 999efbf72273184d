"""Every pod kubehands creates complies with the Pod Security Standards' `restricted` profile, which the chart
enforces on the sandbox namespace by default (`sandbox.podSecurity`): cold sandboxes and warm-pool members, built by
the operator's own builders with the settings the chart renders for the operator and the gateway, and the image
pre-puller's DaemonSet as the chart renders it. The local cluster (v1.20) has no Pod Security Admission, so this
static check (`tests/helpers/pod_security.py`, the profile's controls as documented) is the proof here.

The two settings that build pods outside the profile are refused by the chart unless the namespace's level allows
them: `sandbox.workspace.chown` (baseline) and `sandbox.allowHostPath` (privileged).
"""

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubehands.api.keys import KeyRecord
from kubehands.crd.model import Sandbox
from kubehands.crd.pool_model import SandboxPool
from kubehands.operator.builders import build_pod
from kubehands.operator.config import OperatorConfig
from kubehands.operator.pools import build_member, template_hash
from kubehands.operator.validation import validate_sandbox
from kubehands.spec import objects
from kubehands.spec import pools as pool_rule
from kubehands.spec.profile import Profile
from kubehands.spec.request import StartRequest
from tests.helpers.pod_security import violations
from tests.unit import test_chart
from tests.unit.test_chart import KUBE_CURRENT, by_kind, container_environment, gateway_settings, render, render_fails

pytestmark = pytest.mark.unit
helm = test_chart.helm  # test_chart.py's session fixture: the pinned helm

APP_START = {
    "image": "kubehands/agent-server:1.34.0",
    "command": ["/usr/local/bin/openhands-agent-server", "--port", "60000"],
    "working_dir": "/workspace",
    "environment": {"OH_ENABLE_VNC": "0", "LOG_JSON": "true"},
    "session_id": "app-session",
    "resource_factor": 2,
    "run_as_user": 10001,
    "run_as_group": 10001,
    "fs_group": 10001,
}
SDK_START = {"image": "kubehands/agent-server:1.58.2", "session_id": "sdk", "runtime_class": None}
PROFILE = Profile.model_validate(
    {
        "volumes": [
            {"name": "data", "mountPath": "/data", "persistentVolumeClaim": {"claimName": "team-data"}},
            {"name": "conf", "mountPath": "/conf", "readOnly": True, "configMap": {"name": "team-conf"}},
            {"name": "creds", "mountPath": "/creds", "readOnly": True, "secret": {"secretName": "team-creds"}},
        ],
        "tolerations": [{"key": "sandboxes", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"pool": "sandboxes"},
    }
)


@pytest.fixture(scope="module")
def docs(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The chart with its defaults, the image pre-puller and a warm pool."""
    values = tmp_path_factory.mktemp("values") / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "prePuller": {"enabled": True},
                "pools": [{"name": "app", "size": 1, "template": {"workingDir": "/workspace"}}],
            }
        )
    )
    return render(helm, values, KUBE_CURRENT)


def operator_config(docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> OperatorConfig:
    with container_environment(docs, "t-kubehands-operator", monkeypatch):
        return OperatorConfig()


def stored(sandbox: dict[str, Any], config: OperatorConfig) -> Sandbox:
    """The Sandbox as the API server stores it, after the operator's checks that would refuse it."""
    metadata = {**sandbox["metadata"], "namespace": "t-kubehands-sandboxes", "uid": "uid-1"}
    model = Sandbox.model_validate({**sandbox, "metadata": metadata})
    assert validate_sandbox(model, config) == []
    return model


@pytest.mark.parametrize("profile", [Profile(), PROFILE], ids=["default profile", "profile with volumes"])
@pytest.mark.parametrize("body", [APP_START, SDK_START], ids=["app server", "sdk"])
def test_a_cold_sandbox_pod_is_restricted(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, body: dict[str, Any], profile: Profile
) -> None:
    caller = KeyRecord(name="team-a", digest="0" * 64, profile=profile)
    derived = objects.derive(StartRequest.model_validate(body), caller, gateway_settings(docs, monkeypatch))
    config = operator_config(docs, monkeypatch)
    pod = build_pod(stored(objects.sandbox(derived, "kh-0a1b2c3d4e5f", "kh-session-x"), config), config)
    assert violations(pod, "restricted") == []


def test_a_warm_pool_member_pod_is_restricted(docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    [rendered] = [d for d in docs if d["kind"] == "SandboxPool"]
    pool = SandboxPool.model_validate({**rendered, "metadata": {**rendered["metadata"], "uid": "uid-pool"}})
    config = operator_config(docs, monkeypatch)
    _, member = build_member(pool, "kh-0a1b2c3d4e5f", template_hash(pool), "init-key")
    pod = build_pod(stored(member, config), config)
    assert pool_rule.env_map(pod["spec"]["containers"][0]["env"]).get("OH_DEFERRED_INIT") == "true"  # a member's
    assert violations(pod, "restricted") == []


def test_the_image_pre_puller_is_restricted(docs: list[dict[str, Any]]) -> None:
    puller = by_kind(docs, "DaemonSet")["t-kubehands-image-puller"]["spec"]["template"]
    assert puller["spec"]["initContainers"], "it pulls the sandbox images in init containers"
    assert violations(puller, "restricted") == []


def test_the_sandbox_namespace_enforces_restricted(docs: list[dict[str, Any]]) -> None:
    labels = by_kind(docs, "Namespace")["t-kubehands-sandboxes"]["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "latest"


def test_the_check_knows_the_pods_that_are_not_restricted() -> None:
    """The two settings that leave the profile, as the check sees them: so it is no check that passes anything."""
    config = OperatorConfig(workspace_chown=True, allow_host_path=True, allowed_volume_types=["hostPath"])
    body = {"image": "agent:1", "session_id": "s"}
    caller = KeyRecord(name="t", digest="0" * 64)
    sandbox = objects.sandbox(objects.derive(StartRequest.model_validate(body), caller, _settings()), "kh-1", "s")
    sandbox["spec"]["volumes"] = [{"name": "host", "mountPath": "/host", "hostPath": {"path": "/var"}}]
    pod = build_pod(stored(sandbox, config), config)
    found = violations(pod, "restricted")
    chown = "initContainers[workspace-chown]"
    assert f"Running as Non-root: {chown} is not required to run as non-root" in found
    assert f"Running as Non-root user: {chown}.securityContext.runAsUser is 0" in found
    assert f"Capabilities: {chown} adds CHOWN" in found
    assert "HostPath Volumes: volume host" in found
    assert violations(pod, "baseline") == ["HostPath Volumes: volume host"]  # chown alone is baseline
    assert violations(pod, "privileged") == []


def _settings() -> Any:
    from kubehands.api.settings import Settings

    return Settings(public_url="https://gw.test")


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ("sandbox.workspace.chown=true", "sandbox.workspace.chown needs sandbox.podSecurity.enforce=baseline"),
        ("sandbox.allowHostPath=true", "sandbox.allowHostPath needs sandbox.podSecurity.enforce=privileged"),
        (
            "sandbox.allowHostPath=true,sandbox.podSecurity.enforce=baseline",
            "hostPath volumes are refused by baseline",
        ),
    ],
)
def test_settings_that_leave_the_profile_need_a_weaker_level(helm: str, sets: str, message: str) -> None:
    assert message in render_fails(helm, "--set", sets)


@pytest.mark.parametrize(
    ("sets", "level"),
    [
        ("sandbox.workspace.chown=true,sandbox.podSecurity.enforce=baseline", "baseline"),
        ("sandbox.allowHostPath=true,sandbox.podSecurity.enforce=privileged", "privileged"),
        ("sandbox.podSecurity.enforce=", None),
        ("sandbox.namespaceLabels.pod-security\\.kubernetes\\.io/enforce=baseline", "baseline"),  # theirs wins
    ],
)
def test_the_level_is_configurable(helm: str, sets: str, level: str | None) -> None:
    docs = render(helm, None, KUBE_CURRENT, "--set", sets)
    labels = by_kind(docs, "Namespace")["t-kubehands-sandboxes"]["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == level


def test_a_namespace_the_chart_does_not_create_is_left_alone(helm: str) -> None:
    minimal = Path(test_chart.CHART) / "ci" / "minimal-values.yaml"  # chown on, the release namespace shared
    assert not [d for d in render(helm, minimal, KUBE_CURRENT) if d["kind"] == "Namespace"]
