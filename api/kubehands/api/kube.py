"""The gateway's Kubernetes client (kubernetes_asyncio), created once per app in the lifespan."""

import os

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from kubehands.api.settings import Settings


async def make_api_client(settings: Settings) -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (settings, $KUBECONFIG, ~/.kube)."""
    configuration = client.Configuration()
    if settings.kubeconfig:
        await config.load_kube_config(config_file=settings.kubeconfig, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            await config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
    return client.ApiClient(configuration)
