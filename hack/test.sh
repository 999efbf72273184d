#!/usr/bin/env bash
# The whole test suite. The pytest session brings the local cluster up when a cluster or node
# test needs it and tears it down at the end; a cluster that was already running is left alone.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$ROOT"

# Belt and braces: if pytest dies before its own teardown, still stop what this run started.
kh::stop_cluster_at_exit_unless_running

set +o errexit
.venv/bin/pytest "$@"
rc=$?
set -o errexit
if [[ $rc == 5 ]]; then
  kh::log "pytest collected no tests: that is a failure"
  exit 1
fi
exit $rc
