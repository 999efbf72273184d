"""The gateway as a child process, and the local cluster's own processes, for tests that kill or stall them."""

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.helpers.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """`kubehands gateway` on 127.0.0.1:`port`, configured by `KUBEHANDS_*` variables as in a pod."""

    def __init__(self, kubeconfig: str, namespace: str, port: int, log_path: Path, **env: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.args = [sys.executable, "-m", "kubehands.cli", "gateway", "--host", "127.0.0.1", "--port", str(port)]
        self.env = {
            **os.environ,
            "KUBEHANDS_KUBECONFIG": kubeconfig,
            "KUBEHANDS_NAMESPACE": namespace,
            "KUBEHANDS_PUBLIC_URL": self.url,
            **env,
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.healthy, timeout, f"the gateway on {self.url} to report healthy (log: {self.log_path})")

    def healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log_path.read_text()[-4000:]
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no lifespan shutdown, exactly like an OOM-killed or evicted gateway pod."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def cluster_pid(cluster: dict[str, str], component: str) -> int:
    """PID of a component of the local cluster, from the PID file hack/cluster.sh keeps."""
    state = Path(cluster["KUBECONFIG"]).parent
    pid = int((state / "pids" / f"{component}.pid").read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert component in cmdline, f"PID {pid} is not {component}: {cmdline}"
    return pid


@contextmanager
def stalled(pid: int) -> Iterator[None]:
    """SIGSTOP the process for the block's duration; SIGCONT always, even when the block fails."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
