"""Every `kubehands` command tells a user's mistake in one line, with exit status 2, never with a traceback: a
missing or broken kubeconfig (keys, sandboxes, gateway, operator) and a bad `KUBEHANDS_*` setting (gateway,
operator). The command runs as a user runs it, in a process of its own; none of these cases reaches a cluster."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_chart import ROOT

pytestmark = pytest.mark.unit

# Commands that reach their kubeconfig first: they fail there, before any API call.
CLIENTS = {
    "keys": ["keys", "list"],
    "sandboxes": ["sandboxes", "list"],
    "gateway": ["gateway", "--host", "127.0.0.1", "--port", "0"],
    "operator": ["operator"],
}
SERVERS = ("gateway", "operator")


def kubehands(argv: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`kubehands ARGV` with no kubeconfig around but the one `env` names (HOME has no ~/.kube)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBEHANDS_") and k != "KUBECONFIG"}
    clean |= {"HOME": str(home), "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "api", "")), **env}
    clean.pop("KUBERNETES_SERVICE_HOST", None)  # never "in a cluster"
    return subprocess.run(
        [sys.executable, "-m", "kubehands.cli", *argv], capture_output=True, text=True, env=clean, timeout=60
    )


def one_line_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # the entry's prefix, or the one `kubehands keys` and `kubehands sandboxes` give the errors they catch themselves
    assert re.match(rf"(kubehands {command}: )?error: ", lines[0]), lines[0]
    return lines[0]


def kubeconfig_setting(command: str, path: str) -> tuple[list[str], dict[str, str]]:
    """How a user hands `command` a kubeconfig: --kubeconfig for the clients, KUBEHANDS_KUBECONFIG for the servers."""
    if command in SERVERS:
        return CLIENTS[command], {"KUBEHANDS_KUBECONFIG": path}
    return [*CLIENTS[command], "--kubeconfig", path], {}


@pytest.mark.parametrize("command", CLIENTS)
def test_no_kubeconfig_at_all(command: str, tmp_path: Path) -> None:
    line = one_line_error(kubehands(CLIENTS[command], tmp_path), command)
    assert f"no kubeconfig file at {tmp_path}/.kube/config, and not in a cluster" in line
    if command != "sandboxes":  # it says so in its own words
        assert ("KUBEHANDS_KUBECONFIG" if command in SERVERS else "--kubeconfig") in line


@pytest.mark.parametrize("command", CLIENTS)
def test_a_kubeconfig_that_does_not_exist(command: str, tmp_path: Path) -> None:
    argv, env = kubeconfig_setting(command, str(tmp_path / "missing"))
    line = one_line_error(kubehands(argv, tmp_path, **env), command)
    assert f"no kubeconfig file at {tmp_path / 'missing'}" in line


@pytest.mark.parametrize("command", CLIENTS)
@pytest.mark.parametrize(
    ("text", "words"),
    [("clusters: [\n", "is not a kubeconfig: YAML"), ("apiVersion: v1\nkind: Config\n", "current-context")],
    ids=["not YAML", "no context"],
)
def test_a_broken_kubeconfig(command: str, text: str, words: str, tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text(text)
    argv, env = kubeconfig_setting(command, str(broken))
    assert words in one_line_error(kubehands(argv, tmp_path, **env), command)


@pytest.mark.parametrize(
    ("command", "setting", "value"),
    [
        ("gateway", "KUBEHANDS_ROUTING_MODE", "bogus"),
        ("gateway", "KUBEHANDS_POOL_INIT_TIMEOUT_SECONDS", "soon"),
        ("operator", "KUBEHANDS_RUN_AS_USER", "root"),
        ("operator", "KUBEHANDS_METRICS_PORT", "eighty"),
    ],
)
def test_a_bad_setting(command: str, setting: str, value: str, tmp_path: Path) -> None:
    line = one_line_error(kubehands(CLIENTS[command], tmp_path, **{setting: value}), command)
    assert f"invalid settings: {setting}: " in line
