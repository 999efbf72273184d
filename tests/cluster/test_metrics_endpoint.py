"""The operator's metrics endpoint, scraped over HTTP from a real `kubehands operator` process while it reconciles
Sandboxes and a warm pool against the real API server (docs/operator.md, "Metrics"); and the gateway's, on a port of
its own, never on its public port (docs/gateway.md, "Metrics").

No pod becomes Ready here (a missing image, a node selector no node matches): the cold start latency is asserted
in the node tier, where a real agent server starts.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from kubehands.crd import constants
from kubehands.crd.times import rfc3339
from tests.cluster.test_pools import MERGE, MISSING_IMAGE, PoolApi
from tests.helpers.kube import api_client
from tests.helpers.metrics import sample
from tests.helpers.processes import GatewayProcess, OperatorProcess, free_port
from tests.helpers.sandbox import sandbox_manifest
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def operator(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        kubeconfig, namespace, tmp_path / "operator.log", metrics_port=free_port(), KUBEHANDS_CULL_INTERVAL_SECONDS="1"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def kube(kubeconfig: str, namespace: str) -> Iterator[PoolApi]:
    with api_client(kubeconfig) as api:
        yield PoolApi(api, namespace)


def metric(operator: OperatorProcess, name: str, **labels: str) -> float | None:
    text = operator.scrape()
    return None if text is None else sample(text, name, **labels)


def reaches(operator: OperatorProcess, name: str, value: float, **labels: str) -> bool:
    """A wait_for predicate: the sample is at least `value`."""
    current = metric(operator, name, **labels)
    return current is not None and current >= value


def test_counters_and_gauges_move_with_the_sandboxes(operator: OperatorProcess, kube: PoolApi) -> None:
    text = wait_for(operator.scrape, 60, f"the metrics endpoint (log: {operator.log_path})")
    # Every fixed label set is there from the start, at 0.
    assert sample(text, "kubehands_operator_reconciles_total", kind="Sandbox", outcome="invalid") == 0
    assert sample(text, "kubehands_operator_culls_total", reason="failed") == 0
    assert sample(text, "kubehands_operator_culls_total", reason="paused_ttl") == 0
    assert sample(text, "kubehands_operator_errors_total", handler="sandbox", error="timeout") == 0
    assert sample(text, "kubehands_operator_sandboxes", phase="Paused", role="session") == 0
    assert sample(text, "kubehands_operator_sandbox_start_seconds_count", start="warm") == 0

    # A parked Sandbox shows in the phase gauge; an invalid one counts as an invalid converge.
    kube.create(sandbox_manifest("kh-parked", MISSING_IMAGE, state="Paused"))
    wait_for(lambda: metric(operator, "kubehands_operator_sandboxes", phase="Paused", role="session") == 1, 30,
             "1 Paused sandbox in the gauge")
    volumes = [{"name": "host", "mountPath": "/host", "hostPath": {"path": "/etc"}}]
    kube.create(sandbox_manifest("kh-host", MISSING_IMAGE, volumes=volumes))
    wait_for(lambda: reaches(operator, "kubehands_operator_reconciles_total", 1, kind="Sandbox", outcome="invalid"),
             30, "an invalid converge counted")
    assert reaches(operator, "kubehands_operator_reconciles_total", 1, kind="Sandbox", outcome="ok")

    # An image that never pulls: Failed, paused by the culler as failed, then deleted after its paused TTL.
    kube.create(sandbox_manifest("kh-broken", MISSING_IMAGE, idleTimeoutSeconds=1, pausedTTLSeconds=1))
    wait_for(lambda: reaches(operator, "kubehands_operator_culls_total", 1, reason="failed"), 90,
             "the failed sandbox's cull counted")
    # The TTL runs once the pause is done, i.e. once the kubelet has removed the pod: on a busy 2-core node that
    # took over a minute once (the kubelet works through a pod in image-pull back-off slowly).
    wait_for(lambda: not kube.exists("kh-broken"), 180, "the paused sandbox deleted after its TTL")
    wait_for(lambda: reaches(operator, "kubehands_operator_culls_total", 1, reason="paused_ttl"), 30,
             "the TTL deletion counted")
    assert metric(operator, "kubehands_operator_culls_total", reason="idle") == 0


def test_pool_numbers_claims_and_the_warm_start(operator: OperatorProcess, kube: PoolApi) -> None:
    """A pool fills (members created, desired); a claim and the gateway's init mark (simulated: the metadata the
    gateway writes) count a claim and one warm start."""
    ns = kube.namespace
    kube.create_pool("warm", 2)
    members = wait_for(lambda: kube.count("warm", 2), 60, "2 members")
    wait_for(lambda: metric(operator, "kubehands_operator_pool_desired", namespace=ns, pool="warm") == 2, 30,
             "the pool's desired size in the gauge")
    assert metric(operator, "kubehands_operator_pool_ready", namespace=ns, pool="warm") == 0  # never schedulable
    assert reaches(operator, "kubehands_operator_pool_members_created_total", 2, namespace=ns, pool="warm")
    wait_for(lambda: metric(operator, "kubehands_operator_sandboxes", phase="Starting", role="pool_member") == 2,
             30, "2 starting pool members in the gauge")
    assert reaches(operator, "kubehands_operator_reconciles_total", 1, kind="SandboxPool", outcome="ok")

    claimed = members[0]["metadata"]["name"]
    claim = {
        "metadata": {
            "labels": {constants.LABEL_POOL: None, constants.LABEL_POOL_TEMPLATE: None},
            "annotations": {
                constants.ANNOTATION_CLAIMED_FROM: "warm",
                constants.ANNOTATION_CLAIMED_AT: rfc3339(datetime.now(UTC)),
            },
            "ownerReferences": None,
        }
    }
    patch = {
        "namespace": ns,
        "name": claimed,
        "_content_type": MERGE,
        "group": constants.GROUP,
        "version": constants.VERSION,
        "plural": constants.PLURAL,
    }
    kube.custom.patch_namespaced_custom_object(body=claim, **patch)
    wait_for(lambda: metric(operator, "kubehands_operator_pool_claims_total", namespace=ns, pool="warm") == 1, 30,
             "the claim counted")
    wait_for(lambda: metric(operator, "kubehands_operator_pool_claimed", namespace=ns, pool="warm") == 1, 30,
             "status.claimed in the gauge")
    assert metric(operator, "kubehands_operator_sandbox_start_seconds_count", start="warm") == 0

    done = {"metadata": {"annotations": {constants.ANNOTATION_INIT: constants.INIT_READY}}}
    kube.custom.patch_namespaced_custom_object(body=done, **patch)
    wait_for(lambda: metric(operator, "kubehands_operator_sandbox_start_seconds_count", start="warm") == 1, 30,
             "one warm start observed")
    warm = metric(operator, "kubehands_operator_sandbox_start_seconds_sum", start="warm")
    assert warm is not None and 0 <= warm < 30
    # Another change of the claimed Sandbox, once converged, is no second start.
    converged = metric(operator, "kubehands_operator_reconciles_total", kind="Sandbox", outcome="ok") or 0
    kube.custom.patch_namespaced_custom_object(body={"metadata": {"annotations": {"x": "y"}}}, **patch)
    wait_for(lambda: reaches(operator, "kubehands_operator_reconciles_total", converged + 1, kind="Sandbox",
                             outcome="ok"), 30, "the update converged")
    assert metric(operator, "kubehands_operator_sandbox_start_seconds_count", start="warm") == 1


def test_the_gateway_serves_its_metrics_on_their_own_port_only(
    kubeconfig: str, namespace: str, kube: PoolApi, tmp_path: Path
) -> None:
    gateway = GatewayProcess(kubeconfig, namespace, free_port(), tmp_path / "gateway.log")
    gateway.start()
    try:
        assert sample(gateway.metrics(), "kubehands_cached_objects", cache="sandboxes") == 0
        kube.create(sandbox_manifest("kh-counted", MISSING_IMAGE, state="Paused"))
        wait_for(lambda: sample(gateway.metrics(), "kubehands_cached_objects", cache="sandboxes") == 1, 30,
                 "the gateway's cache gauge to count the sandbox at a scrape")
        public = httpx.get(f"{gateway.url}/metrics", timeout=10)
        assert public.status_code == 404 and "kubehands_" not in public.text
        # on --host's address only (127.0.0.1): another loopback address of this host does not answer
        with pytest.raises(httpx.ConnectError):
            httpx.get(gateway.metrics_url.replace("127.0.0.1", "127.0.0.2"), timeout=10)
    finally:
        gateway.stop()
