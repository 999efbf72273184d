"""The Helm chart installed on the local cluster with the locally built images.

One journey: install -> operator and gateway Ready -> GET /health through the gateway Service's
ClusterIP (routable from the host on this cluster) -> /start with the installed admin key -> the
sandbox runs, without a service-account token -> /stop -> no RBAC errors in the control-plane logs ->
the SDK's APIRemoteWorkspace flow through the in-cluster gateway -> `helm uninstall` leaves only the
documented leftovers (docs/install.md, "Uninstalling").
"""

import base64
import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.helpers import openhands_sdk
from tests.helpers.kube import api_client
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.node, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubehands"
# Log lines that mean the installed RBAC is too narrow.
SANDBOX_DOMAIN = "sbx.kubehands.test"
PERMISSION_ERRORS = ("forbidden", "not enough permissions", " 403", "(403)", "status=403")


@pytest.fixture(scope="session")
def helm() -> str:
    result = subprocess.run([str(ROOT / "hack" / "helm.sh")], capture_output=True, text=True)
    assert result.returncode == 0, f"hack/helm.sh failed:\n{result.stderr}"
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def kubehands_image(cluster: dict[str, str]) -> str:
    """Build the kubehands image and import it into the node's containerd (imagePullPolicy: Never).

    KUBEHANDS_CHART_TEST_IMAGE names an image already in the node's containerd instead.
    """
    if os.environ.get("KUBEHANDS_CHART_TEST_IMAGE"):
        return os.environ["KUBEHANDS_CHART_TEST_IMAGE"]
    built = subprocess.run(
        [str(ROOT / "hack" / "build-images.sh"), "kubehands"], capture_output=True, text=True
    )
    if built.returncode != 0:
        pytest.fail(f"building the kubehands image failed:\n{built.stderr[-4000:]}")
    version = next(
        line.split('"')[1]
        for line in (ROOT / "pyproject.toml").read_text().splitlines()
        if line.startswith("version = ")
    )
    return f"kubehands/kubehands:{version}"


