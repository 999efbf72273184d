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


def free_port_range(count: int, start: int = 21000) -> str:
    """`first-last`: `count` consecutive free ports on 127.0.0.1 (below the ephemeral and NodePort ranges)."""
    from kubehands.api.cli.gateway import listening_sockets

    for first in range(start, 30000 - count, count):
        try:
            sockets = listening_sockets("127.0.0.1", range(first, first + count))
        except OSError:
            continue
        for sock in sockets:
            sock.close()
        return f"{first}-{first + count - 1}"
    raise AssertionError(f"no {count} consecutive free ports between {start} and 30000")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout` seconds; reaped either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


class ChildProcess:
    """A `kubehands` component as a child process, logging to a file, for tests that must kill it hard.

    Its TMPDIR is a folder beside the log (the test's tmp_path): the Kubernetes client writes the kubeconfig's
    certificate and key files there, which a SIGKILL leaves behind."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = [sys.executable, "-m", "kubehands.cli", *args]
        tmpdir = log_path.parent / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TMPDIR": str(tmpdir), **env}
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
        if self.process is not None:
            stop_process(self.process)


class OperatorProcess(ChildProcess):
    """`kubehands operator` watching one namespace. Its metrics are served on 127.0.0.1:`metrics_port`, or not at
    all (the default: tests run side by side, and no fixed port is free for all of them)."""

    def __init__(self, kubeconfig: str, namespace: str, log_path: Path, metrics_port: int = 0, **env: str) -> None:
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        settings = {
            "KUBECONFIG": kubeconfig,
            "KUBEHANDS_METRICS_HOST": "127.0.0.1",
            "KUBEHANDS_METRICS_PORT": str(metrics_port),
            **env,
        }
        super().__init__(["operator", "-n", namespace, "--verbose"], settings, log_path)

    def scrape(self) -> str | None:
        """The metrics text, or None while the endpoint does not answer yet."""
        assert self.process is not None and self.process.poll() is None, self.log_path.read_text()[-4000:]
        try:
            response = httpx.get(self.metrics_url, timeout=5)
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None


class GatewayProcess(ChildProcess):
    """`kubehands gateway` on 127.0.0.1:`port`, configured by `KUBEHANDS_*` variables as in a pod. Its metrics are
    served at `metrics_url`, on a port of their own (a free one unless `metrics_port` is given; 0: none), on the
    address of its --host."""

    def __init__(
        self, kubeconfig: str, namespace: str, port: int, log_path: Path, metrics_port: int | None = None, **env: str
    ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.metrics_port = free_port() if metrics_port is None else metrics_port
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        settings = {
            "KUBEHANDS_KUBECONFIG": kubeconfig,
            "KUBEHANDS_NAMESPACE": namespace,
            "KUBEHANDS_PUBLIC_URL": self.url,
            "KUBEHANDS_GATEWAY_METRICS_PORT": str(self.metrics_port),
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

    def metrics(self) -> str:
        """The metrics text (the gateway's cache gauges refreshed for it)."""
        assert self.metrics_port, "this gateway serves no metrics"
        response = httpx.get(self.metrics_url, timeout=5)
        assert response.status_code == 200, response.text
        return response.text


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
