"""The local cluster's logs (hack/cluster.sh, ~/.cache/kubehands/cluster/logs) are readable by their owner only:
the folder is 0700 and each log 0600 before anything is written to it, as `make run`'s own files are
(tests/unit/test_private_files.py). hack/cluster.sh's kh::start runs in a real bash here, with a harmless command in
place of a cluster component; the whole of `up` needs root and is the host tier's."""

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.unit.test_private_files import COMMON, mode

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "hack" / "cluster.sh"


def function(name: str) -> str:
    """The text of a bash function of hack/cluster.sh (from `name() {` to its closing `}` at column 0)."""
    found = re.search(rf"^{re.escape(name)}\(\) \{{\n.*?^\}}\n", CLUSTER_SH.read_text(), re.S | re.M)
    assert found is not None, name
    return found.group(0)


def start_component(state: Path, name: str) -> None:
    """kh::start NAME -- a command that logs one line, in bash with a umask that makes files world-readable."""
    script = f"""
        set -o errexit -o nounset; umask 022; source "{COMMON}"
        LOGS="{state}/logs" PIDS="{state}/pids"; mkdir -p "$PIDS"; kh::private_dir "$LOGS"
        {function("kh::start")}
        kh::start {name} -- sh -c 'echo {name} started'
    """
    subprocess.run(["bash", "-c", script], check=True, capture_output=True)


def wait_for_text(path: Path, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{path} never said {text!r}"
        time.sleep(0.05)


def test_a_components_log_is_private_in_a_private_folder(tmp_path: Path) -> None:
    start_component(tmp_path, "etcd")
    log = tmp_path / "logs" / "etcd.log"
    wait_for_text(log, "etcd started")
    assert mode(tmp_path / "logs") == 0o700
    assert mode(log) == 0o600


def test_the_logs_of_an_earlier_run_are_made_private(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)
    old = logs / "kubelet.log"
    old.write_text("an earlier run\n")
    old.chmod(0o644)
    start_component(tmp_path, "kubelet")
    wait_for_text(old, "kubelet started")
    assert mode(logs) == 0o700 and mode(old) == 0o600


def test_every_log_cluster_sh_writes_is_made_private_first() -> None:
    """Each `> "$LOGS/..."` comes after kh::private_file of the same file, and `up` makes the folder with
    kh::private_dir, never a plain mkdir."""
    text = CLUSTER_SH.read_text()
    up = function("kh::up")
    assert 'kh::private_dir "$LOGS"' in up and not re.search(r'mkdir[^\n]*"\$LOGS"', text)
    writes = list(re.finditer(r'>\s*("\$LOGS/[^"]+")', text))
    assert len(writes) >= 2, "kh::start's logs and kube-proxy's cleanup log"
    for write in writes:
        target = write.group(1)
        made_private = text.rfind(f"kh::private_file {target}", 0, write.start())
        assert made_private >= 0, f"{target} is written without kh::private_file first"
        assert "\n}\n" not in text[made_private : write.start()], f"{target}: made private in another function"
