"""`make run` stopped by Ctrl-C (SIGINT to its whole process group, as a terminal sends it) or by SIGTERM
leaves the host as it was: the cluster the run started is stopped (no process of it, nor of the run, survives)
and hack/check-host.sh verify passes against a snapshot taken before, /tmp included. The cluster's state is kept:
the next `make run` brings back the same API key and a sandbox's workspace (a Ctrl-C during the first start of a
cluster deletes what little it made).

It also keeps keys secret (issue 17): keyed requests with `?tkn=` and `?session_api_key=` leave no key in any of
its log files, which, like its API key file, are readable by their owner only, and each sandbox has a loopback
host of its own (browsers scope cookies by host).

These tests start and stop real clusters on the default state folder, so they need a host where no cluster
runs: they fail, never skip, when one does. hack/test.sh runs them in a pytest run of their own after the other
tiers, only when no cluster was running when it began. Alone (with pytest's folders outside /tmp, which the
check watches):

    .venv/bin/pytest tests/host --basetemp ~/.cache/kubehands/pytest/host
"""

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_IMODE
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from tests.helpers.paths import STATE
from tests.helpers.processes import free_port
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.host, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "hack" / "cluster.sh"
CHECK_HOST = ROOT / "hack" / "check-host.sh"
COMPONENTS = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
    "dnsmasq",
]
# `make run` builds what it needs first (venv, kubernetes, images), then starts the cluster: minutes at worst.
ENV_TIMEOUT = 1200
STOP_TIMEOUT = 300


def cluster_running() -> bool:
    return subprocess.run([str(CLUSTER_SH), "status"], capture_output=True).returncode == 0


