"""`kubehands sandboxes` against the real API server: list (columns, --key, JSON), get by runtime or session id,
pause / resume / stop doing what the runtime API does (the running limit included), and its one-line errors.

Sandboxes are started through the gateway's runtime API; no operator runs (nothing here needs a pod)."""

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, redirect_stdout
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubehands.api.main import create_app
from kubehands.api.settings import Settings
from kubehands.cli import main
from kubehands.crd import constants
from tests.helpers.kube import api_client

pytestmark = pytest.mark.cluster

IMAGE = "ghcr.io/openhands/agent-server:1.34.0-python"
SMALL = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def create_key(kubeconfig: str, namespace: str, name: str, *extra: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["keys", "--kubeconfig", kubeconfig, "-n", namespace, "create", name, *extra]) == 0
    return out.getvalue().strip()


@asynccontextmanager
async def runtime_api(kubeconfig: str, namespace: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(namespace=namespace, kubeconfig=kubeconfig, public_url="http://gw.test", base_resources=SMALL)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", timeout=30) as http:
            yield http


async def start(http: httpx.AsyncClient, key: str, session_id: str) -> str:
    body = {"image": IMAGE, "session_id": session_id, "image_pull_policy": "Never"}
    response = await http.post("/start", json=body, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return str(response.json()["runtime_id"])


def sandbox(kubeconfig: str, namespace: str, name: str) -> dict[str, Any] | None:
    with api_client(kubeconfig) as api:
        try:
            found = client.CustomObjectsApi(api).get_namespaced_custom_object(
                constants.GROUP, constants.VERSION, namespace, constants.PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
    return None if found["metadata"].get("deletionTimestamp") else dict(found)


def session_secrets(kubeconfig: str, namespace: str) -> list[str]:
    with api_client(kubeconfig) as api:
        found = client.CoreV1Api(api).list_namespaced_secret(namespace, label_selector="kubehands.dev/session-key=true")
    return sorted(s.metadata.name for s in found.items)


async def test_sandboxes_cli(kubeconfig: str, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    key_a = create_key(kubeconfig, namespace, "team-a", "--max-running", "1")
    key_b = create_key(kubeconfig, namespace, "team-b")
    async with runtime_api(kubeconfig, namespace) as http:
        rid_a = await start(http, key_a, "shared")
        rid_b = await start(http, key_b, "shared")  # the same session id, another key
        rid_b2 = await start(http, key_b, "other")
    capsys.readouterr()
    cli = ["sandboxes", "--kubeconfig", kubeconfig, "-n", namespace]

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*cli, *args])
        out, err = capsys.readouterr()
        return code, out, err

    # list: a table with a header, every key's sandboxes; --key filters; -o json has the full values
    code, out, err = run("list")
    assert code == 0 and err == ""
    header, *lines = out.splitlines()
    assert header.split() == ["RUNTIME", "ID", "SESSION", "ID", "KEY", "STATE", "PHASE", "STATUS", "POD", "RESTARTS",
                              "NODE", "AGE", "IDLE", "POOL"]
    assert sorted(line.split()[0] for line in lines) == sorted([rid_a, rid_b, rid_b2])
    assert all(line.split()[2:6] == [line.split()[2], "Running", "-", "starting"] for line in lines)
    code, out, _ = run("list", "--key", "team-b", "-o", "json")
    listed = json.loads(out)
    assert code == 0 and sorted(r["runtime_id"] for r in listed) == sorted([rid_b, rid_b2])
    first = next(r for r in listed if r["runtime_id"] == rid_b)
    assert first["session_id"] == "shared" and first["key"] == "team-b" and first["state"] == "Running"
    assert first["status"] == "starting" and first["pool"] == "cold" and 0 <= first["age_seconds"] < 300

    # get: by runtime id; by session id, which needs --key when two keys use it; clear errors otherwise
    code, out, _ = run("get", rid_b2)
    assert code == 0 and f"Runtime ID: {rid_b2}" in out and "Session ID: other" in out and "Key: team-b" in out
    assert run("get", "shared") == (
        1, "", "error: session id 'shared' is used by several keys (team-a, team-b): add --key\n"
    )
    code, out, _ = run("get", "shared", "--key", "team-a", "-o", "json")
    assert code == 0 and json.loads(out)["runtime_id"] == rid_a
    assert run("get", "kh-nosuchsandbx") == (
        1, "", "error: no sandbox 'kh-nosuchsandbx' (neither a runtime id nor a session id)\n"
    )
    assert run("get", rid_a, "--key", "team-b")[2] == (
        f"error: no sandbox '{rid_a}' of key 'team-b' (neither a runtime id nor a session id)\n"
    )
    code, _, err = run("logs", rid_a)
    assert code == 1 and err == f"error: sandbox '{rid_a}' has no pod now (state Running, phase unknown)\n"

    # pause, resume and stop are the runtime API's: the key's running limit holds, the session Secret goes
    assert run("pause", "shared", "--key", "team-a") == (
        0, "", f"paused sandbox '{rid_a}' (session 'shared', key 'team-a'); status paused\n"
    )
    assert (sandbox(kubeconfig, namespace, rid_a) or {})["spec"]["state"] == "Paused"
    assert run("pause", rid_a)[0] == 0  # idempotent, like POST /pause
    async with runtime_api(kubeconfig, namespace) as http:
        rid_a2 = await start(http, key_a, "second")  # the paused one does not count against team-a's limit of 1
    capsys.readouterr()
    code, _, err = run("resume", rid_a)
    assert code == 1 and err.startswith("error: API key 'team-a' already has 1 sandboxes starting") and "\n" == err[-1]
    assert err.count("\n") == 1
    assert (sandbox(kubeconfig, namespace, rid_a) or {})["spec"]["state"] == "Paused"
    secrets_before = session_secrets(kubeconfig, namespace)
    assert run("stop", "second", "--key", "team-a") == (
        0, "", f"stopped sandbox '{rid_a2}' (session 'second', key 'team-a')\n"
    )
    assert sandbox(kubeconfig, namespace, rid_a2) is None
    assert len(session_secrets(kubeconfig, namespace)) == len(secrets_before) - 1
    assert run("resume", rid_a) == (
        0, "", f"resumed sandbox '{rid_a}' (session 'shared', key 'team-a'); status starting\n"
    )
    assert (sandbox(kubeconfig, namespace, rid_a) or {})["spec"]["state"] == "Running"
    assert run("stop", rid_a2) == (1, "", f"error: no sandbox '{rid_a2}' (neither a runtime id nor a session id)\n")

