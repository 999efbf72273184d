"""Session fixtures shared by every tier.

The `cluster` fixture brings the local Kubernetes up once per session (hack/cluster.sh up) and tears
it down at the end, even when tests fail. A cluster that was already running (`make cluster`) is used
and left running; one that was stopped with its state kept (Ctrl-C on `make run`) is started and stopped again,
its state kept. A cluster that cannot start is a failure, never a skip.

tests/host is collected only when the command line names it (`pytest tests/host`): its tests start and stop
clusters of their own, so hack/test.sh runs them in a pytest run of their own, after the others.
"""

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.paths import STATE

# The gateways tests build in-process (Settings(), their lifespan) serve no metrics unless the test gives them a
# port: the default one (8091) may be `make run`'s, or another test's beside this one. Child gateways
# (tests/helpers/processes.py GatewayProcess) get a port of their own.
os.environ.setdefault("KUBEHANDS_GATEWAY_METRICS_PORT", "0")

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_SH = ROOT / "hack" / "cluster.sh"
TIER_ORDER = {"unit": 0, "cluster": 1, "node": 2, "host": 3}
HOST_TIER = ROOT / "tests" / "host"


def _names_host_tier(arg: str, invocation_dir: Path) -> bool:
    path = (invocation_dir / arg.split("::", 1)[0]).resolve()
    return path == HOST_TIER or HOST_TIER in path.parents


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave tests/host out unless an argument names it (or a file in it)."""
    if collection_path != HOST_TIER:
        return None
    if any(_names_host_tier(arg, config.invocation_params.dir) for arg in config.args):
        return None
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the fast tiers first, and mark every test by its folder if it has no tier marker."""
    for item in items:
        tier = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        if tier in TIER_ORDER and not any(item.get_closest_marker(t) for t in TIER_ORDER):
            item.add_marker(getattr(pytest.mark, tier))

    def rank(item: pytest.Item) -> int:
        return min((TIER_ORDER[m.name] for m in item.iter_markers() if m.name in TIER_ORDER), default=0)

    items.sort(key=rank)

@pytest.fixture(scope="session")
def cluster() -> Iterator[dict[str, str]]:
    """The running local cluster as its `NAME=value` lines (KUBECONFIG=...)."""
    status = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, text=True)
    started_here = status.returncode != 0
    # A user's stopped cluster (make run's key, sandboxes and workspaces) is stopped again, never deleted.
    teardown = "stop" if (STATE / "initialized").exists() else "down"
    if started_here:
        up = subprocess.run([str(CLUSTER_SH), "up"], capture_output=True, text=True)
        if up.returncode != 0:
            subprocess.run([str(CLUSTER_SH), teardown], capture_output=True)
            pytest.fail(f"the local cluster did not start (run `make cluster`):\n{up.stderr[-4000:]}")
        status = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, text=True, check=True)
    env = dict(line.split("=", 1) for line in status.stdout.splitlines() if "=" in line)
    try:
        yield env
    finally:
        if started_here and not os.environ.get("KUBEHANDS_KEEP_CLUSTER"):
            subprocess.run([str(CLUSTER_SH), teardown], check=False)

@pytest.fixture(scope="session")
def kubeconfig(cluster: dict[str, str]) -> str:
    """Admin kubeconfig of the local cluster, with the project's CRDs installed and established."""
    path = cluster["KUBECONFIG"]
    crd_files = sorted((ROOT / "crds").glob("*.yaml"))
    if crd_files:
        from tests.helpers.kube import apply_crds

        apply_crds(path, crd_files)
    return path

@pytest.fixture(scope="session")
def kubectl(cluster: dict[str, str]) -> str:
    """The kubectl built with the cluster's Kubernetes (hack/build-kubernetes.sh), as `cluster.sh status` names it."""
    path = cluster.get("KUBECTL", "")
    assert os.access(path, os.X_OK), f"no kubectl at {path!r}: run hack/build-kubernetes.sh"
    return path


@pytest.fixture
def namespace(kubeconfig: str) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (KUBEHANDS_KEEP_NAMESPACE=1 keeps it)."""
    from kubernetes import client

    from tests.helpers.kube import api_client

    name = f"kh-test-{uuid.uuid4().hex[:10]}"
    with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        try:
            yield name
        finally:
            if not os.environ.get("KUBEHANDS_KEEP_NAMESPACE"):
                core.delete_namespace(name, propagation_policy="Background", grace_period_seconds=0)

@pytest.fixture(scope="session")
def agent_server_image(cluster: dict[str, str]) -> str:
    """The locally built sandbox image, present in the node's containerd (imagePullPolicy: Never)."""
    built = subprocess.run(
        [str(ROOT / "hack" / "build-images.sh"), "agent-server"], capture_output=True, text=True
    )
    if built.returncode != 0:
        pytest.fail(f"building the agent-server image failed:\n{built.stderr[-4000:]}")
    return cluster["SANDBOX_IMAGE"]


@pytest.fixture(scope="session")
def app_agent_server_image(cluster: dict[str, str], agent_server_image: str) -> str:
    """The agent-server image of the OpenHands app (openhands-ai 1.11): the release of the SDK it bundles (1.34.0),
    built and imported with the SDK's (`agent_server_image`)."""
    return cluster["APP_SANDBOX_IMAGE"]
