#!/usr/bin/env bash
# `make bench`: the benchmarks on the local cluster (docs/benchmarks.md, bench/results/*.json).
# Starts the cluster when it is not running and stops it again at the end; a cluster that was
# already running is left alone. Arguments go to `python -m bench.run` (e.g. --quick, --only api).
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$ROOT"

kh::stop_cluster_at_exit_unless_running

cluster_env=$(hack/cluster.sh up)
eval "export $(echo "$cluster_env" | grep -E '^(KUBECONFIG|SANDBOX_IMAGE)=' | tr '\n' ' ')"
hack/build-images.sh agent-server >/dev/null   # built once, then only imported

.venv/bin/python -m bench.run "$@"
if [[ $# -eq 0 ]]; then
  # the full run also measures the router without a cluster (section 3b), then re-renders the page
  .venv/bin/python -m bench.router_local
  .venv/bin/python -m bench.report
fi
