"""Environment variable names: the one pattern (`kubehands.crd.model.ENV_NAME_PATTERN`, also the CRD's) must
accept exactly what Kubernetes accepts (IsEnvVarName), without lookahead (the API server's RE2 has none)."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubehands.crd.model import ENV_NAME_PATTERN
from kubehands.spec.profile import Profile
from kubehands.spec.request import StartRequest

pytestmark = pytest.mark.unit


def kubernetes_accepts(name: str) -> bool:
    """k8s.io/apimachinery validation.IsEnvVarName: the C-identifier-like regex, and not "." or ".." nor
    anything starting with ".."."""
    if not re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", name):
        return False
    return name not in (".", "..") and not name.startswith("..")


TABLE = [
    (".", False),
    ("..", False),
    ("..x", False),
    ("...", False),
    (".a", True),
    (".-", True),
    (".1", True),
    ("a..", True),
    ("a.b", True),
    ("-x", True),
    ("_", True),
    ("HOME", True),
    ("my.env-name", True),
    ("1a", False),
    ("a b", False),
    ("a=b", False),
    ("", False),
    ("é", False),
    ("a\n", False),
]


@pytest.mark.parametrize(("name", "valid"), TABLE)
def test_the_pattern_matches_kubernetes(name: str, valid: bool) -> None:
    assert kubernetes_accepts(name) is valid
    assert (re.fullmatch(ENV_NAME_PATTERN, name) is not None) is valid
    assert "(?" not in ENV_NAME_PATTERN  # no lookaround: RE2 would refuse the CRD


@given(st.text(alphabet="._-aZ09 =", max_size=6))
def test_the_pattern_matches_kubernetes_for_any_name(name: str) -> None:
    assert (re.fullmatch(ENV_NAME_PATTERN, name) is not None) is kubernetes_accepts(name)


@pytest.mark.parametrize(("name", "valid"), TABLE)
def test_start_and_profiles_refuse_what_kubernetes_refuses(name: str, valid: bool) -> None:
    """Before: `{"..x": "1"}` passed, and made a Sandbox whose pod Kubernetes never creates."""
    body = {"image": "python", "session_id": "s", "environment": {name: "1"}}
    if valid:
        StartRequest.model_validate(body)
        Profile.model_validate({"env": {name: "1"}})
    else:
        with pytest.raises(ValueError):
            StartRequest.model_validate(body)
        with pytest.raises(ValueError):
            Profile.model_validate({"env": {name: "1"}})
