"""Malformed and hostile /start requests against the gateway served by uvicorn on 127.0.0.1 (with
`kubehands gateway`'s uvicorn options) and the real API server, with a real key: every one is a 4xx with a
JSON `detail`, creates no Sandbox and no session Secret, and leaves the gateway healthy.

The table is tests.helpers.api.HOSTILE_STARTS (tests/unit/test_api_hostile_start.py runs it without an API
server, where any write attempt would show as a 503)."""

import io
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from typing import Any

import httpx
import pytest
import uvicorn
from kubernetes import client

from kubehands.api.cli.gateway import server_limits, uvicorn_options
from kubehands.api.main import create_app
from kubehands.api.settings import Settings
from kubehands.cli import main as kubehands_main
from kubehands.crd import constants
from tests.helpers.api import HOSTILE_STARTS, hostile_request
from tests.helpers.kube import api_client
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def gateway(kubeconfig: str) -> Iterator[tuple[str, str, str]]:
    """(base URL, key, namespace): one gateway under uvicorn in a thread, in a namespace of its own."""
    namespace = f"kh-test-hostile-{uuid.uuid4().hex[:8]}"
    with api_client(kubeconfig) as api:
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        out = io.StringIO()
        with redirect_stdout(out):
            code = kubehands_main(["keys", "--kubeconfig", kubeconfig, "-n", namespace, "create", "hostile"])
        assert code == 0
        settings = Settings(
            namespace=namespace,
            kubeconfig=kubeconfig,
            base_resources={"requests": {"cpu": "1m"}},
            runtime_class_map={"gvisor": "gvisor", "sysbox-runc": ""},  # the table's runtime-class cases
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        options = uvicorn_options("127.0.0.1", port, "warning", limits=server_limits(settings))
        server = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, 60, "the gateway's /health")
        yield base, out.getvalue().strip(), namespace
        server.should_exit = True
        thread.join(30)
    finally:
        with api_client(kubeconfig) as api:
            client.CoreV1Api(api).delete_namespace(namespace, propagation_policy="Background")


def _created(kubeconfig: str, namespace: str) -> tuple[list[str], list[str]]:
    with api_client(kubeconfig) as api:
        sandboxes = client.CustomObjectsApi(api).list_namespaced_custom_object(
            constants.GROUP, constants.VERSION, namespace, constants.PLURAL
        )["items"]
        secrets = client.CoreV1Api(api).list_namespaced_secret(
            namespace, label_selector="kubehands.dev/session-key=true"
        ).items
    return [s["metadata"]["name"] for s in sandboxes], [s.metadata.name for s in secrets]


def test_the_table_is_large() -> None:
    assert len(HOSTILE_STARTS) >= 40


@pytest.mark.parametrize("case", HOSTILE_STARTS, ids=[case[0] for case in HOSTILE_STARTS])
def test_hostile_start_is_refused_and_creates_nothing(
    kubeconfig: str, gateway: tuple[str, str, str], case: tuple[str, Any, Any, str]
) -> None:
    base, key, namespace = gateway
    body, headers = hostile_request(case, key)
    with httpx.Client(base_url=base, timeout=60) as http:
        response = http.post("/start", content=body, headers=headers)
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
        assert response.headers["content-type"].startswith("application/json")
        assert "detail" in response.json()
        assert _created(kubeconfig, namespace) == ([], [])
        assert http.get("/health").status_code == 200


def test_a_valid_start_still_works_afterwards(kubeconfig: str, gateway: tuple[str, str, str]) -> None:
    """The control: the same gateway and key do start a sandbox (so the refusals above were the input's)."""
    base, key, namespace = gateway
    body = {"image": "ghcr.io/openhands/agent-server:1.34.0-python", "session_id": "fine", "run_as_user": 10001,
            "runtime_class": "gvisor", "environment": {".a": "1", "a..": "2"}}
    with httpx.Client(base_url=base, timeout=60) as http:
        response = http.post("/start", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    sandboxes, secrets = _created(kubeconfig, namespace)
    assert sandboxes == [response.json()["runtime_id"]] and len(secrets) == 1
