"""Kill the operator (SIGKILL) while 20 Sandboxes are created; after a restart all 20 run, one pod each."""

from collections.abc import Iterator
from pathlib import Path

import pytest

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
            pending = [n for n in names if sandboxes.status(n).get("phase") != "Running"]
            return None if pending else names

        wait_for(all_running, 600, f"all {COUNT} Sandboxes Running")
        pods = sandboxes.pods()
        assert sorted(p.metadata.name for p in pods) == names  # exactly one pod each, named after its Sandbox
        assert all(len(sandboxes.pvcs(n)) == 1 for n in names)
