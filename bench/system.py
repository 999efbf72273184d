"""The system under test for one benchmark run: a namespace, `kubehands operator`, an API key,
`kubehands gateway` and the baseline app, all as child processes; machine facts; cleanup.

Everything listens on 127.0.0.1; sandboxes are reached on their pod IPs. Nothing here is left
behind: the processes are stopped by PID and the namespace (with every Sandbox, pod, PVC and
Secret in it) is deleted and awaited.
"""

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from bench import procstat
from kubehands.api.keys import KeyRecord
from kubehands.api.settings import Settings
from kubehands.crd import constants
from kubehands.crd.install import apply_crds
from kubehands.spec import objects
from kubehands.spec.request import StartRequest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Small requests so the node's 2 cores can schedule tens of sandboxes; the limit stays generous.
QUIET_BUSY = 0.25  # a node below this CPU share (over 0.5 s) is quiet enough for the next measurement
BENCH_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "2Gi"}}
CRD = {"group": constants.GROUP, "version": constants.VERSION, "plural": constants.PLURAL}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_env() -> dict[str, str]:
    """KUBECONFIG and SANDBOX_IMAGE: from the environment, else from `hack/cluster.sh status`."""
    env = {k: os.environ[k] for k in ("KUBECONFIG", "SANDBOX_IMAGE") if os.environ.get(k)}
    if len(env) < 2:
        status = subprocess.run([str(ROOT / "hack" / "cluster.sh"), "status"], capture_output=True, text=True)
        if status.returncode != 0:
            raise SystemExit("the local cluster is not running: run hack/bench.sh or `make cluster`")
        found = dict(line.split("=", 1) for line in status.stdout.splitlines() if "=" in line)
        env = {**found, **env}
    return env


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"hostname": platform.node(), "cpus": os.cpu_count(), "cpu_model": cpu_model,
            "memory_bytes": mem, "kernel": platform.release(), "python": platform.python_version()}