def cmdline(pid: int) -> str | None:
    """The command line of a live process (None if it is gone or a zombie)."""
    try:
        if "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text():
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """When a live process started (clock ticks since boot): with its PID, who it is. None if gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def process_group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        line = cmdline(int(entry.name))
        if line and text in line:
            found.append(f"{entry.name}: {line}")
    return found


def _signals_as_from_a_terminal() -> None:
    """SIGINT and SIGTERM at their default action, as `make run` gets them from a terminal. A runner that started
    the tests in the background (`nohup .ci/run &`) hands them on ignored, and a shell cannot trap a signal that
    was ignored when it started: Ctrl-C would then do nothing, in the test only."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class MakeRun:
    """`make run` in a process group of its own, its stdout lines collected as they come."""

    process: subprocess.Popen[str]
    stderr_path: Path
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, tmp_path: Path, name: str = "make-run", **extra_env: str) -> "MakeRun":
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        # No sandbox traffic leaves this machine in tests (make run's default is the internet).
        env |= {"KUBEHANDS_GATEWAY_PORT": str(free_port()), "KUBEHANDS_SANDBOX_EGRESS": "none"} | extra_env
        stderr_path = tmp_path / f"{name}.stderr"
        with open(stderr_path, "w") as stderr:
            process = subprocess.Popen(
                ["make", "run"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                process_group=0,
                preexec_fn=_signals_as_from_a_terminal,
            )
        run = cls(process, stderr_path)
        threading.Thread(target=run._read, daemon=True).start()
        return run

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_stderr(self, text: str, timeout: float) -> None:
        wait_for(lambda: text in self.stderr() or self.process.poll() is not None, timeout, f"make run to log {text!r}")
        assert self.process.poll() is None, f"make run exited ({self.process.returncode}):\n{self.stderr()[-4000:]}"

    def wait_for_environment(self) -> dict[str, str]:
        def printed() -> bool:
            return any(line.startswith("SANDBOX_API_KEY=") for line in self.lines) or self.process.poll() is not None

        wait_for(printed, ENV_TIMEOUT, "make run to print SANDBOX_API_KEY=")
        assert self.process.poll() is None, f"make run exited ({self.process.returncode}):\n{self.stderr()[-4000:]}"
        return dict(line.split("=", 1) for line in self.lines if "=" in line)


def recorded_cluster_pids() -> dict[str, tuple[int, int]]:
    """The cluster components' recorded PIDs, by component, with their start times (a reused PID is not them)."""
    pids = {}
    for pid_file in (STATE / "pids").glob("*.pid"):
        text = pid_file.read_text().strip()
        if not text:  # being written by a start the signal races (the other checks still see that process)
            continue
        pid = int(text)
        started = start_time(pid)
        assert started is not None, f"{pid_file.name}: process {pid} is not running"
        pids[pid_file.name.removesuffix(".pid")] = (pid, started)
    return pids


@pytest.fixture
def host_before(tmp_path: Path) -> Iterator[Path]:
    """A host where no cluster runs, snapshotted; whatever a failed test left running is stopped afterwards."""
    if cluster_running():
        pytest.fail(
            "a local cluster is already running: these tests start and stop clusters of their own on the default "
            f"state folder ({STATE}). Stop it first (make cluster-reset); hack/test.sh runs this tier only when no "
            "cluster was running"
        )
    if (STATE / "initialized").exists():
        pytest.fail(
            f"a stopped cluster's state is kept in {STATE} (make run's key, sandboxes, workspaces), and these tests "
            "delete it: run make cluster-reset first"
        )
    snapshot = tmp_path / "host-before"
    subprocess.run([str(CHECK_HOST), "snapshot", str(snapshot)], check=True)
    yield snapshot
    # Only what this test started can be running now (none ran before it).
    if cluster_running() or STATE.exists():
        subprocess.run([str(CLUSTER_SH), "down"], check=False)


@pytest.fixture
def make_run(host_before: Path, tmp_path: Path) -> Iterator[MakeRun]:
    """`make run` started on the snapshotted host; stopped (SIGTERM to its group) if a failed test left it running,
    before host_before stops what is left of its cluster."""
    run = MakeRun.start(tmp_path)
    yield run
    if run.process.poll() is None:
        os.killpg(run.process.pid, signal.SIGTERM)
        try:
            run.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait(timeout=30)


def stop_and_check(
    run: MakeRun, sig: signal.Signals, cluster_pids: dict[str, tuple[int, int]], snapshot: Path, state_kept: bool = True
) -> None:
    pgid = run.process.pid
    members = process_group_members(pgid)
    assert pgid in members and len(members) > 1, f"make run's process group: {members}"
    os.killpg(pgid, sig)
    try:
        run.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        pytest.fail(f"make run did not exit within {STOP_TIMEOUT}s of {sig.name}:\n{run.stderr()[-4000:]}")
    log = run.stderr()
    assert run.process.returncode != 0, f"make run exited 0 after {sig.name}"
    assert "stopping the cluster this run started" in log, log[-4000:]
    assert "cluster stopped; host restored" in log, log[-4000:]

    still_alive = {name: pid for name, (pid, started) in cluster_pids.items() if start_time(pid) == started}
    assert still_alive == {}, f"cluster processes alive after {sig.name}: {still_alive}"
    assert process_group_members(pgid) == [], "processes of make run's group survived"
    assert processes_mentioning(str(STATE)) == [], "processes still use the cluster's state folder"
    assert processes_mentioning("/tmp/kubehands-kcm-") == [], "kube-controller-manager survived"
    assert not cluster_running()
    if state_kept:
        assert (STATE / "etcd").is_dir() and (STATE / "pki" / "ca.crt").is_file(), f"{STATE} was not kept"
        assert "state kept in" in log, log[-4000:]
        assert not (STATE / "pids").exists(), "PID files of stopped processes are left"
    else:
        assert not STATE.exists(), f"{STATE} is left"
    verify = subprocess.run([str(CHECK_HOST), "verify", str(snapshot)], capture_output=True, text=True)
    assert verify.returncode == 0, f"hack/check-host.sh verify after {sig.name}:\n{verify.stderr}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_make_run_stops_everything_it_started(
    make_run: MakeRun, host_before: Path, sig: signal.Signals
) -> None:
    run = make_run
    environment = run.wait_for_environment()
    assert environment["SANDBOX_API_KEY"] and environment["SANDBOX_REMOTE_RUNTIME_API_URL"].startswith("http://")
    cluster_pids = recorded_cluster_pids()
    assert sorted(cluster_pids) == sorted(COMPONENTS), f"recorded PIDs: {cluster_pids}"
    stop_and_check(run, sig, cluster_pids, host_before)


def test_ctrl_c_while_the_cluster_starts_stops_it(make_run: MakeRun, host_before: Path) -> None:
    """Ctrl-C during `hack/cluster.sh up` (etcd and the API server started, the rest not yet)."""
    run = make_run
    run.wait_for_stderr("starting kube-apiserver", ENV_TIMEOUT)
    cluster_pids = recorded_cluster_pids()
    assert {"etcd", "containerd"} <= set(cluster_pids), f"recorded PIDs: {cluster_pids}"
    stop_and_check(run, signal.SIGINT, cluster_pids, host_before, state_kept=False)


