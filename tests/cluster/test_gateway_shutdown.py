"""`kubehands gateway` stopped by a signal (Ctrl-C on `make run`, a pod's SIGTERM) leaves nothing in its TMPDIR.

The Kubernetes client writes the kubeconfig's CA, client certificate and key to temporary files and removes them
only when the interpreter exits normally; uvicorn ends the process by re-raising the signal it shut down on.
"""

import signal
from pathlib import Path

import pytest

from tests.helpers.processes import GatewayProcess, free_port

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_gateway_stopped_by_a_signal_removes_its_key_files(
    kubeconfig: str, namespace: str, tmp_path: Path, sig: signal.Signals
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    gateway = GatewayProcess(kubeconfig, namespace, free_port(), tmp_path / "gateway.log", TMPDIR=str(tmpdir))
    gateway.start()
    try:
        assert gateway.process is not None
        written = sorted(p.name for p in tmpdir.iterdir())
        assert written, "the client wrote no certificate files: this test would prove nothing"
        gateway.process.send_signal(sig)
        gateway.process.wait(timeout=30)
    finally:
        gateway.stop()
    assert "Application shutdown complete" in (tmp_path / "gateway.log").read_text()
    assert sorted(p.name for p in tmpdir.iterdir()) == [], f"left behind; it wrote {written}"
