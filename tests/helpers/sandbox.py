"""Sandbox test helpers: manifests, the operator under test, and API shortcuts (sync client)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kopf.testing
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubehands.crd import constants
from tests.helpers.processes import OperatorProcess  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[2]
SESSION_KEY = "test-session-key"
SMALL_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}


def sandbox_manifest(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "labels": {constants.LABEL_OWNER: "tests"}},
        "spec": {
            "image": image,
            "imagePullPolicy": "Never",
            "resources": SMALL_RESOURCES,
            "sessionKeySecretRef": {"name": f"{name}-session"},
            **spec,
        },
    }


class SandboxApi:
    """Shortcuts over one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._crd = {"group": constants.GROUP, "version": constants.VERSION, "plural": constants.PLURAL}

    def create(self, manifest: dict[str, Any], with_secret: bool = True) -> dict[str, Any]:
        name = manifest["metadata"]["name"]
        if with_secret:
            self.core.create_namespaced_secret(
                self.namespace,
                {
                    "metadata": {"name": manifest["spec"]["sessionKeySecretRef"]["name"]},
                    "stringData": {constants.DEFAULT_SESSION_KEY_SECRET_KEY: f"{SESSION_KEY}-{name}"},
                },
            )
        return dict(
            self.custom.create_namespaced_custom_object(namespace=self.namespace, body=manifest, **self._crd)
        )

    def get(self, name: str) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(namespace=self.namespace, name=name, **self._crd)
        )

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def patch_spec(self, name: str, **spec: Any) -> None:
        self.custom.patch_namespaced_custom_object(
            namespace=self.namespace,
            name=name,
            body={"spec": spec},
            _content_type="application/merge-patch+json",
            **self._crd,
        )

    def patch_status(self, name: str, **status: Any) -> None:
        self.custom.patch_namespaced_custom_object_status(
            namespace=self.namespace,
            name=name,
            body={"status": status},
            _content_type="application/merge-patch+json",
            **self._crd,
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(namespace=self.namespace, name=name, **self._crd)

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    def pods(self, sandbox: str | None = None) -> list[client.V1Pod]:
        selector = f"{constants.LABEL_MANAGED_BY}={constants.MANAGED_BY}"
        if sandbox:
            selector += f",{constants.LABEL_SANDBOX}={sandbox}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def pvcs(self, sandbox: str) -> list[client.V1PersistentVolumeClaim]:
        selector = f"{constants.LABEL_SANDBOX}={sandbox}"
        return list(
            self.core.list_namespaced_persistent_volume_claim(self.namespace, label_selector=selector).items
        )

    def events(self, name: str) -> list[client.CoreV1Event]:
        return list(
            self.core.list_namespaced_event(
                self.namespace, field_selector=f"involvedObject.name={name}"
            ).items
        )

    def phase(self, name: str, phase: str, pod_status: str | None = None) -> dict[str, Any] | None:
        """The status when it shows `phase` (and `pod_status`), else None: a wait_for predicate."""
        status = self.status(name)
        if status.get("phase") == phase and (pod_status is None or status.get("podStatus") == pod_status):
            return status
        return None


@contextmanager
def operator_in_thread(kubeconfig: str, namespace: str, **env: str) -> Iterator[kopf.testing.KopfRunner]:
    """The operator in this process (kopf's KopfRunner), watching one namespace; no metrics endpoint unless
    `KUBEHANDS_METRICS_PORT` is given."""
    env = {"KUBEHANDS_METRICS_PORT": "0", **env}
    saved = {k: os.environ.get(k) for k in ("KUBECONFIG", *env)}
    os.environ.update({"KUBECONFIG": kubeconfig, **env})
    try:
        args = ["run", "--standalone", "-n", namespace, "-m", "kubehands.operator", "--verbose"]
        with kopf.testing.KopfRunner(args, timeout=60) as runner:
            yield runner
        assert runner.exception is None, runner.output[-4000:]
        assert runner.exit_code == 0, runner.output[-4000:]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
