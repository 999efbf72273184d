#!/usr/bin/env python3
"""Write the pinned dependency set of an OpenHands release to hack/pins/<what>-<version>.txt.

The agent-server image and the client virtualenvs of the tests install exactly these files
(`pip install --no-deps -r`), so that a dependency released after OpenHands shipped cannot change them:
cryptography 51 rejected the Fernet keys agent-server 1.58.2 derives from most session keys, and an unpinned
image build picked it up weeks after the release (docs/development.md#pinned-openhands-dependencies).

    hack/pin-openhands.py agent-server 1.58.2                # the sandbox image (Python 3.13, trixie)
    hack/pin-openhands.py agent-server 1.34.0 --upstream-lock uv.lock
    hack/pin-openhands.py sdk 1.58.2                         # openhands-sdk + openhands-workspace (Python 3.12)
    hack/pin-openhands.py app 1.11.0                         # openhands-ai, the app server (Python 3.12)

The set is what PyPI offered when the release was published: uv resolves with `--exclude-newer` set to the
upload time of the newest of the release's own packages. With `--upstream-lock` (the uv.lock of the
OpenHands repository at the release's tag), the versions that lock names are constraints as well, which gives
the set OpenHands built its own image from. uv is installed on first use into ~/.cache/kubehands/tools.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import venv
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ROOT / "hack" / "pins"
UV_VERSION = "0.13.10"
PYPI = "https://pypi.org"

# what -> (the packages of that OpenHands release it installs, the Python it runs on)
TARGETS: dict[str, tuple[tuple[str, ...], str]] = {
    "agent-server": (("openhands-agent-server", "openhands-sdk", "openhands-tools"), "3.13"),
    "sdk": (("openhands-sdk", "openhands-workspace", "openhands-tools"), "3.12"),
    "app": (("openhands-ai",), "3.12"),
}


def pins_file(what: str, version: str) -> Path:
    return PINS / f"{what}-{version}.txt"


def release_time(packages: tuple[str, ...], version: str) -> datetime:
    """The upload time of the newest file of `version` across `packages` (they are published together)."""
    newest = None
    for name in packages:
        with urllib.request.urlopen(f"{PYPI}/pypi/{name}/json", timeout=60) as reply:
            files = json.load(reply)["releases"].get(version) or []
        if not files:
            sys.exit(f"{name} {version} is not on PyPI")
        uploaded = max(datetime.fromisoformat(f["upload_time_iso_8601"].replace("Z", "+00:00")) for f in files)
        newest = uploaded if newest is None or uploaded > newest else newest
    assert newest is not None
    return newest


def upstream_constraints(lock: Path) -> list[str]:
    """`name==version` for every package a uv.lock names once (packages forked by markers are left free)."""
    versions: dict[str, set[str]] = {}
    for package in tomllib.loads(lock.read_text())["package"]:
        if "version" in package and package.get("source", {}).get("registry"):
            versions.setdefault(package["name"], set()).add(package["version"])
    return sorted(f"{name}=={vs.pop()}" for name, vs in versions.items() if len(vs) == 1)


def uv() -> Path:
    tools = Path(os.environ.get("KUBEHANDS_CACHE", Path.home() / ".cache" / "kubehands")) / "tools" / f"uv-{UV_VERSION}"
    binary = tools / "bin" / "uv"
    if not binary.exists():
        venv.create(tools, with_pip=True)
        subprocess.run([tools / "bin" / "pip", "install", "-q", f"uv=={UV_VERSION}"], check=True)
    return binary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=sorted(TARGETS))
    parser.add_argument("version")
    parser.add_argument("--upstream-lock", type=Path, help="the OpenHands repository's uv.lock at the release tag")
    args = parser.parse_args()

    packages, python = TARGETS[args.what]
    cutoff = release_time(packages, args.version) + timedelta(minutes=1)
    out = pins_file(args.what, args.version)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        requirements = Path(tmp) / "requirements.in"
        requirements.write_text("".join(f"{name}=={args.version}\n" for name in packages))
        command = [str(uv()), "pip", "compile", "--quiet", "--no-config", "--native-tls",
                   "--no-header", "--no-annotate",
                   "--index-url", f"{PYPI}/simple", "--python-version", python,
                   "--python-platform", "x86_64-unknown-linux-gnu",
                   "--exclude-newer", cutoff.strftime("%Y-%m-%dT%H:%M:%SZ"), str(requirements), "-o", str(out)]
        source = f"PyPI as of {cutoff:%Y-%m-%d %H:%M} UTC (the release's upload time + 1 min)"
        if args.upstream_lock:
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text("\n".join(upstream_constraints(args.upstream_lock)) + "\n")
            command += ["--constraint", str(constraints)]
            digest = hashlib.sha256(args.upstream_lock.read_bytes()).hexdigest()
            source += f", constrained to the versions of OpenHands' uv.lock at the release tag (sha256 {digest[:16]})"
        # uv leaves build locks in the temporary folder: keep them in this run's own.
        subprocess.run(command, check=True, env={**os.environ, "TMPDIR": tmp})
    body = out.read_text()
    flags = " --upstream-lock uv.lock" if args.upstream_lock else ""
    out.write_text(
        f"# {' '.join(packages)} {args.version} for Python {python} (x86-64 Linux): every package, pinned.\n"
        f"# Resolved from {source}.\n"
        f"# Generated by: hack/pin-openhands.py {args.what} {args.version}{flags}. Do not edit by hand.\n" + body
    )
    print(out.relative_to(ROOT))


if __name__ == "__main__":
    main()
