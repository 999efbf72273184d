"""Warm pools for the client tests: the SandboxPool whose template matches exactly the /start a real client sends,
built by hack/pool-manifest.py (the gateway's own code, with the test gateway's Settings) and applied as it does.

The bodies are the clients' own: the OpenHands app server's default /start as hack/run.sh records it (its
`app_start_body` heredoc, which tests/unit/test_chart.py checks against the app), and what the SDK's
APIRemoteWorkspace (openhands-workspace 1.58.2, `_start_runtime`) sends for the arguments of
tests/helpers/openhands_sdk.py's FLOW.
"""

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from kubernetes import client

from kubehands.api.settings import Settings
from kubehands.crd import constants
from kubehands.kube import SANDBOX_POOLS, SANDBOXES
from tests.helpers.kube import api_client

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "hack" / "run.sh"
POOL_MANIFEST = ROOT / "hack" / "pool-manifest.py"


def load_pool_manifest() -> Any:
    """hack/pool-manifest.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("pool_manifest", POOL_MANIFEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_sh_body(function: str, image: str) -> dict[str, Any]:
    """The /start body of one of hack/run.sh's heredoc functions (`app_start_body`, `sdk_start_body`), for `image`."""
    found = re.search(rf"^{function}\(\) \{{\n  cat <<EOF\n(.*?)\nEOF\n\}}", RUN_SH.read_text(), re.S | re.M)
    assert found is not None, f"hack/run.sh has no {function} heredoc"
    body: dict[str, Any] = json.loads(found.group(1).replace("$SANDBOX_IMAGE", image))
    return body


def app_start_body(image: str) -> dict[str, Any]:
    """The /start the OpenHands app server (openhands-ai 1.11) sends by default for `image`: hack/run.sh's
    `app_start_body` heredoc, the body `make run` declares its pool for."""
    return run_sh_body("app_start_body", image)


def sdk_start_body(image: str, session_id: str, image_pull_policy: str = "Never") -> dict[str, Any]:
    """The /start APIRemoteWorkspace (openhands-workspace 1.58.2) sends: the binary target's command as one string,
    working_dir "/", no forwarded environment, user 10001 and fsGroup 10001 (no group), the model's default
    runtime_class "sysbox-runc", and no resource_factor (it only sends one other than 1)."""
    return {
        "image": image,
        "command": "/usr/local/bin/openhands-agent-server --port 60000",
        "working_dir": "/",
        "environment": {},
        "session_id": session_id,
        "run_as_user": 10001,
        "fs_group": 10001,
        "image_pull_policy": image_pull_policy,
        "runtime_class": "sysbox-runc",
    }


def declare_pool(kubeconfig: str, name: str, size: int, body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Create (or replace) the pool serving /starts like `body` on a gateway with `settings`; returns its manifest."""
    module = load_pool_manifest()
    manifest: dict[str, Any] = module.pool_manifest(name, size, body, settings)
    with api_client(kubeconfig) as api:
        module.apply(client.CustomObjectsApi(api), manifest)
    return manifest


def pool_status(kubeconfig: str, namespace: str, name: str) -> dict[str, Any]:
    with api_client(kubeconfig) as api:
        pool = client.CustomObjectsApi(api).get_namespaced_custom_object(
            namespace=namespace, name=name, **SANDBOX_POOLS.coordinates()
        )
    return dict(pool.get("status") or {})


def delete_pool(kubeconfig: str, namespace: str, name: str) -> None:
    """Delete the pool; its unclaimed members go with it (claimed sandboxes are no longer its members)."""
    with api_client(kubeconfig) as api:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            namespace=namespace, name=name, **SANDBOX_POOLS.coordinates()
        )


def claimed_from(sandbox: dict[str, Any]) -> str | None:
    """The pool a Sandbox was claimed from (its `kubehands.dev/claimed-from` annotation), None for a cold one."""
    return ((sandbox.get("metadata") or {}).get("annotations") or {}).get(constants.ANNOTATION_CLAIMED_FROM)


def is_member(sandbox: dict[str, Any]) -> bool:
    """An unclaimed pool member (a claim removes the pool label)."""
    return constants.LABEL_POOL in ((sandbox.get("metadata") or {}).get("labels") or {})


def pool_members(kubeconfig: str, namespace: str, name: str) -> list[str]:
    """The names of the pool's unclaimed members (being deleted or not)."""
    with api_client(kubeconfig) as api:
        listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
            namespace=namespace, label_selector=f"{constants.LABEL_POOL}={name}", **SANDBOXES.coordinates()
        )
    return sorted(m["metadata"]["name"] for m in listed["items"])


def sandbox(kubeconfig: str, namespace: str, name: str) -> dict[str, Any]:
    with api_client(kubeconfig) as api:
        return dict(
            client.CustomObjectsApi(api).get_namespaced_custom_object(
                namespace=namespace, name=name, **SANDBOXES.coordinates()
            )
        )
