"""make run's two warm pools (hack/run.sh): one per client, each of the agent server that client needs, each
derived from exactly the /start that client sends, so both clients' first sandboxes start warm."""

import re

import pytest

from kubehands.api.keys import KeyRecord
from kubehands.api.settings import Settings
from kubehands.spec import pools
from kubehands.spec.pool_match import Matchability, check
from kubehands.spec.request import StartRequest
from tests.helpers import warm_pool
from tests.helpers.run_defaults import make_run_settings
from tests.unit.test_chart import derived_spec

pytestmark = pytest.mark.unit
SETTINGS = Settings(namespace="kubehands-sandboxes", public_url="http://127.0.0.1:8080", **make_run_settings())
CALLER = KeyRecord(name="dev", digest="0" * 64)
COMMON = (warm_pool.ROOT / "hack" / "lib" / "common.sh").read_text()


def version(variable: str) -> str:
    found = re.search(rf'^{variable}="\$\{{{variable}:-([0-9.]+)\}}"$', COMMON, re.M)
    assert found is not None, variable
    return found.group(1)


def test_each_client_gets_the_agent_server_of_its_own_version() -> None:
    """The SDK's image is its own release; the app's is the SDK release openhands-ai 1.11 bundles (1.34.0): the
    app refuses the events of a newer server. Both are built from pins."""
    assert version("AGENT_SERVER_VERSION") == "1.58.2"
    assert version("APP_AGENT_SERVER_VERSION") == "1.34.0"
    pins = warm_pool.ROOT / "hack" / "pins"
    assert "openhands-sdk==1.34.0\n" in (pins / "app-1.11.0.txt").read_text()
    for v in ("1.58.2", "1.34.0"):
        assert f"openhands-agent-server=={v}\n" in (pins / f"agent-server-{v}.txt").read_text()
    text = warm_pool.RUN_SH.read_text()
    assert 'declare_pool openhands-app "$POOL_SIZE" "$APP_SANDBOX_IMAGE" app_start_body' in text
    assert 'declare_pool openhands-sdk "$SDK_POOL_SIZE" "$SANDBOX_IMAGE" sdk_start_body' in text
    assert 'echo "AGENT_SERVER_IMAGE_TAG=${APP_SANDBOX_IMAGE##*:}"' in text


def test_make_run_sdk_pool_is_declared_for_the_sdk_default_start() -> None:
    """The SDK's body is what APIRemoteWorkspace sends with its defaults (IfNotPresent, sysbox-runc)."""
    image = "kubehands/agent-server:1.58.2"
    expected = warm_pool.sdk_start_body(image, "pool-template", "IfNotPresent")
    assert warm_pool.run_sh_body("sdk_start_body", image) == expected


@pytest.mark.parametrize("function", ["app_start_body", "sdk_start_body"])
def test_each_make_run_pool_serves_its_client_and_is_matchable(function: str) -> None:
    image = "kubehands/agent-server:1.34.0" if function == "app_start_body" else "kubehands/agent-server:1.58.2"
    body = warm_pool.run_sh_body(function, image)
    template = warm_pool.load_pool_manifest().pool_template(body, SETTINGS)
    # The operator's check (make run turns it on) finds a /start that can claim it.
    assert check(template, SETTINGS) == Matchability()
    # The client's own /start, with any session id, claims it.
    spec = derived_spec(StartRequest.model_validate(body | {"session_id": "another"}), CALLER, SETTINGS)
    assert pools.difference(template, spec) is None
    # The other client's body (another image) does not.
    other = "kubehands/agent-server:1.58.2" if function == "app_start_body" else "kubehands/agent-server:1.34.0"
    assert pools.difference(template, derived_spec(StartRequest.model_validate(body | {"image": other}), CALLER,
                                                   SETTINGS)) == "image"
