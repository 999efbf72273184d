"""Where the hack/ scripts keep what they build and what a cluster owns (hack/lib/common.sh), as tests see it."""

import os
from pathlib import Path

# Built once and reused across runs: binaries, images, client venvs, pytest's folders.
CACHE = Path(os.environ.get("KUBEHANDS_CACHE") or Path.home() / ".cache" / "kubehands")
# What the local cluster owns: certificates, etcd, workspaces, logs (hack/cluster.sh: `stop` keeps it).
STATE = Path(os.environ.get("KUBEHANDS_STATE") or CACHE / "cluster")
