"""hack/pool-manifest.py against the real API server: the pool `make run` declares is created, left alone when
unchanged, replaced when its spec changes (keeping what others wrote into its metadata), and deleted."""

from pathlib import Path

import pytest
from kubernetes import client

from kubehands.api.settings import Settings
from kubehands.kube import SANDBOX_POOLS
from tests.helpers.kube import api_client
from tests.helpers.warm_pool import load_pool_manifest

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
START = {"image": "kubehands/agent-server:1.58.2", "session_id": "s", "working_dir": "/workspace"}




def test_pool_manifest_apply_creates_replaces_and_deletes(kubeconfig: str, namespace: str) -> None:
    module = load_pool_manifest()
    settings = Settings(namespace=namespace, public_url="http://127.0.0.1:8080")
    manifest = module.pool_manifest("openhands-app", 2, START, settings)
    with api_client(kubeconfig) as api:
        custom = client.CustomObjectsApi(api)
        coordinates = {"namespace": namespace, **SANDBOX_POOLS.coordinates()}

        assert module.apply(custom, manifest) == "created"
        assert module.apply(custom, manifest) == "unchanged"

        # someone else's label survives a replace; the spec is ours
        custom.patch_namespaced_custom_object(
            name="openhands-app",
            body={"metadata": {"labels": {"other": "label"}}},
            _content_type="application/merge-patch+json",
            **coordinates,
        )
        bigger = module.pool_manifest("openhands-app", 3, START, settings)
        assert module.apply(custom, bigger) == "replaced"
        stored = custom.get_namespaced_custom_object(name="openhands-app", **coordinates)
        assert stored["spec"]["size"] == 3 and stored["spec"]["template"] == bigger["spec"]["template"]
        assert stored["metadata"]["labels"]["other"] == "label"

        assert module.delete(custom, namespace, "openhands-app") == "deleted"
        assert module.delete(custom, namespace, "openhands-app") == "absent"
