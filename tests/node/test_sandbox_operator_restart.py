"""Kill the operator (SIGKILL) while 20 Sandboxes are created; after a restart all 20 run and are ready,
with exactly one pod and one PVC each and nothing orphaned."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubehands.crd import constants
from tests.helpers.kube import api_client
from tests.helpers.sandbox import OperatorProcess, SandboxApi, sandbox_manifest
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.node
COUNT = 20


@pytest.fixture
def operator(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubeconfig, namespace, tmp_path / "operator.log")
    try:
        yield process
    finally:
        process.stop()
        print((tmp_path / "operator.log").read_text()[-4000:])


@pytest.mark.timeout(900)
def test_operator_restart_mid_creation(
    kubeconfig: str, namespace: str, agent_server_image: str, operator: OperatorProcess
) -> None:
    with api_client(kubeconfig) as api:
        sandboxes = SandboxApi(api, namespace)
        names = [f"kh-restart-{i:02d}" for i in range(COUNT)]
        operator.start()
        for name in names:
            sandboxes.create(sandbox_manifest(name, agent_server_image))
        # Kill it once it is demonstrably mid-way: some pods exist, not all.
        wait_for(lambda: 0 < len(sandboxes.pods()), 60, "the operator to start creating pods")
        operator.kill()  # how far it got varies from run to run; only the end state is asserted

        operator.start()

        def all_running() -> list[str] | None:
            pending = [n for n in names if sandboxes.phase(n, "Running", "ready") is None]
            return None if pending else names

        wait_for(all_running, 600, f"all {COUNT} Sandboxes Running and ready")
        pods = sandboxes.pods()
        assert sorted(p.metadata.name for p in pods) == names  # exactly one pod each, named after its Sandbox
        assert all(len(sandboxes.pvcs(n)) == 1 for n in names)

        # Nothing orphaned: every pod and PVC in the namespace, labelled or not, is controlled by a Sandbox
        # that exists, one of each per Sandbox.
        listed = sandboxes.custom.list_namespaced_custom_object(
            group=constants.GROUP, version=constants.VERSION, plural=constants.PLURAL, namespace=namespace
        )["items"]
        owners = {s["metadata"]["uid"]: s["metadata"]["name"] for s in listed}
        assert sorted(owners.values()) == names
        every_pod = sandboxes.core.list_namespaced_pod(namespace).items
        every_pvc = sandboxes.core.list_namespaced_persistent_volume_claim(namespace).items
        assert len(every_pod) == len(every_pvc) == len(owners) == COUNT
        for child in (*every_pod, *every_pvc):
            [owner] = [r for r in child.metadata.owner_references or [] if r.controller]
            assert owners.get(owner.uid) == owner.name, f"{type(child).__name__} {child.metadata.name} is an orphan"
        assert sorted(owners[p.metadata.owner_references[0].uid] for p in every_pod) == names
        assert sorted(f"{owners[c.metadata.owner_references[0].uid]}-workspace" for c in every_pvc) == sorted(
            c.metadata.name for c in every_pvc
        )
