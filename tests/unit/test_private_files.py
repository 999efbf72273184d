"""`make run` writes its logs and its API key file readable by their owner only (0600, in a 0700 folder), and a
key is never readable by others, not even for a moment: hack/lib/common.sh's kh::private_dir and
kh::private_file, run by a real bash, and hack/run.sh using them for every file it writes. (The whole of
`make run` is checked in tests/host/test_make_run_secrets.py.)"""

import re
import stat
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMMON = ROOT / "hack" / "lib" / "common.sh"
RUN_SH = ROOT / "hack" / "run.sh"


def bash(script: str, cwd: Path) -> None:
    """`script` in bash with hack/lib/common.sh sourced, errexit on, and a umask that makes files world-readable."""
    subprocess.run(
        ["bash", "-c", f'set -o errexit -o nounset; umask 022; source "{COMMON}"; {script}'], cwd=cwd, check=True
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_is_born_private(tmp_path: Path) -> None:
    # chmod stubbed out: the file is 0600 because it was made so, not because it was restricted afterwards
    bash('chmod() { :; }; kh::private_file new.log key; echo secret > key', tmp_path)
    assert mode(tmp_path / "new.log") == 0o600 and (tmp_path / "new.log").read_text() == ""
    assert mode(tmp_path / "key") == 0o600 and (tmp_path / "key").read_text() == "secret\n"


def test_a_file_of_an_earlier_run_is_made_private_and_kept(tmp_path: Path) -> None:
    old = tmp_path / "gateway.log"
    old.write_text("an earlier run\n")
    old.chmod(0o644)
    bash("kh::private_file gateway.log", tmp_path)
    assert mode(old) == 0o600 and old.read_text() == "an earlier run\n"  # the caller's `>` empties it
    bash("kh::private_file gateway.log; echo new > gateway.log", tmp_path)
    assert mode(old) == 0o600 and old.read_text() == "new\n"


def test_private_dir(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o755)
    bash("kh::private_dir run; kh::private_dir fresh/run", tmp_path)
    assert mode(tmp_path / "run") == 0o700 and mode(tmp_path / "fresh" / "run") == 0o700


def test_make_run_makes_every_file_it_writes_private_first() -> None:
    """Each `> file` of hack/run.sh into its run folder (the logs, the key) comes after kh::private_file of it."""
    text = RUN_SH.read_text()
    assert 'kh::private_dir "$RUN_DIR"' in text
    written = re.findall(r'(?<![0-9&])>\s*("\$(?:RUN_DIR/[^"]+|key_file)")', text)
    assert set(written) == {'"$RUN_DIR/operator.log"', '"$key_file"', '"$RUN_DIR/gateway.log"'}, written
    for target in written:
        made_private = text.find(f"kh::private_file {target}")
        assert 0 <= made_private < text.find(f"> {target}"), f"{target} is written before kh::private_file"
    assert "chmod 0600" not in text  # restricting after the write would leave a moment readable by others
