"""Reading a /start request: the body's validation, the container command (docs/runtime-api.md §8.6)
and the scaled resources, each refused as 4xx when invalid."""

from typing import Any

import pytest
from pydantic import ValidationError

from kubehands.api.settings import Settings
from kubehands.spec.errors import InvalidRequest
from kubehands.spec.request import StartRequest, parse_command, resources_for

pytestmark = pytest.mark.unit


def _start(**fields: Any) -> StartRequest:
    return StartRequest.model_validate(
        {"image": "ghcr.io/openhands/agent-server:1.34.0-python", "session_id": "S1"} | fields
    )


# ---- command (docs/runtime-api.md §8.6) -----------------------------------------------------------


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
    assert parse_command(command) == expected


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
    assert resources_for(settings, 4, {}) == {
        "requests": {"cpu": "2000m", "memory": "4Gi"},
        "limits": {"memory": "12Gi"},
    }
    assert resources_for(settings, None, {}) == resources_for(settings, 1, {})


@pytest.mark.parametrize("factor", [0, 3, 16, -1])
def test_unknown_resource_factor_is_4xx(factor: int) -> None:
    with pytest.raises(InvalidRequest, match="resource_factor"):
        resources_for(Settings(), factor, {})


def test_resource_ceiling() -> None:
    settings = Settings(base_resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}})
    assert resources_for(settings, 2, {"memory": "4Gi"})["limits"] == {"memory": "4Gi"}
    with pytest.raises(InvalidRequest, match="ceiling"):
        resources_for(settings, 4, {"memory": "4Gi"})
