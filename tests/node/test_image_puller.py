"""The chart's image pre-puller (prePuller, docs/install.md) runs on a real node with the real images.

Only its DaemonSet is rendered (`helm template --show-only`) and created in the test's namespace: its
least-privilege pod (uid 65534, read-only root filesystem, no capabilities, no token) must still run the
agent-server image's `true` and the pause image, and stay Running. The images are the ones the cluster
imported (imagePullPolicy Never: this cluster pulls nothing).
"""

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.helpers.kube import api_client
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.node

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubehands"


def rendered_puller(namespace: str, sandbox_image: str) -> dict[str, Any]:
    helm = subprocess.run([str(ROOT / "hack" / "helm.sh")], capture_output=True, text=True)
    assert helm.returncode == 0, helm.stderr
    repository, tag = sandbox_image.rsplit(":", 1)
    settings = [
        "prePuller.enabled=true",
        "prePuller.imagePullPolicy=Never",
        "prePuller.pause.image.pullPolicy=Never",
        f"sandbox.image.repository={repository}",
        f"sandbox.image.tag={tag}",
    ]
    cmd = [helm.stdout.strip().splitlines()[-1], "template", "t", str(CHART), "-n", namespace]
    cmd += ["--show-only", "templates/image-puller.yaml", "--set", ",".join(settings)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    daemon_set: dict[str, Any] = yaml.safe_load(done.stdout)
    return daemon_set


def test_image_puller_runs_the_sandbox_image_and_stays(
    kubeconfig: str, namespace: str, cluster: dict[str, str]
) -> None:
    daemon_set = rendered_puller(namespace, cluster["SANDBOX_IMAGE"])
    with api_client(kubeconfig) as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        apps.create_namespaced_daemon_set(namespace, daemon_set)
        selector = ",".join(f"{k}={v}" for k, v in daemon_set["spec"]["selector"]["matchLabels"].items())

        def running_pod() -> client.V1Pod | None:
            pods = core.list_namespaced_pod(namespace, label_selector=selector).items
            ready = [
                p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            ]
            return ready[0] if ready else None

        try:
            pod = wait_for(running_pod, 120, "the image puller pod to be Ready")
        except TimeoutError:
            pods = core.list_namespaced_pod(namespace, label_selector=selector).items
            events = [f"{e.reason}: {e.message}" for e in core.list_namespaced_event(namespace).items[-10:]]
            pytest.fail(f"image puller not Ready: {[p.status for p in pods]}\n" + "\n".join(events))
        [init] = pod.status.init_container_statuses
        assert init.image.endswith(cluster["SANDBOX_IMAGE"])
        assert init.state.terminated is not None and init.state.terminated.exit_code == 0
        [pause] = pod.status.container_statuses
        assert pause.state.running is not None and pause.restart_count == 0
        assert not any(v.secret for v in pod.spec.volumes or []), "the pod has no service-account token"
        nodes = core.list_node().items
        status = wait_for(
            lambda: (
                (s := apps.read_namespaced_daemon_set(daemon_set["metadata"]["name"], namespace).status)
                and s.number_ready == s.desired_number_scheduled
                and s
            ),
            30,
            "the DaemonSet to count its pods ready",
        )
        assert status.desired_number_scheduled == len(nodes)
