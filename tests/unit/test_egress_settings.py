"""The local cluster's sandbox egress settings (hack/lib/egress.sh): what each mode means for the pods' resolver,
and that a bad value stops the script with a message naming the setting, before any rule is written."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def egress_shell(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `script` with hack/lib/egress.sh sourced (as hack/cluster.sh does, with a state folder of its own)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBEHANDS_SANDBOX_")}
    prelude = f'source "{ROOT}/hack/lib/common.sh"; S="{tmp_path}"; source "{ROOT}/hack/lib/egress.sh"; '
    return subprocess.run(
        ["bash", "-c", prelude + script], env=clean | env, capture_output=True, text=True, timeout=30
    )


def settings(tmp_path: Path, **env: str) -> dict[str, str]:
    done = egress_shell("kh::egress::settings", tmp_path, **env)
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


def host_resolvers() -> str:
    lines = Path("/etc/resolv.conf").read_text().splitlines()
    return ",".join(line.split()[1] for line in lines if line.startswith("nameserver"))


def test_the_default_is_none_with_no_resolver(tmp_path: Path) -> None:
    assert settings(tmp_path) == {
        "KUBEHANDS_SANDBOX_EGRESS": "none",
        "KUBEHANDS_SANDBOX_EGRESS_ALLOW": "",
        "KUBEHANDS_SANDBOX_HOST_PORTS": "",
        "KUBEHANDS_SANDBOX_DNS": "",
    }


@pytest.mark.parametrize("mode", ["internet", "host"])
def test_internet_modes_resolve_with_the_hosts_resolvers(tmp_path: Path, mode: str) -> None:
    assert settings(tmp_path, KUBEHANDS_SANDBOX_EGRESS=mode)["KUBEHANDS_SANDBOX_DNS"] == host_resolvers()


def test_a_cidr_list_never_falls_back_to_the_hosts_resolvers(tmp_path: Path) -> None:
    """Names must not leave the machine when the traffic may not: only the servers named are asked."""
    assert settings(tmp_path, KUBEHANDS_SANDBOX_EGRESS="203.0.113.0/24")["KUBEHANDS_SANDBOX_DNS"] == ""
    named = settings(tmp_path, KUBEHANDS_SANDBOX_EGRESS="203.0.113.0/24", KUBEHANDS_SANDBOX_DNS="203.0.113.10")
    assert named["KUBEHANDS_SANDBOX_DNS"] == "203.0.113.10"


@pytest.mark.parametrize(
    ("mode", "allow", "ports", "dns", "named"),
    [
        ("everything", "", "", "", "KUBEHANDS_SANDBOX_EGRESS"),
        ("203.0.113.0/33", "", "", "", "KUBEHANDS_SANDBOX_EGRESS"),
        ("203.0.113.0/24,example.com", "", "", "", "KUBEHANDS_SANDBOX_EGRESS"),
        ("internet", "10.0.0.0/8;", "", "", "KUBEHANDS_SANDBOX_EGRESS_ALLOW"),
        ("internet", "", "0", "", "KUBEHANDS_SANDBOX_HOST_PORTS"),
        ("internet", "", "11434,70000", "", "KUBEHANDS_SANDBOX_HOST_PORTS"),
        ("internet", "", "", "dns.example", "KUBEHANDS_SANDBOX_DNS"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(
    tmp_path: Path, mode: str, allow: str, ports: str, dns: str, named: str
) -> None:
    done = egress_shell(f"kh::egress::validate '{mode}' '{allow}' '{ports}' '{dns}'; echo passed", tmp_path)
    assert done.returncode == 1 and "passed" not in done.stdout
    assert named in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("mode", "allow", "ports", "dns"),
    [
        ("none", "", "", ""),
        ("internet", "192.168.1.20/32", "11434,8000", "1.1.1.1,9.9.9.9"),
        ("host", "", "", "10.255.255.53"),
        ("203.0.113.0/24,198.51.100.7", "", "", "203.0.113.10"),
    ],
)
def test_good_values_pass(tmp_path: Path, mode: str, allow: str, ports: str, dns: str) -> None:
    done = egress_shell(f"kh::egress::validate '{mode}' '{allow}' '{ports}' '{dns}' && echo passed", tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "passed", done.stderr
