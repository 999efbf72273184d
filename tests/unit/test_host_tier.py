"""tests/host (which starts and stops clusters of its own) is collected only when the command line names it, so
that the main pytest run of hack/test.sh never runs it (tests/conftest.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
OTHER_TIERS = ["--ignore=tests/unit", "--ignore=tests/cluster", "--ignore=tests/node"]


def collected(*args: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return done.returncode, [line for line in done.stdout.splitlines() if line.startswith("tests/")]


def test_host_tier_is_left_out_unless_named() -> None:
    # The default run (testpaths) and `pytest tests` see everything but tests/host.
    assert collected(*OTHER_TIERS) == (5, [])
    assert collected("tests", *OTHER_TIERS) == (5, [])
    rc, host = collected("tests/host")
    assert rc == 0 and host and all(test.startswith("tests/host/test_make_run_signals.py::") for test in host)
    rc, one = collected(host[0])
    assert (rc, one) == (0, [host[0]])
    rc, marked = collected("-m", "host", "tests/host")
    assert (rc, marked) == (0, host)
