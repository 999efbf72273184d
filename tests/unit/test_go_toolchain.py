"""The Go check of hack/build-kubernetes.sh (kh::go_release and kh::use_go in hack/lib/common.sh): Kubernetes
v1.20.2 is built with Go 1.19 only, and a missing Go stops the build before it downloads or writes anything."""

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMMON = ROOT / "hack" / "lib" / "common.sh"
BUILD = ROOT / "hack" / "build-kubernetes.sh"


def bash(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'source "{COMMON}" && {script}', "bash", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("output", "release"),
    [
        ("go version go1.19.8 linux/amd64", "1.19"),
        ("go version go1.19 linux/amd64", "1.19"),
        ("go version go1.19rc1 linux/amd64", "1.19"),
        ("go version go1.24.4 linux/amd64", "1.24"),
        ("go version go1.190.1 linux/amd64", "1.190"),
        ("go version go1.1 linux/amd64", "1.1"),
    ],
)
def test_go_release_names_major_and_minor(output: str, release: str) -> None:
    done = bash('kh::go_release "$1"', output)
    assert (done.returncode, done.stdout) == (0, release + "\n")


@pytest.mark.parametrize(
    "output",
    ["", "go1.19.8", "go version devel go1.20-1a2b3c linux/amd64", "bash: go: command not found", "go version go1"],
)
def test_go_release_of_other_text_is_nothing(output: str) -> None:
    done = bash('kh::go_release "$1"', output)
    assert (done.returncode, done.stdout) == (1, "")


def test_missing_go_says_what_to_do(tmp_path: Path) -> None:
    done = bash("kh::use_go", env={"KUBEHANDS_GOROOT": str(tmp_path / "go")})
    assert done.returncode == 1
    assert f"Go 1.19 not found (no {tmp_path}/go/bin/go)" in done.stderr
    assert "run 'make deps' (hack/install-deps.sh)" in done.stderr


def test_build_without_go_stops_before_touching_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**os.environ, "KUBEHANDS_CACHE": str(cache), "KUBEHANDS_GOROOT": str(tmp_path / "go")}
    done = subprocess.run([str(BUILD)], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert "Go 1.19 not found" in done.stderr and "make deps" in done.stderr
    assert list(cache.iterdir()) == []


def test_build_rejects_unknown_components(tmp_path: Path) -> None:
    env = {**os.environ, "KUBEHANDS_CACHE": str(tmp_path), "KUBEHANDS_K8S_COMPONENTS": "kube-apiserver kube-dns"}
    done = subprocess.run([str(BUILD)], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert "unknown component 'kube-dns'" in done.stderr
    assert list(tmp_path.iterdir()) == []
