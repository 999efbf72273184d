#!/usr/bin/env bash
# The whole test suite, in two pytest runs:
#   1. the unit, cluster and node tiers. The session brings the local cluster up when a cluster or node test
#      needs it and tears it down at the end; a cluster that was already running is left alone.
#   2. the host tier (tests/host: `make run` stopped by signals must leave the host as it was). It starts and
#      stops clusters of its own, so it runs only when no cluster was running before this script began, and
#      only for a whole-suite run (no pytest arguments); otherwise it says why it did not run.
# pytest's temporary folders go to $KUBEHANDS_CACHE/pytest (emptied here), not /tmp: a test run leaves nothing
# in /tmp, which hack/check-host.sh verifies.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$ROOT"

# Belt and braces: if pytest dies before its own teardown, still stop what this run started.
kh::stop_cluster_at_exit_unless_running

BASETEMP="$KUBEHANDS_CACHE/pytest"
rm -rf "$BASETEMP"
mkdir -p "$BASETEMP"

pytest_run() {  # pytest's exit code, where collecting no tests (5) is a failure too
  local rc=0
  .venv/bin/pytest "$@" || rc=$?
  if [[ $rc == 5 ]]; then
    kh::log "pytest collected no tests: that is a failure"
    rc=1
  fi
  return $rc
}

rc=0
pytest_run --basetemp "$BASETEMP/main" "$@" || rc=$?

HOST_ALONE=".venv/bin/pytest tests/host --basetemp $BASETEMP/host"
not_run() { kh::log "HOST TIER NOT RUN (tests/host): $*"; }
if [[ $KH_CLUSTER_WAS_RUNNING == 1 ]]; then
  not_run "a cluster was already running when the tests began, and this tier starts and stops its own." \
    "Run it on a host where none runs: make cluster-reset, then $HOST_ALONE"
elif (( $# > 0 )); then
  not_run "pytest arguments select what to run ($*); run it alone: $HOST_ALONE"
elif [[ $KH_CLUSTER_TEARDOWN == stop ]]; then
  not_run "a stopped cluster's state was kept in $KUBEHANDS_STATE (make run's key, sandboxes, workspaces), and" \
    "this tier deletes it. Run it where there is none: make cluster-reset, then $HOST_ALONE"
elif [[ -n ${KUBEHANDS_KEEP_CLUSTER:-} ]]; then
  not_run "KUBEHANDS_KEEP_CLUSTER is set: the cluster the tests started is still up"
elif hack/cluster.sh status >/dev/null 2>&1; then
  not_run "the cluster the tests started is still running: its teardown failed"
  rc=1
else
  kh::log "host tier (tests/host): make run, stopped by SIGINT and SIGTERM, restores the host"
  pytest_run --basetemp "$BASETEMP/host" tests/host || rc=$?
fi
exit $rc
