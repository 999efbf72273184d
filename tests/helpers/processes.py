"""The operator and the gateway as child processes, and the local cluster's own processes, for tests that
kill or stall them."""

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


class ChildProcess:
    """A `kubehands` component as a child process, logging to a file, for tests that must kill it hard."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = [sys.executable, "-m", "kubehands.cli", *args]
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers, exactly like a crashed, OOM-killed or evicted pod."""
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


class OperatorProcess(ChildProcess):
    """`kubehands operator` watching one namespace, configured by `KUBEHANDS_*` variables (`env`) as in a pod."""

    def __init__(self, kubeconfig: str, namespace: str, log_path: Path, **env: str) -> None:
        super().__init__(["operator", "-n", namespace, "--verbose"], {"KUBECONFIG": kubeconfig, **env}, log_path)


class GatewayProcess(ChildProcess):
    """`kubehands gateway` on 127.0.0.1:`port`, configured by `KUBEHANDS_*` variables as in a pod."""

    def __init__(self, kubeconfig: str, namespace: str, port: int, log_path: Path, **env: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        settings = {
            "KUBEHANDS_KUBECONFIG": kubeconfig,
            "KUBEHANDS_NAMESPACE": namespace,
            "KUBEHANDS_PUBLIC_URL": self.url,
            **env,
        }
        super().__init__(["gateway", "--host", "127.0.0.1", "--port", str(port)], settings, log_path)

    def start(self, timeout: float = 60) -> None:
        super().start()
        wait_for(self.healthy, timeout, f"the gateway on {self.url} to report healthy (log: {self.log_path})")

    def healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log_path.read_text()[-4000:]
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


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
