"""Property-based run against the gateway on the real API server: at least 1,000 generated requests
(valid and invalid bodies, paths, queries and keys) across every endpoint, and none gets a 5xx."""

import io
import socket
import threading
from collections.abc import Iterator
from contextlib import redirect_stdout
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubehands.api.main import create_app
from kubehands.api.settings import Settings
from kubehands.cli import main as kubehands_main
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.cluster

EXAMPLES = 1100
SEEN: list[int] = []

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
images = st.sampled_from(
    ["busybox", "ghcr.io/openhands/agent-server:1.34.0-python", "Bad Image", "", "a" * 600]
) | st.text(max_size=30)
start_bodies = st.fixed_dictionaries(
    {},
    optional={
        "image": images,
        "session_id": st.text(max_size=40) | json_scalars,
        "command": st.none()
        | st.text(max_size=40)
        | st.lists(st.text(max_size=10), max_size=4)
        | json_values,
        "working_dir": st.sampled_from(["/", "/workspace", "rel"]) | st.text(max_size=20),
        "environment": st.dictionaries(st.text(max_size=12), st.text(max_size=12) | json_scalars, max_size=4)
        | json_values,
        "resource_factor": st.sampled_from([1, 2, 4, 8, 3, 0, -1]) | json_scalars,
        "runtime_class": st.sampled_from(["sysbox-runc", "gvisor"]) | json_scalars,
        "run_as_user": st.integers(-5, 2**33) | json_scalars,
        "fs_group": st.integers(-5, 2**33),
        "image_pull_policy": st.sampled_from(["Never", "Always", "Sometimes"]) | json_scalars,
        "unknown": json_values,
    },
)
runtime_bodies = (
    st.fixed_dictionaries({}, optional={"runtime_id": st.text(max_size=20) | json_scalars}) | json_values
)
path_text = st.text(min_size=1, max_size=30).map(lambda t: quote(t, safe=""))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, Any], Any]:
    kind = draw(
        st.sampled_from(
            [
                "start",
                "session",
                "batch",
                "runtime",
                "list",
                "pause",
                "resume",
                "stop",
                "prefix",
                "image",
                "health",
                "router",
            ]
        )
    )
    params: dict[str, Any] = {}
    body: Any = None
    if kind == "start":
        method, path, body = "POST", "/start", draw(start_bodies | json_values)
    elif kind == "session":
        method, path = "GET", "/sessions/" + draw(path_text)
    elif kind == "batch":
        method, path = "GET", "/sessions/batch"
        params = {"ids": draw(st.lists(st.text(max_size=20), max_size=5))}
    elif kind == "runtime":
        method, path = "GET", "/runtime/" + draw(path_text | st.just("kh-abcdefghijkl"))
    elif kind in ("pause", "resume", "stop"):
        method, path, body = "POST", f"/{kind}", draw(runtime_bodies)
    elif kind == "image":
        method, path = "GET", "/image_exists"
        params = draw(st.fixed_dictionaries({}, optional={"image": images}))
    elif kind == "router":
        method = draw(st.sampled_from(["GET", "POST", "DELETE"]))
        path = "/kh-" + draw(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=12)
        )
        path += draw(st.sampled_from(["", "/alive", "/vscode/x", "/work-1/"]))
    else:
        method, path = "GET", {"list": "/list", "prefix": "/registry_prefix", "health": "/health"}[kind]
    return method, path, params, body


@pytest.fixture(scope="module")
def gateway_url(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A gateway under uvicorn in a thread, in its own namespace, with one key."""
    from kubernetes import client

    from tests.helpers.kube import api_client

    namespace = "kh-test-fuzz-" + tmp_path_factory.getbasetemp().name[-6:].lower().replace("_", "")
    with api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    try:
        out = io.StringIO()
        with redirect_stdout(out):
            assert (
                kubehands_main(
                    [
                        "keys",
                        "--kubeconfig",
                        kubeconfig,
                        "-n",
                        namespace,
                        "create",
                        "fuzz",
                        "--max-running",
                        "25",
                    ]
                )
                == 0
            )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app = create_app(
            Settings(
                namespace=namespace,
                kubeconfig=kubeconfig,
                wake_on_request=False,
                base_resources={"requests": {"cpu": "1m"}},
            )
        )
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, 60, "the gateway's /health"
        )
        yield base, out.getvalue().strip()
        server.should_exit = True
        thread.join(30)
    finally:
        with api_client(kubeconfig) as api:
            client.CoreV1Api(api).delete_namespace(namespace, propagation_policy="Background")


def test_generated_requests_never_get_a_5xx(gateway_url: tuple[str, str]) -> None:
    base, key = gateway_url
    http = httpx.Client(base_url=base, timeout=30)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(request=requests(), auth=st.sampled_from(["good", "good", "good", "none", "wrong"]))
    def check(request: tuple[str, str, dict[str, Any], Any], auth: str) -> None:
        method, path, params, body = request
        headers = {"good": {"X-API-Key": key}, "none": {}, "wrong": {"X-API-Key": "khk_nope"}}[auth]
        response = http.request(method, path, params=params, json=body, headers=headers)
        SEEN.append(response.status_code)
        assert response.status_code < 500 or (path.startswith("/kh-") and response.status_code == 503), (
            method,
            path,
            params,
            body,
            response.status_code,
            response.text,
        )
        if response.status_code >= 400:
            assert "detail" in response.json()

    try:
        check()
    finally:
        http.close()
    assert len(SEEN) >= 1000
    assert any(code == 200 for code in SEEN) and any(400 <= code < 500 for code in SEEN)
