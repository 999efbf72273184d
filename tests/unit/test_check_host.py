"""hack/check-host.sh's /tmp check, run against a scratch folder (KUBEHANDS_CHECK_TMP) instead of /tmp.

The script also compares host state a running cluster changes (iptables chains, mounts, ...), which a cluster
someone else runs may change meanwhile: these tests only judge the /tmp part of its verdict.
"""

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHECK_HOST = ROOT / "hack" / "check-host.sh"


def check_host(command: str, snapshot: Path, scratch: Path, ignore: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBEHANDS_CHECK_TMP": str(scratch), "KUBEHANDS_CHECK_TMP_IGNORE": ignore}
    return subprocess.run([str(CHECK_HOST), command, str(snapshot)], capture_output=True, text=True, env=env)


def left_in(scratch: Path, stderr: str) -> list[str]:
    """The entries verify reports as left in the scratch folder."""
    lines = stderr.splitlines()
    header = f"left in {scratch} since the snapshot:"
    if header not in lines:
        return []
    return [line.strip() for line in lines[lines.index(header) + 1 :] if line.startswith("  ")]


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    (folder / "there-before").write_text("")
    (folder / ".hidden-before").mkdir()
    (folder / "removed-meanwhile").write_text("")
    return folder


def test_new_entries_that_remain_fail_verify(scratch: Path, tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    assert check_host("snapshot", snapshot, scratch).returncode == 0
    tmp_lines = [line for line in snapshot.read_text().splitlines() if line.startswith("tmp ")]
    assert tmp_lines == ["tmp .hidden-before", "tmp removed-meanwhile", "tmp there-before"]

    (scratch / "removed-meanwhile").unlink()
    (scratch / "pytest-of-root").mkdir()
    (scratch / ".hidden-new").write_text("")
    (scratch / "tmp a b").write_text("")  # a name with spaces, as mkstemp never makes but others may
    (scratch / "kubehands-kcm-0123abcd").mkdir()
    (scratch / "dangling").symlink_to(scratch / "nowhere")
    # The OS's own, and what the caller says other programs create.
    (scratch / "systemd-private-0f1e-chronyd.service-x").mkdir()
    (scratch / ".X11-unix").mkdir()
    (scratch / "tmux-0").mkdir()
    (scratch / "editor.swp").write_text("")

    done = check_host("verify", snapshot, scratch, ignore="tmux-* *.swp")
    assert done.returncode == 1
    assert left_in(scratch, done.stderr) == [
        f"{scratch}/.hidden-new",
        f"{scratch}/dangling",
        f"{scratch}/kubehands-kcm-0123abcd",
        f"{scratch}/pytest-of-root",
        f"{scratch}/tmp\\ a\\ b",
    ]


def test_nothing_new_passes_the_tmp_check(scratch: Path, tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot"
    assert check_host("snapshot", snapshot, scratch).returncode == 0
    (scratch / "removed-meanwhile").unlink()
    (scratch / "systemd-private-abc").mkdir()
    (scratch / "there-before").write_text("changed, but there before")

    done = check_host("verify", snapshot, scratch)
    assert left_in(scratch, done.stderr) == [] and "left in" not in done.stderr
    # The rest of the verdict is the host's: a cluster running meanwhile may change it.
    assert done.returncode == 0 or "host state differs from the snapshot" in done.stderr, done.stderr
    if done.returncode == 0:
        assert "host state restored" in done.stderr
