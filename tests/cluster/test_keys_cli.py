"""`kubehands keys` against the real API server: create, list and revoke, its messages and exit codes."""

import json

import pytest
from kubernetes import client

from kubehands.api import keys
from kubehands.cli import main
from tests.helpers.kube import api_client

pytestmark = pytest.mark.cluster


def test_keys_cli_create_list_revoke(kubeconfig: str, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    keys_cli = ["keys", "--kubeconfig", kubeconfig, "-n", namespace]
    assert main([*keys_cli, "create", "team-a", "--max-running", "2"]) == 0
    out, err = capsys.readouterr()
    raw = out.strip()
    assert raw.startswith(keys.KEY_PREFIX) and out == raw + "\n"
    assert err == "created key 'team-a'; store it now, it cannot be shown again\n"
    with api_client(kubeconfig) as api:
        stored = client.CoreV1Api(api).read_namespaced_secret("kh-apikey-team-a", namespace)
        assert raw not in json.dumps(api.sanitize_for_serialization(stored))

    assert main([*keys_cli, "create", "team-a"]) == 1
    assert capsys.readouterr().err == "error: key 'team-a' already exists\n"

    assert main([*keys_cli, "list"]) == 0
    assert capsys.readouterr().out == 'team-a\t{"maxRunning": 2}\n'

    assert main([*keys_cli, "revoke", "team-a"]) == 0
    assert capsys.readouterr().err == (
        "revoked key 'team-a'\nno sandboxes of key 'team-a' in namespace "
        f"'{namespace}'; if the gateway's sandboxes are in another namespace, run this again there with "
        "--sandbox-namespace\n"
    )
    assert main([*keys_cli, "list"]) == 0
    assert capsys.readouterr().out == ""
    assert main([*keys_cli, "revoke", "team-a"]) == 1
    assert capsys.readouterr().err == "error: no key 'team-a'\n"


async def test_keys_cli_runs_inside_a_running_event_loop(kubeconfig: str, namespace: str) -> None:
    """asyncio.run refuses to start in a thread whose loop runs (async tests, notebooks): the command
    still works there."""
    assert main(["keys", "--kubeconfig", kubeconfig, "-n", namespace, "create", "team-b"]) == 0
    with api_client(kubeconfig) as api:
        assert client.CoreV1Api(api).read_namespaced_secret("kh-apikey-team-b", namespace).metadata.name
