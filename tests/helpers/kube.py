"""Small Kubernetes helpers for tests: a client for a kubeconfig, and CRD installation.

`apply_crds` is the product's (`kubehands.crd.install`), so tests, `make run` and the benchmarks
install CRDs the same way; tests may import product code, never the other way round.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes import client, config

from kubehands.crd.install import apply_crds

__all__ = ["api_client", "apply_crds"]


@contextmanager
def api_client(kubeconfig: str) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        yield api
    finally:
        api.close()
