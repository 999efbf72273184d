"""`kubehands sandboxes`' pure parts: naming a sandbox by runtime or session id, its row, and the table."""

from datetime import UTC, datetime
from typing import Any

import pytest

from kubehands.api.cli.sandboxes import CommandError, duration, resolve, row, table
from kubehands.cli import main
from kubehands.crd.constants import ANNOTATION_CLAIMED_FROM, LABEL_POOL
from kubehands.crd.model import DesiredState
from tests.helpers.api import sandbox_object

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 1, 0, 0, tzinfo=UTC)


def made(rid: str, key: str, session: str, created: str = "2026-01-01T00:00:00Z", **kw: Any) -> dict[str, Any]:
    sandbox = sandbox_object(rid, key, session, 1, **kw)
    sandbox["metadata"]["creationTimestamp"] = created
    return sandbox


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (-3, "0s"), (42, "42s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (3 * 3600 + 720, "3h12m"),
     (86400, "1d"), (2 * 86400 + 4 * 3600 + 59, "2d4h")],
)
def test_duration(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


def test_resolve_by_runtime_id_then_session_id() -> None:
    a = made("kh-aaaaaaaaaaaa", "team-a", "shared")
    b = made("kh-bbbbbbbbbbbb", "team-b", "shared")
    old = made("kh-oooooooooooo", "team-b", "again", created="2026-01-01T00:00:00Z")
    new = made("kh-nnnnnnnnnnnn", "team-b", "again", created="2026-01-01T00:30:00Z")
    going = made("kh-gggggggggggg", "team-b", "again", created="2026-01-01T00:45:00Z")
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:50:00Z"
    member = made("kh-mmmmmmmmmmmm", "team-a", "pooled")
    member["metadata"]["labels"][LABEL_POOL] = "python"
    everything = [a, b, old, new, going, member]

    assert resolve(everything, "kh-bbbbbbbbbbbb", None) is b
    assert resolve(everything, "shared", "team-a") is a
    assert resolve(everything, "again", None) is new  # the newest not being deleted, like GET /sessions/{id}
    with pytest.raises(CommandError, match=r"^session id 'shared' is used by several keys \(team-a, team-b\)"):
        resolve(everything, "shared", None)
    with pytest.raises(CommandError, match="^no sandbox 'kh-aaaaaaaaaaaa' of key 'team-b'"):
        resolve(everything, "kh-aaaaaaaaaaaa", "team-b")
    with pytest.raises(CommandError, match="^no sandbox 'kh-mmmmmmmmmmmm'"):  # an unclaimed pool member is nobody's
        resolve(everything, "kh-mmmmmmmmmmmm", None)


def test_row() -> None:
    running = made("kh-rrrrrrrrrrrr", "team-a", "S1")  # ready pod
    running["status"] |= {"lastActivityTime": "2026-01-01T00:55:00Z", "restartCount": 2}
    running["metadata"]["annotations"][ANNOTATION_CLAIMED_FROM] = "python"
    pod = {"metadata": {"name": "kh-rrrrrrrrrrrr"}, "spec": {"nodeName": "node-1"}, "status": {}}
    assert row(running, pod, NOW) == {
        "runtime_id": "kh-rrrrrrrrrrrr", "session_id": "S1", "key": "team-a", "state": "Running", "phase": "Running",
        "status": "running", "pod_status": "ready", "restarts": 2, "node": "node-1", "age_seconds": 3600.0,
        "idle_seconds": 300.0, "pool": "warm:python",
    }
    paused = row(made("kh-pppppppppppp", "team-a", "S2", state=DesiredState.PAUSED), None, NOW)
    assert (paused["state"], paused["status"], paused["idle_seconds"], paused["node"], paused["pool"]) == (
        "Paused", "paused", None, "", "cold"
    )
    failed = row(made("kh-ffffffffffff", "team-a", "S3", failed=True), None, NOW)
    assert (failed["status"], failed["pod_status"]) == ("error", "crashloopbackoff")


def test_table_aligns_columns_and_shortens_long_session_ids() -> None:
    rows = [row(made("kh-rrrrrrrrrrrr", "team-a", "s" * 100), None, NOW)]
    header, line = table(rows).splitlines()
    assert header.startswith("RUNTIME ID       SESSION ID")
    assert line.split()[1] == "s" * 37 + "..." and line.split()[8] == "-"  # no node
    assert line.split()[-3:] == ["1h", "1h", "cold"]
    assert table([]).split() == header.split()


def test_sandboxes_cli_refuses_bad_input_before_connecting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code = main(["sandboxes", "--kubeconfig", "/nonexistent", "logs", "x", "--tail", "-1"])
    assert (code, capsys.readouterr().err) == (2, "error: --tail must be 0 or more\n")
    assert main(["sandboxes", "--kubeconfig", "/nonexistent", "list"]) == 2
    assert capsys.readouterr().err == "error: no kubeconfig file at /nonexistent\n"
    monkeypatch.setenv("KUBEHANDS_ROUTING_MODE", "subdomain")  # the gateway's settings apply, and are checked
    assert main(["sandboxes", "list"]) == 2
    assert capsys.readouterr().err == (
        "error: invalid settings: Value error, KUBEHANDS_DOMAIN is required in subdomain routing mode\n"
    )
