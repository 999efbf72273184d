"""The operator's own Kubernetes client (kopf is not an API client). One per operator run / event loop."""

import os
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config import ConfigException

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


@dataclass
class Kube:
    api: client.ApiClient
    core: client.CoreV1Api
    custom: client.CustomObjectsApi

    def to_dict(self, obj: Any) -> dict[str, Any]:
        """A client model as the API's JSON dict (camelCase keys)."""
        return dict(self.api.sanitize_for_serialization(obj))

    async def close(self) -> None:
        await self.api.close()


async def connect() -> Kube:
    """In-cluster service account first, else the kubeconfig (`$KUBECONFIG`), as kopf itself does."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        # Read $KUBECONFIG now: the library's default path was fixed when it was imported.
        await config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    api = client.ApiClient(configuration)
    return Kube(api=api, core=client.CoreV1Api(api), custom=client.CustomObjectsApi(api))