def versions(api: client.ApiClient | None = None, image: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dist in ("kubehands", "fastapi", "uvicorn", "httpx", "kopf", "starlette", "pydantic"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    if api is not None:
        try:
            out["kubernetes"] = client.VersionApi(api).get_code().git_version
        except Exception:  # noqa: BLE001 - informative only
            out["kubernetes"] = None
    out["sandbox_image"] = image
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                           capture_output=True, text=True).stdout.strip() or None
    except OSError:
        out["git_commit"] = None
    return out


def start_process(argv: list[str], env: dict[str, str], health_url: str, log: Path,
                  timeout: float = 90) -> subprocess.Popen[bytes]:
    """Start a server (output to `log`) and return once `health_url` answers 200."""
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(health_url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_process(proc)
            raise TimeoutError(f"{health_url} did not answer: {log.read_text()[-3000:]}")
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Served:
    """A child process serving HTTP on 127.0.0.1:port."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    metrics_port: int = 0  # a gateway's metrics, on a port of their own (KUBEHANDS_GATEWAY_METRICS_PORT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        assert self.metrics_port, f"{self.name} serves no metrics"
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class System:
    kubeconfig: str
    image: str
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kh-bench-")))
    max_running: int = 100
    namespace: str = field(default_factory=lambda: f"kh-bench-{uuid.uuid4().hex[:8]}")
    key: str = ""
    key_name: str = "bench"
    operator: subprocess.Popen[bytes] | None = None
    gateway: Served | None = None
    baseline: Served | None = None
    extra: list[Served] = field(default_factory=list)
    api: client.ApiClient | None = None
    paused: list[tuple[str, str]] = field(default_factory=list)  # (runtime_id, session_id)

    # ---- lifecycle ------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "KUBEHANDS_KUBECONFIG": self.kubeconfig,
            "KUBEHANDS_NAMESPACE": self.namespace,
            "KUBEHANDS_NAMESPACES": self.namespace,
            "KUBEHANDS_METRICS_PORT": "0",  # not measured; and `make run` may hold the default port
            "KUBEHANDS_BASE_RESOURCES": json.dumps(BENCH_RESOURCES),
            "KUBEHANDS_IMAGE_PULL_POLICY": "Never",
        }

    def __enter__(self) -> "System":
        apply_crds(self.kubeconfig, sorted((ROOT / "crds").glob("*.yaml")))
        self.api = config.new_client_from_config(config_file=self.kubeconfig)
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace)))
        try:
            env = self.env()
            self.operator = subprocess.Popen(
                [str(BIN / "kubehands"), "operator", "-n", self.namespace], env=env, cwd=ROOT,
                stdout=open(self.log_dir / "operator.log", "wb"), stderr=subprocess.STDOUT)
            created = subprocess.run(
                [str(BIN / "kubehands"), "keys", "create", self.key_name, "--max-running", str(self.max_running)],
                env=env, capture_output=True, text=True, check=True)
            self.key = created.stdout.strip().splitlines()[-1]
            self.gateway = self.serve_gateway("gateway")
            self.baseline = self._serve(
                "baseline", [sys.executable, "-m", "bench.baseline_app", "--log-level", "info"], "/ping")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _serve(self, name: str, argv: list[str], health: str, env: dict[str, str] | None = None,
               port: int | None = None) -> Served:
        port = port or free_port()
        log = self.log_dir / f"{name}.log"
        proc = start_process([*argv, "--port", str(port)], env or self.env(), f"http://127.0.0.1:{port}{health}", log)
        return Served(name, proc, port, log)

    def serve_gateway(self, name: str, profile_to: Path | None = None) -> Served:
        """`kubehands gateway` (log level info, its default), optionally under cProfile (see `profiling`)."""
        args = ["gateway", "--host", "127.0.0.1", "--log-level", "info"]
        argv = ([sys.executable, "-m", "bench.profiled", str(profile_to), "--", *args] if profile_to
                else [str(BIN / "kubehands"), *args])
        port, metrics_port = free_port(), free_port()  # the public URL names the port the gateway listens on
        env = {**self.env(), "KUBEHANDS_PUBLIC_URL": f"http://127.0.0.1:{port}",
               "KUBEHANDS_GATEWAY_METRICS_PORT": str(metrics_port)}
        served = self._serve(name, argv, "/health", env, port)
        served.metrics_port = metrics_port
        if name != "gateway":
            self.extra.append(served)
        return served

    def stop_served(self, served: Served) -> None:
        stop_process(served.proc)
        if served in self.extra:
            self.extra.remove(served)

    def __exit__(self, *exc: object) -> None:
        for served in [*self.extra, self.baseline, self.gateway]:
            if served is not None:
                stop_process(served.proc)
        if self.operator is not None:
            stop_process(self.operator)
        if self.api is not None:
            try:
                self.core.delete_namespace(self.namespace, propagation_policy="Background", grace_period_seconds=0)
                self.wait(lambda: not self._namespace_exists(), 300, f"namespace {self.namespace} deleted")
            except ApiException as e:
                if e.status != 404:
                    raise
            finally:
                self.api.close()

    def _namespace_exists(self) -> bool:
        try:
            self.core.read_namespace(self.namespace)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    # ---- helpers ---------------------------------------------------------------------------------

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    @staticmethod
    def wait(predicate: Any, timeout: float, describe: str, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {describe}")
            time.sleep(interval)

    def start_body(self, session_id: str, **extra: Any) -> dict[str, Any]:
        return {"image": self.image, "session_id": session_id, "image_pull_policy": "Never",
                "working_dir": "/", "resource_factor": 1, **extra}

    def sandbox_status(self, name: str) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(namespace=self.namespace, name=name, **CRD)
        return dict(obj.get("status") or {})

    def list_sandboxes(self) -> list[dict[str, Any]]:
        return list(self.custom.list_namespaced_custom_object(namespace=self.namespace, **CRD)["items"])

    def stop_and_settle(self, runtime_ids: list[str]) -> None:
        """Stop these sandboxes through the API and delete bare pods, then wait for a quiet node, so no
        measurement pays for the previous one's teardown (`stop`, `clear_pods`, `wait_quiet`)."""
        self.stop(runtime_ids)
        self.clear_pods()
        self.wait_quiet()

    def stop(self, runtime_ids: list[str]) -> None:
        """POST /stop for each runtime."""
        for rid in runtime_ids:
            httpx.post(f"{self.gateway.url}/stop", json={"runtime_id": rid}, headers=self.headers,  # type: ignore[union-attr]
                       timeout=30)

    def clear_pods(self, keep: Callable[[], set[str]] | None = None) -> None:
        """Delete bare pods and wait until every pod is gone, except the pods (not being deleted) of the
        Sandboxes named by `keep()` (asked again at every look: a warm pool's members).

        Pods are force-deleted once deleting: the agent server exits within ~3 s of SIGTERM, but the
        kubelet takes another 10 s or more to remove the object (volume teardown, status sync) and does not
        reliably report the stopped container meanwhile. What matters to the next sample is the node's CPU."""

        def force_delete_all() -> bool:
            kept = keep() if keep is not None else set()
            left = []
            for pod in self.core.list_namespaced_pod(self.namespace).items:
                owner = (pod.metadata.annotations or {}).get(constants.ANNOTATION_SANDBOX_NAME)
                if not pod.metadata.deletion_timestamp and owner in kept:
                    continue
                left.append(pod)
                if pod.metadata.deletion_timestamp or (pod.metadata.labels or {}).get("bench") == "bare":
                    try:
                        self.core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=0)
                    except ApiException as e:
                        if e.status != 404:
                            raise
            return not left

        self.wait(force_delete_all, 180, "every pod gone", 0.25)

    def wait_quiet(self) -> None:
        """Wait (up to 30 s) for the node's CPU to fall below QUIET_BUSY."""
        try:
            self.wait(lambda: procstat.machine_busy() < QUIET_BUSY, 30, "a quiet node", 0)
        except TimeoutError:
            print(f"bench: the node stayed above {QUIET_BUSY:.0%} CPU for 30 s; going on", file=sys.stderr)

    # ---- paused sandboxes, created directly (the runtime API only starts running ones) -----------

    def paused_manifests(self, session_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The Sandbox and session Secret `/start` would create for `session_id`, with state Paused."""
        settings = Settings(namespace=self.namespace, base_resources=BENCH_RESOURCES)
        caller = KeyRecord(name=self.key_name, digest="0" * 64)
        runtime_id = objects.mint_runtime_id()
        secret_name = objects.claim_name(caller.name, session_id)
        req = StartRequest.model_validate(self.start_body(session_id))
        sandbox = objects.build_sandbox(req, caller, settings, runtime_id, secret_name)
        sandbox["spec"]["state"] = "Paused"
        secret = objects.build_session_secret(secret_name, self.namespace, caller.name, session_id,
                                              runtime_id, objects.mint_session_key())
        return sandbox, secret

    def create_paused(self, count: int, prefix: str = "paused", workers: int = 8) -> list[tuple[str, str]]:
        """Create `count` more Paused Sandboxes (and their session Secrets); returns (runtime_id, session_id)."""
        start = len(self.paused)
        ids = [f"{prefix}-{i}" for i in range(start, start + count)]

        def one(session_id: str) -> tuple[str, str]:
            sandbox, secret = self.paused_manifests(session_id)
            self.core.create_namespaced_secret(self.namespace, secret)
            self.custom.create_namespaced_custom_object(namespace=self.namespace, body=sandbox, **CRD)
            return sandbox["metadata"]["name"], session_id

        with ThreadPoolExecutor(workers) as pool:
            made = list(pool.map(one, ids))
        self.paused.extend(made)
        return made

    def ensure_paused(self, count: int) -> list[tuple[str, str]]:
        if len(self.paused) < count:
            self.create_paused(count - len(self.paused))
        self.wait(lambda: self.gateway_cached("sandboxes") >= len(self.paused), 120,
                  "the gateway to cache every sandbox")
        return self.paused[:count]

    def gateway_metrics(self, served: Served | None = None) -> str:
        return httpx.get((served or self.gateway).metrics_url, timeout=10).text  # type: ignore[union-attr]

    def gateway_cached(self, cache: str) -> float:
        for line in self.gateway_metrics().splitlines():
            if line.startswith(f'kubehands_cached_objects{{cache="{cache}"}}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def kubelet_summary(self, node: str) -> dict[str, Any]:
        """The kubelet's summary API (per-pod and per-container CPU and memory), through the API server's node
        proxy: `/api/v1/nodes/<node>/proxy/stats/summary`."""
        response = self.core.connect_get_node_proxy_with_path(node, "stats/summary", _preload_content=False)
        return dict(json.loads(response.data))

    def apiserver_metrics(self) -> str:
        """The API server's /metrics (Prometheus text), with the admin kubeconfig's credentials."""
        assert self.api is not None
        method, url, headers, body, post = self.api.param_serialize(
            method="GET", resource_path="/metrics", auth_settings=["BearerToken"])
        response = self.api.call_api(method, url, header_params=headers, body=body, post_params=post)
        response.read()
        return response.data.decode()
