"""The real OpenHands app server against `kubehands operator` + `kubehands gateway` processes started as `make run`
starts them (its gateway settings, hack/run.env: port routing mode, each sandbox at http://127.0.0.1:<port>), with
the app's warm pool (hack/pool-manifest.py over hack/run.sh's `app_start_body`). Sandboxes are real pods of the
agent-server image of the app's bundled SDK (1.34.0). Used by tests/node/test_openhands_app.py and
tests/node/test_agent_session.py.
"""

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from kubernetes import client

from kubehands.api.settings import Settings
from kubehands.spec import pools
from tests.helpers import warm_pool
from tests.helpers.kube import api_client
from tests.helpers.local_agent import client_python
from tests.helpers.processes import free_port, stop_process
from tests.helpers.run_defaults import make_run_gateway_env
from tests.helpers.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
KUBEHANDS = str(Path(sys.executable).parent / "kubehands")
CLIENT_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENHANDS_SUPPRESS_BANNER": "1"}
SMALL = json.dumps({"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "2Gi"}})
APP_POOL = "openhands-app"


@dataclass
class LiveGateway:
    url: str
    key: str
    namespace: str
    logs: Path
    kubeconfig: str
    pool_template: dict[str, Any]
    metrics_url: str  # the gateway's metrics, on a port of their own

    def warm_members(self) -> list[str]:
        """Wait until the app's pool has its one ready member, and the gateway's cache sees it; its name."""
        wait_for(lambda: warm_pool.pool_status(self.kubeconfig, self.namespace, APP_POOL).get("ready") == 1,
                 300, f"pool {APP_POOL} to have 1 ready member", interval=1.0)
        wait_for(lambda: f'kubehands_pool_ready{{pool="{APP_POOL}"}} 1.0' in httpx.get(self.metrics_url).text,
                 60, "the gateway to see the member ready")
        return warm_pool.pool_members(self.kubeconfig, self.namespace, APP_POOL)

    def assert_claimed(self, session_id: str, members: list[str]) -> str:
        """The session's Sandbox was claimed from the app's pool (one of `members`); its runtime id."""
        session = httpx.get(f"{self.url}/sessions/{session_id}", headers={"X-API-Key": self.key})
        assert session.status_code == 200, session.text
        rid = session.json()["runtime_id"]
        sandbox = warm_pool.sandbox(self.kubeconfig, self.namespace, rid)
        differs = pools.difference(self.pool_template, sandbox["spec"])
        assert warm_pool.claimed_from(sandbox) == APP_POOL, f"{rid} started cold; the template differs in {differs}"
        assert rid in members, (rid, members)
        return str(rid)


@contextmanager
def live_gateway(kubeconfig: str, app_agent_server_image: str, logs: Path) -> Iterator[LiveGateway]:
    """`kubehands operator` and `kubehands gateway` as `make run` starts them, in a namespace of their own with the
    app's warm pool (one member); logs in `logs`."""
    namespace = f"kh-e2e-{uuid.uuid4().hex[:8]}"
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "TMPDIR": str(logs),  # the Kubernetes client's certificate files, should a process be killed
        "KUBECONFIG": kubeconfig,
        "KUBEHANDS_KUBECONFIG": kubeconfig,
        "KUBEHANDS_NAMESPACE": namespace,
        "KUBEHANDS_NAMESPACES": namespace,
        "KUBEHANDS_METRICS_PORT": "0",  # no fixed port: other tests may run beside this one
        "KUBEHANDS_GATEWAY_METRICS_PORT": str(metrics_port),  # the gateway's, on --host's address (127.0.0.1)
        "KUBEHANDS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "KUBEHANDS_BASE_RESOURCES": SMALL,
        **make_run_gateway_env(),
    }
    with mock.patch.dict(os.environ, env, clear=True):
        settings = Settings()  # what `kubehands gateway` reads from this environment
    with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        procs: list[subprocess.Popen] = []
        try:
            body = warm_pool.app_start_body(app_agent_server_image)
            template = warm_pool.declare_pool(kubeconfig, APP_POOL, 1, body, settings)["spec"]["template"]
            procs.append(subprocess.Popen([KUBEHANDS, "operator", "-n", namespace, "--verbose"], env=env,
                                          stdout=open(logs / "operator.log", "w"), stderr=subprocess.STDOUT))
            key = subprocess.run([KUBEHANDS, "keys", "create", "e2e"], env=env, capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            procs.append(subprocess.Popen([KUBEHANDS, "gateway", "--host", "127.0.0.1", "--port", str(port)],
                                          env=env, stdout=open(logs / "gateway.log", "w"),
                                          stderr=subprocess.STDOUT))
            url = f"http://127.0.0.1:{port}"

            def healthy() -> bool:
                assert all(p.poll() is None for p in procs), (logs / "gateway.log").read_text()[-3000:]
                try:
                    return httpx.get(f"{url}/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(healthy, 60, "the gateway's /health")
            yield LiveGateway(url=url, key=key, namespace=namespace, logs=logs, kubeconfig=kubeconfig,
                              pool_template=template, metrics_url=f"http://127.0.0.1:{metrics_port}/metrics")
        finally:
            for proc in reversed(procs):
                stop_process(proc)
            core.delete_namespace(namespace, propagation_policy="Background", grace_period_seconds=0)


@dataclass
class AppServer:
    url: str
    http: httpx.Client

    def sandbox(self, sandbox_id: str) -> dict | None:
        response = self.http.get("/api/v1/sandboxes", params={"id": sandbox_id})
        response.raise_for_status()
        return response.json()[0]

    def wait_sandbox_status(self, sandbox_id: str, status: str, timeout: float = 240) -> dict:
        return wait_for(
            lambda: (info := self.sandbox(sandbox_id)) is not None and info["status"] == status and info,
            timeout, f"app sandbox {sandbox_id} to be {status}", interval=1.0,
        )


@contextmanager
def app_server(live_gateway: LiveGateway, app_agent_server_image: str, state: Path) -> Iterator[AppServer]:
    """The OpenHands app server (openhands-ai 1.11, its own venv) with RUNTIME=remote on `live_gateway`, its files in
    `state`."""
    python = client_python("app")
    port = free_port()
    (state / "cwd").mkdir()  # empty: the app reads ./.env
    (state / "tmp").mkdir()  # its TMPDIR: the app creates browser-use-downloads-* folders there
    repository, tag = app_agent_server_image.rsplit(":", 1)  # the agent server of the app's bundled SDK
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(state),
        "TMPDIR": str(state / "tmp"),
        **CLIENT_ENV,
        "SERVE_FRONTEND": "false",
        "OH_PERSISTENCE_DIR": str(state / "persistence"),
        "RUNTIME": "remote",
        "SANDBOX_REMOTE_RUNTIME_API_URL": live_gateway.url,
        "SANDBOX_API_KEY": live_gateway.key,
        "AGENT_SERVER_IMAGE_REPOSITORY": repository,
        "AGENT_SERVER_IMAGE_TAG": tag,
    }
    log = open(live_gateway.logs / "app-server.log", "w")
    proc = subprocess.Popen(
        [python, "-m", "uvicorn", "openhands.app_server.app:app", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=state / "cwd", stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            assert proc.poll() is None, (live_gateway.logs / "app-server.log").read_text()[-3000:]
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "the OpenHands app server's /health")
        with httpx.Client(base_url=url, timeout=60) as http:
            yield AppServer(url=url, http=http)
    finally:
        stop_process(proc)