def test_ctrl_c_keeps_the_key_and_the_workspaces(make_run: MakeRun, host_before: Path, tmp_path: Path) -> None:
    """A file written in a sandbox before Ctrl-C is there after the next `make run` and a resume, with the same key."""
    environment = make_run.wait_for_environment()
    key, image = environment["SANDBOX_API_KEY"], environment["SANDBOX_IMAGE"]
    runtime = run_sandbox(environment["SANDBOX_REMOTE_RUNTIME_API_URL"], key, image)
    bash(runtime, "echo kept-across-ctrl-c > /workspace/kept.txt")
    stop_and_check(make_run, signal.SIGINT, recorded_cluster_pids(), host_before)

    again = MakeRun.start(tmp_path, "make-run-again", KUBEHANDS_POOL_SIZE="0", KUBEHANDS_SDK_POOL_SIZE="0")
    try:
        environment = again.wait_for_environment()
        assert environment["SANDBOX_API_KEY"] == key, "make run printed a different key after Ctrl-C"
        assert "restarting the cluster stopped before" in again.stderr()
        url = environment["SANDBOX_REMOTE_RUNTIME_API_URL"]
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as http:
            resumed = http.post("/resume", json={"runtime_id": runtime["runtime_id"]})
            assert resumed.status_code == 200, resumed.text
        runtime = run_sandbox(url, key, image)  # the same session: its runtime, running again
        assert bash(runtime, "cat /workspace/kept.txt") == "kept-across-ctrl-c"
    finally:
        stop_and_check(again, signal.SIGINT, recorded_cluster_pids(), host_before)


def test_make_run_keeps_keys_out_of_its_logs(make_run: MakeRun, host_before: Path) -> None:
    """A keyed request with `?tkn=` (VS Code's first load) and one with `?session_api_key=` (a browser WebSocket)
    to a sandbox, and agent-server calls with its key in a header: after Ctrl-C, neither that session key nor the
    API key appears in any log file of `make run` (its own and the cluster's), whose own logs and key file are
    0600 in a 0700 folder."""
    environment = make_run.wait_for_environment()
    key = environment["SANDBOX_API_KEY"]
    runtime = run_sandbox(environment["SANDBOX_REMOTE_RUNTIME_API_URL"], key, environment["SANDBOX_IMAGE"])
    session_key = runtime["session_api_key"]
    url = urlsplit(runtime["url"])
    assert url.hostname and url.hostname.startswith("127.1.") and url.port, runtime["url"]  # a host of its own
    vscode = f"http://{url.hostname}:{url.port + 1}"
    with httpx.Client(timeout=60) as browser:
        browser.get(f"{vscode}/?tkn={session_key}&folder=/workspace")  # whatever VS Code answers, it is logged
    try:
        with connect(f"ws://{url.netloc}/sockets/events/none?session_api_key={session_key}", open_timeout=60):
            pass
    except (OSError, WebSocketException):  # no such conversation: refused, and logged all the same
        pass
    assert bash(runtime, "echo keyed") == "keyed"
    stop_and_check(make_run, signal.SIGINT, recorded_cluster_pids(), host_before)  # every log complete

    run_dir = STATE / "run"
    assert S_IMODE(run_dir.stat().st_mode) == 0o700
    for name in ("gateway.log", "operator.log", "api-key-dev"):
        assert S_IMODE((run_dir / name).stat().st_mode) == 0o600, name
    logs = sorted([*run_dir.glob("*.log"), *(STATE / "logs").glob("*.log")])
    assert {p.name for p in logs} >= {"gateway.log", "operator.log", "kube-apiserver.log", "kubelet.log"}, logs
    for log in logs:
        text = log.read_bytes()
        for secret in (session_key, key):
            assert secret.encode() not in text, f"{log} holds a key"
    gateway_log = (run_dir / "gateway.log").read_text()
    assert "?tkn=[redacted]&folder=[redacted]" in gateway_log, gateway_log[-3000:]
    assert "?session_api_key=[redacted]" in gateway_log, gateway_log[-3000:]


SESSION = "kept-across-ctrl-c"


def run_sandbox(url: str, key: str, image: str) -> dict[str, str]:
    """POST /start of one session (cold, the pools are off) and wait until it runs; its runtime object."""
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as http:
        body = {"image": image, "command": "/usr/local/bin/openhands-agent-server --port 60000",
                "working_dir": "/workspace", "environment": {}, "session_id": SESSION,
                "run_as_user": 10001, "fs_group": 10001}
        started = http.post("/start", json=body)
        assert started.status_code in (200, 201), started.text
        runtime_id = started.json()["runtime_id"]

        def running() -> dict[str, str] | None:
            runtime = http.get(f"/runtime/{runtime_id}").json()
            return runtime if runtime.get("status") == "running" and runtime.get("url") else None

        return wait_for(running, 300, f"sandbox {runtime_id} to run")


def bash(runtime: dict[str, str], command: str) -> str:
    """Run a command in the sandbox through the gateway; its stdout."""
    with httpx.Client(timeout=120) as http:
        ran = http.post(f"{runtime['url']}/api/bash/execute_bash_command", json={"command": command, "timeout": 60},
                        headers={"X-Session-API-Key": runtime["session_api_key"]})
    assert ran.status_code == 200 and ran.json()["exit_code"] == 0, ran.text
    return str(ran.json()["stdout"]).strip()
