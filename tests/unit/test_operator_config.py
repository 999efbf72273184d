from typing import Any

import pytest

from kubehands.crd.model import Sandbox
from kubehands.operator.config import OperatorConfig
from kubehands.operator.validation import validate_sandbox

pytestmark = pytest.mark.unit


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEHANDS_NAMESPACES", "a, b")
    monkeypatch.setenv("KUBEHANDS_RUNTIME_CLASS_MAP", '{"sysbox-runc": "", "gvisor": "gvisor"}')
    monkeypatch.setenv("KUBEHANDS_ALLOWED_VOLUME_TYPES", '["configMap"]')
    monkeypatch.setenv("KUBEHANDS_BASE_RESOURCES", '{"requests": {"cpu": "1"}}')
    monkeypatch.setenv("KUBEHANDS_IDLE_TIMEOUT_SECONDS", "60")
    monkeypatch.setenv("KUBEHANDS_NODE_SELECTOR", '{"pool": "sandboxes"}')
    monkeypatch.setenv("KUBEHANDS_TOLERATIONS", '[{"key": "k", "operator": "Exists"}]')
    monkeypatch.setenv("KUBEHANDS_KUBE_REQUEST_TIMEOUT_SECONDS", "2.5")
    config = OperatorConfig()
    assert config.kube_request_timeout_seconds == 2.5
    assert config.node_selector == {"pool": "sandboxes"}
    assert config.tolerations == [{"key": "k", "operator": "Exists"}]
    assert config.namespaces == ["a", "b"]
    assert config.runtime_class_for("gvisor") == "gvisor"
    assert config.runtime_class_for("sysbox-runc") is None and config.runtime_class_for("other") is None
    assert config.allowed_volume_types == ["configMap"]
    assert config.base_resources == {"requests": {"cpu": "1"}}
    assert (config.idle_timeout_seconds, config.paused_ttl_seconds) == (60, 604800)


def test_defaults() -> None:
    config = OperatorConfig()
    assert config.namespaces == [] and not config.allow_host_path and not config.workspace_chown
    assert config.effective_allowed_volume_types() == {"persistentVolumeClaim", "configMap", "secret"}
    assert config.kube_request_timeout_seconds == 10


def test_start_deadline_and_runtime_class_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = OperatorConfig()
    assert (defaults.start_timeout_seconds, defaults.default_runtime_class, defaults.require_runtime_class) == (
        600,
        None,
        False,
    )
    monkeypatch.setenv("KUBEHANDS_START_TIMEOUT_SECONDS", "0")
    monkeypatch.setenv("KUBEHANDS_DEFAULT_RUNTIME_CLASS", "gvisor")
    monkeypatch.setenv("KUBEHANDS_REQUIRE_RUNTIME_CLASS", "true")
    monkeypatch.setenv("KUBEHANDS_RUNTIME_CLASS_MAP", '{"gvisor": "gvisor-rc"}')
    config = OperatorConfig()
    assert (config.start_timeout_seconds, config.default_runtime_class, config.require_runtime_class) == (
        0,
        "gvisor",
        True,
    )
    assert config.runtime_class_for(None) == "gvisor-rc"


@pytest.mark.parametrize("field", ["run_as_user", "run_as_group", "fs_group"])
def test_root_is_not_a_default_id(field: str) -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        OperatorConfig(**{field: 0})


def test_bad_base_resources_are_refused() -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        OperatorConfig(base_resources={"requests": {"cpu": "lots"}})


def sandbox(name: str = "kh-a", **spec: Any) -> Sandbox:
    return Sandbox.model_validate(
        {
            "metadata": {"name": name, "namespace": "ns", "uid": "u"},
            "spec": {"image": "i", "sessionKeySecretRef": {"name": "s"}, **spec},
        }
    )


HOST = {"name": "host", "mountPath": "/host", "hostPath": {"path": "/srv"}}


def test_valid_sandbox_has_no_problems() -> None:
    assert validate_sandbox(sandbox(), OperatorConfig()) == []


def test_host_path_is_refused_with_a_clear_reason() -> None:
    [problem] = validate_sandbox(sandbox(volumes=[HOST]), OperatorConfig())
    assert "hostPath volumes are disabled" in problem and "KUBEHANDS_ALLOW_HOST_PATH=true" in problem


def test_host_path_needs_the_switch_and_the_list() -> None:
    assert validate_sandbox(sandbox(volumes=[HOST]), OperatorConfig(allow_host_path=True)) != []
    allowed = OperatorConfig(allow_host_path=True, allowed_volume_types=["hostPath"])
    assert validate_sandbox(sandbox(volumes=[HOST]), allowed) == []


def test_disallowed_volume_type() -> None:
    cm = {"name": "c", "mountPath": "/c", "configMap": {"name": "cm"}}
    [problem] = validate_sandbox(sandbox(volumes=[cm]), OperatorConfig(allowed_volume_types=["secret"]))
    assert "configMap volumes are not allowed" in problem


def test_mount_conflicts_and_reserved_name() -> None:
    volumes = [{"name": "workspace", "mountPath": "/workspace/", "configMap": {"name": "a"}}]
    problems = validate_sandbox(sandbox(volumes=volumes), OperatorConfig())
    assert any("reserved" in p for p in problems) and any(
        "already used by the workspace" in p for p in problems
    )


def test_name_too_long_and_missing_agent_port() -> None:
    problems = validate_sandbox(
        sandbox("a" * 60, ports=[{"name": "web", "containerPort": 80}]), OperatorConfig()
    )
    assert len(problems) == 2


RUNTIME_MAP = {"gvisor": "gvisor", "sysbox-runc": ""}
REQUIRE_CASES = [
    # (id, operator settings, spec.runtimeClassName, problem expected)
    ("not required: anything goes", {"runtime_class_map": RUNTIME_MAP}, "kata", None),
    ("not required, none asked: fine", {"runtime_class_map": RUNTIME_MAP}, None, None),
    ("required, mapped class", {"runtime_class_map": RUNTIME_MAP, "require_runtime_class": True}, "gvisor", None),
    ("required, mapped to no class (a key all the same)",
     {"runtime_class_map": RUNTIME_MAP, "require_runtime_class": True}, "sysbox-runc", None),
    ("required, none asked, no default",
     {"runtime_class_map": RUNTIME_MAP, "require_runtime_class": True}, None, "is required on this cluster"),
    ("required, unmapped class",
     {"runtime_class_map": RUNTIME_MAP, "require_runtime_class": True}, "kata", "'kata' is not available"),
    ("required, none asked, the default applies",
     {"runtime_class_map": RUNTIME_MAP, "require_runtime_class": True, "default_runtime_class": "gvisor"},
     None, None),
    ("required, unmapped default",
     {"runtime_class_map": RUNTIME_MAP, "require_runtime_class": True, "default_runtime_class": "kata"},
     None, "'kata' is not available"),
    ("required, nothing mapped", {"require_runtime_class": True}, "gvisor", "mapped classes: none"),
]


@pytest.mark.parametrize(
    ("settings", "requested", "problem"), [c[1:] for c in REQUIRE_CASES], ids=[c[0] for c in REQUIRE_CASES]
)
def test_require_runtime_class(settings: dict[str, Any], requested: str | None, problem: str | None) -> None:
    """The gateway refuses such a /start; this protects Sandboxes written with kubectl (InvalidSpec)."""
    problems = validate_sandbox(sandbox(runtimeClassName=requested), OperatorConfig(**settings))
    if problem is None:
        assert problems == []
    else:
        [found] = problems
        assert problem in found
