"""docs/install.md's recipes, taken from the page itself and checked the way the installation would run them.

gVisor for every client: the chart rendered with the page's values block, the rendered gateway's settings deriving
the Sandbox of each OpenHands client's default /start (the bodies hack/run.sh records for the app server and the
SDK, docs/runtime-api.md's for V0), and the rendered operator's settings validating that Sandbox and building its pod.

Images: the tarballs and image names the page tells a user to load or push are those `make images` writes
(hack/lib/images.sh), and its values for a registry render with the pushed names.
"""

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubehands.api.keys import KeyRecord
from kubehands.crd.model import Sandbox
from kubehands.operator.builders import build_pod
from kubehands.operator.config import OperatorConfig
from kubehands.operator.validation import validate_sandbox
from kubehands.spec import objects
from kubehands.spec.errors import InvalidRequest
from kubehands.spec.request import StartRequest
from tests.helpers import warm_pool
from tests.unit import test_chart
from tests.unit.test_chart import KUBE_CURRENT, ROOT, by_kind, container_environment, gateway_settings, render

pytestmark = pytest.mark.unit
helm = test_chart.helm  # test_chart.py's session fixture: the pinned helm

INSTALL = ROOT / "docs" / "install.md"
CALLER = KeyRecord(name="team-a", digest="0" * 64)
RUNTIME_ID = "kh-0a1b2c3d4e5f"
APP_IMAGE, SDK_IMAGE = "kubehands/agent-server:1.34.0", "kubehands/agent-server:1.58.2"
V0_COMMAND = ["/openhands/micromamba/bin/micromamba", "run", "-n", "openhands", "poetry", "run", "python", "-u", "-m",
              "openhands.runtime.action_execution_server", "60000"]  # fmt: skip


def section(heading: str) -> str:
    text = INSTALL.read_text()
    start = text.index(f"\n{heading}\n")
    following = re.search(r"^#{2,3} ", text[start + len(heading) + 2 :], re.M)
    return text[start : start + len(heading) + 2 + (following.start() if following else len(text))]


def gvisor_values() -> dict[str, Any]:
    """The values block of docs/install.md's "gVisor for every client"."""
    [block] = re.findall(r"^```yaml\n(.*?)^```", section("### gVisor for every client"), re.S | re.M)
    values: dict[str, Any] = yaml.safe_load(block)
    return values


def client_starts() -> dict[str, tuple[dict[str, Any], str | None]]:
    """Each client's default /start, and the runtime_class it sends (docs/runtime-api.md §3.2, §4.2, §5.2)."""
    v0 = {"image": APP_IMAGE, "session_id": "v0-session", "command": V0_COMMAND, "working_dir": "/openhands/code/",
          "environment": {}, "resource_factor": 1}  # fmt: skip
    return {
        "app server": (warm_pool.app_start_body(APP_IMAGE) | {"session_id": "0123456789abcdef" * 2}, None),
        "SDK": (warm_pool.run_sh_body("sdk_start_body", SDK_IMAGE) | {"session_id": "agent-server-1"}, "sysbox-runc"),
        "V0": (v0, None),
        "V0 with SANDBOX_REMOTE_RUNTIME_CLASS=sysbox": (v0 | {"runtime_class": "sysbox-runc"}, "sysbox-runc"),
    }


def test_the_bodies_send_what_the_docs_say() -> None:
    """hack/run.sh's bodies are the clients' defaults: the app server sends no class, the SDK sysbox-runc."""
    for client, (body, sent) in client_starts().items():
        assert body.get("runtime_class") == sent, client
    table = section("### gVisor for every client")
    assert "| the OpenHands app server (V1) | none" in table
    assert "| the SDK's `APIRemoteWorkspace` | `sysbox-runc` |" in table


