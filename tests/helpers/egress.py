"""The local cluster's sandbox egress (hack/lib/egress.sh) for tests: apply settings with `hack/cluster.sh egress`
and put the cluster's own back afterwards. Tests only ever let sandboxes reach the stand-in internet
(tests/helpers/internet.py), never the real one."""

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.internet import INTERNET_ADDRESS, SUBNET
from tests.helpers.paths import STATE

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "hack" / "cluster.sh"
PREFIX = "KUBEHANDS_SANDBOX_"
# What the tests' sandboxes may reach: the stand-in internet, its DNS server resolving their names.
TEST_INTERNET = {"KUBEHANDS_SANDBOX_EGRESS": SUBNET, "KUBEHANDS_SANDBOX_DNS": INTERNET_ADDRESS}


def apply(settings: dict[str, str]) -> dict[str, str]:
    """Apply `settings` (KUBEHANDS_SANDBOX_* only; unset ones take their defaults) to the running cluster;
    the effective settings."""
    assert all(name.startswith(PREFIX) for name in settings), settings
    egress = settings.get("KUBEHANDS_SANDBOX_EGRESS", "none")
    assert egress not in ("internet", "host"), "tests never let sandbox traffic leave the machine"
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)} | settings
    done = subprocess.run([str(CLUSTER_SH), "egress"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if line.startswith(PREFIX))


def current() -> dict[str, str]:
    """The settings the cluster runs with (written by the last apply)."""
    path = STATE / "egress.env"
    lines = path.read_text().splitlines() if path.exists() else []
    return {k: v for k, v in (line.split("=", 1) for line in lines if "=" in line) if v}


@contextmanager
def sandbox_egress(settings: dict[str, str]) -> Iterator[dict[str, str]]:
    """`settings` while the block runs, then the cluster's own again."""
    before = current()
    try:
        yield apply(settings)
    finally:
        apply(before)


def forwarded_from_pods() -> int:
    """Packets pods sent beyond the bridge that the host let through (the ACCEPT rules of KUBEHANDS-EGRESS): a test
    compares two readings to know that traffic really came from a pod, not from a process on the host."""
    listing = subprocess.run(["iptables", "-w", "-t", "filter", "-n", "-v", "-x", "-L", "KUBEHANDS-EGRESS"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    return sum(int(fields[0]) for fields in (line.split() for line in listing.splitlines()[2:])
               if len(fields) > 2 and fields[2] == "ACCEPT")  # fmt: skip
