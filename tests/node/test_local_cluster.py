"""The local cluster gives what kubehands needs: workspace PVCs writable by uid 10001 that keep
their data across pods, and ClusterIP Services that route (for an in-cluster gateway)."""

import httpx
import pytest
from kubernetes import client

from tests.helpers.kube import api_client
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.node


def _pod(name: str, image: str, command: list[str], claim: str | None = None, labels: dict | None = None) -> dict:
    spec: dict = {
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 0,
        "restartPolicy": "Never",
        "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
        "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never", "command": command}],
    }
    if claim:
        spec["volumes"] = [{"name": "ws", "persistentVolumeClaim": {"claimName": claim}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "ws", "mountPath": "/workspace"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def _run_to_completion(core: client.CoreV1Api, namespace: str, pod: dict) -> str:
    name = pod["metadata"]["name"]
    core.create_namespaced_pod(namespace, pod)
    phase = wait_for(
        lambda: core.read_namespaced_pod(name, namespace).status.phase in ("Succeeded", "Failed")
        and core.read_namespaced_pod(name, namespace).status.phase,
        120,
        f"pod {name} to finish",
    )
    log = core.read_namespaced_pod_log(name, namespace)
    assert phase == "Succeeded", log
    return log


def test_default_storage_class_binds_and_uid_10001_writes(
    kubeconfig: str, namespace: str, agent_server_image: str
) -> None:
    with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "ws"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            },
        )
        wait_for(
            lambda: core.read_namespaced_persistent_volume_claim("ws", namespace).status.phase == "Bound",
            60,
            "the PVC to bind through the default StorageClass",
        )
        write = ["sh", "-c", "id -u > /workspace/owner && echo first >> /workspace/log && cat /workspace/log"]
        assert _run_to_completion(core, namespace, _pod("writer", agent_server_image, write, "ws")) == "first\n"
        # A second pod on the same claim sees the first one's file.
        read = ["sh", "-c", "echo second >> /workspace/log && cat /workspace/owner /workspace/log"]
        out = _run_to_completion(core, namespace, _pod("reader", agent_server_image, read, "ws"))
        assert out == "10001\nfirst\nsecond\n"


def test_cluster_ip_service_routes_from_the_host(kubeconfig: str, namespace: str, agent_server_image: str) -> None:
    with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        server = _pod("web", agent_server_image, ["python3", "-m", "http.server", "8000", "-d", "/etc"],
                      labels={"app": "web"})
        server["spec"]["restartPolicy"] = "Always"
        core.create_namespaced_pod(namespace, server)
        service = core.create_namespaced_service(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8000}]},
            },
        )
        url = f"http://{service.spec.cluster_ip}/hostname"

        def served() -> bool:
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(served, 120, f"{url} through kube-proxy")
        assert httpx.get(url, timeout=5).text.strip() == "web"