def render_with(helm: str, tmp_path: Path, values: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return render(helm, path, KUBE_CURRENT, *extra)


def operator_config(docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> OperatorConfig:
    with container_environment(docs, "t-kubehands-operator", monkeypatch):
        return OperatorConfig()


def sandbox_of(body: dict[str, Any], settings: Any) -> dict[str, Any]:
    """The Sandbox the gateway writes for this /start (`SandboxService.start`: derive, then name it)."""
    derived = objects.derive(StartRequest.model_validate(body), CALLER, settings)
    return objects.sandbox(derived, RUNTIME_ID, "kh-session-x")


def pod_of(sandbox: dict[str, Any], config: OperatorConfig) -> dict[str, Any]:
    """The pod the operator builds for it, after the checks that would refuse it (Ready=False/InvalidSpec)."""
    stored = Sandbox.model_validate(
        {**sandbox, "metadata": {**sandbox["metadata"], "namespace": "kubehands-sandboxes", "uid": "u-1"}}
    )
    assert validate_sandbox(stored, config) == []
    return build_pod(stored, config)


def test_gvisor_recipe_runs_every_client_under_gvisor(
    helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = gvisor_values()
    docs = render_with(helm, tmp_path, values)
    settings = gateway_settings(docs, monkeypatch)
    config = operator_config(docs, monkeypatch)
    assert set(values["sandbox"]["runtimeClassMap"].values()) == {"gvisor"}
    for client, (body, sent) in client_starts().items():
        sandbox = sandbox_of(body, settings)
        # The Sandbox records what was asked for (the default when nothing was); the pod gets what it maps to.
        assert sandbox["spec"]["runtimeClassName"] == (sent or "gvisor"), client
        assert pod_of(sandbox, config)["spec"]["runtimeClassName"] == "gvisor", client
    # Anything else is refused at /start, and a Sandbox written with kubectl without a mapped class by the operator.
    with pytest.raises(InvalidRequest, match="not offered"):
        sandbox_of(client_starts()["SDK"][0] | {"runtime_class": "runc"}, settings)
    stored = Sandbox.model_validate(sandbox_of(client_starts()["SDK"][0], settings) | {"metadata": {"name": "kh-x"}})
    stored.spec.runtime_class_name = "kata"
    assert validate_sandbox(stored, config) != []


def test_gvisor_recipe_warm_pools_serve_their_client(
    helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the page says: a pool that names no class serves the app server's /start; one for the SDK's names
    sysbox-runc; the operator boots both pools' members under gVisor."""
    values = gvisor_values() | {
        "pools": [
            {"name": "app", "size": 1},
            {"name": "sdk", "size": 1, "template": {"runtimeClassName": "sysbox-runc"}},
        ]
    }
    docs = render_with(helm, tmp_path, values)
    settings = gateway_settings(docs, monkeypatch)
    config = operator_config(docs, monkeypatch)
    pools = by_kind(docs, "SandboxPool")
    starts = client_starts()
    for pool, client in (("app", "app server"), ("sdk", "SDK")):
        requested = pools[pool]["spec"]["template"]["runtimeClassName"]
        assert requested == sandbox_of(starts[client][0], settings)["spec"]["runtimeClassName"], pool
        assert config.runtime_class_for(requested) == "gvisor", pool


def test_a_map_of_gvisor_alone_breaks_both_clients(helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the recipe maps sysbox-runc and sets a default: the map alone (the old GKE note) refuses the SDK's
    /start and runs the app server's sandboxes without gVisor."""
    docs = render_with(helm, tmp_path, {"sandbox": {"runtimeClassMap": {"gvisor": "gvisor"}}})
    settings = gateway_settings(docs, monkeypatch)
    config = operator_config(docs, monkeypatch)
    starts = client_starts()
    with pytest.raises(InvalidRequest, match="'sysbox-runc' is not offered"):
        sandbox_of(starts["SDK"][0], settings)
    app = sandbox_of(starts["app server"][0], settings)
    assert "runtimeClassName" not in app["spec"]
    assert "runtimeClassName" not in pod_of(app, config)["spec"]


def shell_default(path: Path, variable: str) -> str:
    found = re.search(rf'^{variable}="\$\{{{variable}:-([0-9.]+)\}}"$', path.read_text(), re.M)
    assert found is not None, variable
    return found.group(1)


def test_the_images_section_names_the_tarballs_make_images_writes() -> None:
    """The tarball names, image names and tags on the page are those of hack/lib/images.sh (`kh::images::tarball`:
    the reference with `/` and `:` replaced by `_`), and the kubehands image's tag is the chart's appVersion, which
    the chart's default `image.tag` takes."""
    import tomllib

    common = ROOT / "hack" / "lib" / "common.sh"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((ROOT / "charts" / "kubehands" / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    refs = [
        f"kubehands/kubehands:{version}",
        f"kubehands/agent-server:{shell_default(common, 'APP_AGENT_SERVER_VERSION')}",
        f"kubehands/agent-server:{shell_default(common, 'AGENT_SERVER_VERSION')}",
    ]
    images_sh = (ROOT / "hack" / "lib" / "images.sh").read_text()
    assert 'KUBEHANDS_IMAGE="kubehands/kubehands:${KUBEHANDS_VERSION}"' in images_sh
    assert "kh::images::tarball() { echo \"$IMAGES_DIR/$(echo \"$1\" | tr '/:' '__').tar\"; }" in images_sh
    stems = {ref.replace("/", "_").replace(":", "_"): ref for ref in refs}
    images = section("## Images")
    for stem, ref in stems.items():
        assert f"| `{stem}.tar` | `{ref}` |" in images, ref
        name, tag = ref.split("/", 1)[1].split(":")
        assert f"{stem}.tar docker://$REG/{name}:{tag}" in images, ref  # the registry copy keeps the tag
    mentioned = set(re.findall(r"kubehands_(?:kubehands|agent-server)_[0-9.]*[0-9]", images))
    assert mentioned == set(stems), mentioned ^ set(stems)
    # hack/kind-cluster.sh loads the same three.
    kind = (ROOT / "hack" / "kind-cluster.sh").read_text()
    assert 'for ref in "$AGENT_SERVER_IMAGE" "$APP_AGENT_SERVER_IMAGE" "$KUBEHANDS_IMAGE"; do' in kind
    assert "kind load image-archive" in kind


def test_the_registry_values_render_with_the_pushed_names(helm: str, tmp_path: Path) -> None:
    """The values block for a registry passes the chart's schema, and every control-plane container runs the pushed
    kubehands image, at the tag the skopeo line pushes."""
    [block] = re.findall(r"^  ```yaml\n(.*?)^  ```", section("## Images"), re.S | re.M)
    values = yaml.safe_load(textwrap.dedent(block))
    docs = render_with(helm, tmp_path, values | {"pools": [{"name": "app", "size": 1}]})
    images = {
        c["image"] for d in by_kind(docs, "Deployment").values() for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example.com/kubehands/kubehands:0.1.0"}
    assert "docker://$REG/kubehands:0.1.0" in section("## Images")
    [pool] = by_kind(docs, "SandboxPool").values()
    assert pool["spec"]["template"]["image"] == "registry.example.com/kubehands/agent-server:1.34.0"