@dataclass
class Release:
    name: str
    namespace: str  # the release (control-plane) namespace
    sandbox_namespace: str
    fullname: str
    kubeconfig: str

    def helm(self, helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [helm, "--kubeconfig", self.kubeconfig, "-n", self.namespace, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if check:
            assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"
        return result


def deployment_ready(apps: client.AppsV1Api, namespace: str, name: str) -> bool:
    d = apps.read_namespaced_deployment(name, namespace)
    want = d.spec.replicas or 0
    return (
        (d.status.observed_generation or 0) >= d.metadata.generation
        and (d.status.ready_replicas or 0) == want
        and (d.status.updated_replicas or 0) == want
    )


def pod_logs(core: client.CoreV1Api, namespace: str, selector: str) -> str:
    out = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        for container in pod.spec.containers:
            try:
                text = core.read_namespaced_pod_log(pod.metadata.name, namespace, container=container.name)
            except ApiException as e:
                text = f"<no logs: {e.status}>"
            out.append(f"--- {pod.metadata.name}/{container.name}\n{text}")
    return "\n".join(out)


def describe_pods(core: client.CoreV1Api, namespace: str) -> str:
    lines = []
    for pod in core.list_namespaced_pod(namespace).items:
        statuses = [
            (s.name, s.ready, s.restart_count, s.state.waiting and s.state.waiting.reason)
            for s in pod.status.container_statuses or []
        ]
        lines.append(f"{pod.metadata.name}: {pod.status.phase} {statuses}")
    events = core.list_namespaced_event(namespace).items[-15:]
    lines += [
        f"event {e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}" for e in events
    ]
    return "\n".join(lines)


@pytest.fixture
def release(
    kubeconfig: str, namespace: str, helm: str, kubehands_image: str, agent_server_image: str
) -> Iterator[Release]:
    suffix = namespace.rsplit("-", 1)[-1][:6]
    name = f"kh{suffix}"
    rel = Release(name, namespace, f"{namespace}-sbx", f"{name}-kubehands", kubeconfig)
    repository, tag = kubehands_image.rsplit(":", 1)
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        # keepRawKey: this test reads the generated admin key back from its Secret (off by default:
        # the gateway could read it too; docs/install.md).
        "api": {"replicas": 1, "adminKey": {"keepRawKey": True}},
        # Subdomain mode, because the SDK's APIRemoteWorkspace cannot use path mode (tests/helpers/openhands_sdk.py).
        # This machine has no wildcard DNS for it: the SDK uses the gateway Service as its HTTP proxy, which a user
        # can do too (HTTP_PROXY); the gateway routes the proxied requests by their Host.
        "routing": {"mode": "subdomain", "domain": SANDBOX_DOMAIN, "subdomainScheme": "http"},
        "sandbox": {
            "namespace": rel.sandbox_namespace,
            "imagePullPolicy": "Never",
            "workspace": {"size": "1Gi"},
            "baseResources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
        },
    }
    values_file = Path(kubeconfig).parent / f"values-{name}.json"
    values_file.write_text(json.dumps(values))
    try:
        rel.helm(helm, "install", name, str(CHART), "-f", str(values_file))
        yield rel
    finally:
        values_file.unlink(missing_ok=True)
        rel.helm(helm, "uninstall", name, "--wait", "--timeout", "3m", check=False)


def test_install_start_stop_uninstall(
    release: Release, helm: str, agent_server_image: str, tmp_path: Path
) -> None:
    with api_client(release.kubeconfig) as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        custom, rbac = client.CustomObjectsApi(api), client.RbacAuthorizationV1Api(api)

        # Both Deployments become Ready.
        for component in ("operator", "gateway"):
            deployment = f"{release.fullname}-{component}"
            try:
                wait_for(
                    lambda d=deployment: deployment_ready(apps, release.namespace, d),
                    240,
                    f"{deployment} Ready",
                )
            except TimeoutError:
                pytest.fail(
                    f"{deployment} not Ready:\n{describe_pods(core, release.namespace)}\n"
                    f"{pod_logs(core, release.namespace, f'app.kubernetes.io/component={component}')[-4000:]}"
                )

        def no_sandboxes() -> bool:
            listed = custom.list_namespaced_custom_object(
                "kubehands.dev", "v1alpha1", release.sandbox_namespace, "sandboxes"
            )
            return not listed["items"]

        # The gateway answers through its Service.
        service = core.read_namespaced_service(f"{release.fullname}-gateway", release.namespace)
        base = f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"
        health = wait_for(lambda: httpx.get(f"{base}/health", timeout=5), 60, "GET /health")
        assert health.status_code == 200 and health.json()["cache_synced"] is True

        # The helm test hook passes too.
        release.helm(helm, "test", release.name, "--timeout", "2m")

        # The installed admin key works; a wrong one does not.
        secret = core.read_namespaced_secret(f"{release.fullname}-admin-key", release.namespace)
        key = base64.b64decode(secret.data["api-key"]).decode()
        assert httpx.get(f"{base}/list", headers={"X-API-Key": "khk_wrong"}, timeout=10).status_code == 401
        headers = {"X-API-Key": key}

        # An upgrade keeps the generated key (the chart looks the existing Secrets up).
        release.helm(
            helm, "upgrade", release.name, str(CHART), "--reuse-values", "--set", "api.logLevel=debug"
        )
        again = core.read_namespaced_secret(f"{release.fullname}-admin-key", release.namespace)
        assert base64.b64decode(again.data["api-key"]).decode() == key
        hashed = core.read_namespaced_secret("kh-apikey-admin", release.namespace)
        assert base64.b64decode(hashed.data["sha256"]).decode() == hashlib.sha256(key.encode()).hexdigest()
        wait_for(
            lambda: deployment_ready(apps, release.namespace, f"{release.fullname}-gateway"), 180, "rollout"
        )
        wait_for(
            lambda: httpx.get(f"{base}/health", timeout=5).status_code == 200, 60, "GET /health after upgrade"
        )
        started = httpx.post(
            f"{base}/start",
            headers=headers,
            timeout=60,
            json={"image": agent_server_image, "session_id": f"chart-{uuid.uuid4().hex[:8]}"},
        )
        assert started.status_code in (200, 201), started.text
        runtime_id = started.json()["runtime_id"]

        def running() -> dict[str, Any] | None:
            body = httpx.get(f"{base}/runtime/{runtime_id}", headers=headers, timeout=10).json()
            return body if body.get("status") == "running" and body.get("pod_status") == "ready" else None

        try:
            wait_for(running, 300, f"sandbox {runtime_id} running")
        except TimeoutError:
            pytest.fail(
                f"sandbox not running:\n{describe_pods(core, release.sandbox_namespace)}\n"
                f"{pod_logs(core, release.namespace, 'app.kubernetes.io/component=operator')[-4000:]}"
            )

        # The sandbox pod carries no service-account token.
        [pod] = core.list_namespaced_pod(
            release.sandbox_namespace, label_selector="app.kubernetes.io/component=sandbox"
        ).items
        assert pod.spec.automount_service_account_token is False
        for container in pod.spec.containers + (pod.spec.init_containers or []):
            mounts = [m.mount_path for m in container.volume_mounts or []]
            assert not any(m.startswith("/var/run/secrets/kubernetes.io") for m in mounts), mounts

        stopped = httpx.post(f"{base}/stop", headers=headers, json={"runtime_id": runtime_id}, timeout=60)
        assert stopped.status_code == 200, stopped.text
        wait_for(no_sandboxes, 120, "Sandbox deleted")

        # The SDK's APIRemoteWorkspace flow through the in-cluster gateway: start, command, file
        # upload/download, pause, resume, stop.
        sdk = subprocess.run(
            openhands_sdk.sdk_command(openhands_sdk.sdk_python(), base, key, agent_server_image, "chart-sdk"),
            env=openhands_sdk.sdk_env(tmp_path, proxy=base),
            capture_output=True, text=True, timeout=600,
        )
        openhands_sdk.assert_flow_passed(sdk.returncode, sdk.stdout + sdk.stderr)
        wait_for(no_sandboxes, 120, "the SDK's Sandbox deleted")

        # The installed RBAC was enough for all of that.
        for component in ("operator", "gateway"):
            logs = pod_logs(core, release.namespace, f"app.kubernetes.io/component={component}")
            bad = [line for line in logs.splitlines() if any(p in line.lower() for p in PERMISSION_ERRORS)]
            assert bad == [], f"{component} logged permission errors"

        # Uninstall leaves nothing of the release behind but the documented leftovers: the CRD.
        release.helm(helm, "uninstall", release.name, "--wait", "--timeout", "3m")
        instance = f"app.kubernetes.io/instance={release.name}"

        def leftovers() -> list[str]:
            found = [
                f"{kind}/{o.metadata.namespace}/{o.metadata.name}"
                for kind, items in (
                    ("deployment", apps.list_deployment_for_all_namespaces(label_selector=instance).items),
                    ("pod", core.list_pod_for_all_namespaces(label_selector=instance).items),
                    ("secret", core.list_secret_for_all_namespaces(label_selector=instance).items),
                    (
                        "serviceaccount",
                        core.list_service_account_for_all_namespaces(label_selector=instance).items,
                    ),
                    ("service", core.list_service_for_all_namespaces(label_selector=instance).items),
                    ("role", rbac.list_role_for_all_namespaces(label_selector=instance).items),
                    ("rolebinding", rbac.list_role_binding_for_all_namespaces(label_selector=instance).items),
                    ("clusterrole", rbac.list_cluster_role(label_selector=instance).items),
                    ("clusterrolebinding", rbac.list_cluster_role_binding(label_selector=instance).items),
                )
                for o in items
            ]
            found += [
                f"namespace/{n.metadata.name}"
                for n in core.list_namespace().items
                if n.metadata.name == release.sandbox_namespace
            ]
            return found

        try:
            wait_for(lambda: not leftovers(), 180, "uninstall to remove every object of the release")
        except TimeoutError:
            pytest.fail(f"helm uninstall left behind: {leftovers()}")
        client.ApiextensionsV1Api(api).read_custom_resource_definition("sandboxes.kubehands.dev")  # kept
