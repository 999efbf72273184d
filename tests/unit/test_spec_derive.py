"""One derivation per /start (`kubehands.spec.objects.derive`), named for whichever Sandbox serves it."""

import pytest

from kubehands.api.keys import KeyRecord
from kubehands.api.settings import Settings
from kubehands.spec import objects
from kubehands.spec.profile import Profile
from kubehands.spec.request import StartRequest

pytestmark = pytest.mark.unit

SETTINGS = Settings(workspace_storage_class="fast", default_max_lifetime_seconds=3600)
CALLER = KeyRecord(name="team-a", digest="0" * 64, profile=Profile(nodeSelector={"pool": "a"}))
REQUEST = StartRequest.model_validate({"image": "python:3.12", "session_id": "S1", "command": "sleep 1"})


@pytest.mark.parametrize(("runtime_id", "secret"), [("kh-aaaaaaaaaaaa", "kh-session-1"), ("kh-member0000", "x")])
def test_a_named_derivation_is_the_sandbox_of_the_request(runtime_id: str, secret: str) -> None:
    derived = objects.derive(REQUEST, CALLER, SETTINGS)
    named = objects.sandbox(derived, runtime_id, secret, session_key_sha256="ab" * 32)
    built = objects.build_sandbox(REQUEST, CALLER, SETTINGS, runtime_id, secret, session_key_sha256="ab" * 32)
    assert named == built
    assert list(named["spec"]) == list(built["spec"])  # the same order of fields, the Secret after the workspace


def test_sandboxes_of_one_derivation_share_nothing() -> None:
    derived = objects.derive(REQUEST, CALLER, SETTINGS)
    first = objects.sandbox(derived, "kh-aaaaaaaaaaaa", "s")
    first["spec"]["workspace"]["size"] = "1Ti"
    first["metadata"]["annotations"]["x"] = "y"
    second = objects.sandbox(derived, "kh-bbbbbbbbbbbb", "s")
    assert second["spec"]["workspace"]["size"] == SETTINGS.workspace_size
    assert "x" not in second["metadata"]["annotations"]
    assert "sessionKeySecretRef" not in derived.spec  # the derivation does not depend on the Secret
