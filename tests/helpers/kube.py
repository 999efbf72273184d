"""Small Kubernetes helpers for tests: a client for a kubeconfig, and CRD installation."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.helpers.wait import wait_for


@contextmanager
def api_client(kubeconfig: str) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        yield api
    finally:
        api.close()


def apply_crds(kubeconfig: str, files: list[Path], timeout: float = 30) -> None:
    """Create or replace each CRD, then wait until the API server serves it (Established)."""
    with api_client(kubeconfig) as api:
        ext = client.ApiextensionsV1Api(api)
        names = []
        for path in files:
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc:
                    continue
                name = doc["metadata"]["name"]
                names.append(name)
                try:
                    current = ext.read_custom_resource_definition(name)
                    doc["metadata"]["resourceVersion"] = current.metadata.resource_version
                    ext.replace_custom_resource_definition(name, doc)
                except ApiException as e:
                    if e.status != 404:
                        raise
                    ext.create_custom_resource_definition(doc)

        def established() -> bool:
            for name in names:
                conds = ext.read_custom_resource_definition(name).status.conditions or []
                if not any(c.type == "Established" and c.status == "True" for c in conds):
                    return False
            return True

        wait_for(established, timeout, f"CRDs {names} established")
