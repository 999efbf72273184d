#!/usr/bin/env bash
# `make run`: the local cluster (started if needed), the CRDs, the operator and the gateway,
# then the environment that points OpenHands at them, one NAME=value per line. Ctrl-C (SIGINT to the
# foreground process group) or SIGTERM, at any point, stops the operator and gateway it started and,
# if this run started the cluster, the cluster too (restoring the host) but never deletes its state: the next
# run brings back the same API key, sandboxes and workspaces (make cluster-reset deletes them); tests/host/
# checks this.
#
# It also declares two warm pools (docs/pools.md), so each client's first sandboxes start warm: one for the /start
# the OpenHands app server sends by default with AGENT_SERVER_IMAGE_REPOSITORY/TAG as printed (the agent server of
# the app's bundled SDK), one for the /start the SDK's APIRemoteWorkspace sends for the printed SANDBOX_IMAGE.
#
# Knobs: KUBEHANDS_GATEWAY_PORT (default 8080), KUBEHANDS_NAMESPACE (default kubehands-sandboxes),
#        KUBEHANDS_KEY_NAME (default dev; its key is created once and kept in the cluster state dir),
#        KUBEHANDS_POOL_SIZE (default 1: dormant agent servers in the app's warm pool; 0 deletes the pool),
#        KUBEHANDS_SDK_POOL_SIZE (default 1: the same for the SDK's pool),
#        KUBEHANDS_SANDBOX_EGRESS (default internet: what sandboxes may reach; none, host or CIDRs, and the other
#        KUBEHANDS_SANDBOX_* settings of hack/lib/egress.sh; a cluster that was running gets its own back at exit).
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$ROOT"

PORT="${KUBEHANDS_GATEWAY_PORT:-8080}"
NAMESPACE="${KUBEHANDS_NAMESPACE:-kubehands-sandboxes}"
KEY_NAME="${KUBEHANDS_KEY_NAME:-dev}"
POOL_SIZE="${KUBEHANDS_POOL_SIZE:-1}"
SDK_POOL_SIZE="${KUBEHANDS_SDK_POOL_SIZE:-1}"
EGRESS="${KUBEHANDS_SANDBOX_EGRESS:-internet}"
BIN="$ROOT/.venv/bin"
RUN_DIR="$KUBEHANDS_STATE/run"
[[ $POOL_SIZE =~ ^[0-9]+$ ]] || kh::die "KUBEHANDS_POOL_SIZE must be a number (0 disables the warm pool), got '$POOL_SIZE'"
[[ $SDK_POOL_SIZE =~ ^[0-9]+$ ]] \
  || kh::die "KUBEHANDS_SDK_POOL_SIZE must be a number (0 disables the warm pool), got '$SDK_POOL_SIZE'"

# Whether the cluster was running before: the Makefile's `run` target must not start it first.
was_running=0
hack/cluster.sh status >/dev/null 2>&1 && was_running=1

pids=()
previous_egress=""   # the egress settings of a cluster that was running, restored at exit
alive() { grep -qs '^State:[[:space:]]*[^Z]' "/proc/$1/status"; }   # running, not a zombie awaiting wait
cleanup() {
  # A second Ctrl-C must not cut the teardown short; the commands below inherit the ignore.
  trap '' INT TERM
  local pid deadline=$((SECONDS + 20))
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    while alive "$pid" && (( SECONDS < deadline )); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ $was_running == 0 ]]; then
    kh::log "stopping the cluster this run started"
    hack/cluster.sh stop
  elif [[ -n $previous_egress ]]; then
    env $previous_egress hack/cluster.sh egress >/dev/null || true
  fi
}
# Installed before anything starts: a signal during the cluster's start still stops it.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cluster_env=$(hack/cluster.sh up)
eval "export $(echo "$cluster_env" | grep -E '^(KUBECONFIG|SANDBOX_IMAGE|APP_SANDBOX_IMAGE)=' | tr '\n' ' ')"
[[ $was_running == 1 ]] && previous_egress=$(grep -E '^KUBEHANDS_SANDBOX_[A-Z_]+=[0-9A-Za-z.,/]*$' \
  "$KUBEHANDS_STATE/egress.env" 2>/dev/null | tr '\n' ' ' || true)
KUBEHANDS_SANDBOX_EGRESS=$EGRESS hack/cluster.sh egress >/dev/null
hack/build-images.sh import >/dev/null

# The body of the /start the OpenHands app server (1.11) sends by default, with AGENT_SERVER_IMAGE_REPOSITORY
# and AGENT_SERVER_IMAGE_TAG naming $SANDBOX_IMAGE (docs/runtime-api.md §4.2). The app's warm pool is derived from
# it (for $APP_SANDBOX_IMAGE) by the gateway's own code (hack/pool-manifest.py); tests/unit/test_chart.py reads it
# from here.
app_start_body() {
  cat <<EOF
{"image": "$SANDBOX_IMAGE",
 "command": ["/usr/local/bin/openhands-agent-server", "--port", "60000"],
 "working_dir": "/workspace",
 "environment": {"OPENVSCODE_SERVER_ROOT": "/openhands/.openvscode-server", "LOG_JSON": "true",
   "OH_ENABLE_VNC": "0", "OH_CONVERSATIONS_PATH": "/workspace/conversations",
   "OH_BASH_EVENTS_DIR": "/workspace/bash_events", "OH_VSCODE_PORT": "60001",
   "WORKER_1": "12000", "WORKER_2": "12001"},
 "session_id": "pool-template", "resource_factor": 1,
 "run_as_user": 10001, "run_as_group": 10001, "fs_group": 10001}
EOF
}

# The body of the /start the SDK's APIRemoteWorkspace (openhands-workspace 1.58.2) sends with its defaults for
# server_image=$SANDBOX_IMAGE (docs/runtime-api.md §4.1); the SDK's warm pool is derived from it.
sdk_start_body() {
  cat <<EOF
{"image": "$SANDBOX_IMAGE",
 "command": "/usr/local/bin/openhands-agent-server --port 60000",
 "working_dir": "/", "environment": {},
 "session_id": "pool-template",
 "run_as_user": 10001, "fs_group": 10001,
 "image_pull_policy": "IfNotPresent", "runtime_class": "sysbox-runc"}
EOF
}

# declare_pool NAME SIZE IMAGE BODY_FUNCTION: create or replace the pool (its members boot dormant), or delete it.
declare_pool() {
  local name=$1 size=$2 image=$3 body=$4
  if (( size > 0 )); then
    SANDBOX_IMAGE=$image "$body" | "$BIN/python" hack/pool-manifest.py --name "$name" --size "$size" --apply
    kh::log "warm pool $name: $size agent servers of $image warming ($KUBECTL get sbxpool -n $NAMESPACE)"
  else
    "$BIN/python" hack/pool-manifest.py --name "$name" --delete
    kh::log "warm pool $name disabled: its client's sandboxes start cold"
  fi
}

kh::private_dir "$RUN_DIR"   # its logs and the API key file, each 0600 too (kh::private_file)
"$BIN/python" -m kubehands.crd.install --kubeconfig "$KUBECONFIG" crds/*.yaml
# The scripts' kubectl keeps its discovery cache in the state folder: a user's own cache (~/.kube/cache) is then
# never filled before the CRDs exist, which would hide `kubectl get sbx` for its 10-minute lifetime.
"$KUBECTL" --kubeconfig "$KUBECONFIG" --cache-dir "$KUBEHANDS_STATE/kubectl-cache" create namespace "$NAMESPACE" \
  --dry-run=client -o yaml | "$KUBECTL" --kubeconfig "$KUBECONFIG" --cache-dir "$KUBEHANDS_STATE/kubectl-cache" apply -f - >/dev/null

export KUBEHANDS_NAMESPACE="$NAMESPACE" KUBEHANDS_NAMESPACES="$NAMESPACE" KUBEHANDS_KUBECONFIG="$KUBECONFIG"
export KUBEHANDS_PUBLIC_URL="http://127.0.0.1:${PORT}"
set -o allexport; source hack/run.env; set +o allexport  # port routing mode: every client works, no DNS needed

# Its metrics on this machine only (the operator's default binds every address, for a pod). It sees the gateway's
# settings (the same environment): a pool no /start can match gets no members.
kh::private_file "$RUN_DIR/operator.log"
KUBEHANDS_METRICS_HOST=127.0.0.1 KUBEHANDS_POOL_MATCH_CHECK=true "$BIN/kubehands" operator > "$RUN_DIR/operator.log" 2>&1 &
pids+=($!)
kh::log "operator started (log: $RUN_DIR/operator.log; metrics: http://127.0.0.1:${KUBEHANDS_METRICS_PORT:-8090}/metrics)"

# The warm pools, with the gateway's settings (the KUBEHANDS_* exported above), so that they match each client's
# /start (KUBEHANDS_POOL_SIZE / KUBEHANDS_SDK_POOL_SIZE=0 disable them).
declare_pool openhands-app "$POOL_SIZE" "$APP_SANDBOX_IMAGE" app_start_body
declare_pool openhands-sdk "$SDK_POOL_SIZE" "$SANDBOX_IMAGE" sdk_start_body

# One key per cluster, created on first run; the raw key is only ever shown at creation.
key_file="$RUN_DIR/api-key-$KEY_NAME"
kh::private_file "$key_file"   # before the key is written to it (and a file of an earlier run made private)
if [[ ! -s $key_file ]]; then
  "$BIN/kubehands" keys revoke "$KEY_NAME" >/dev/null 2>&1 || true
  "$BIN/kubehands" keys create "$KEY_NAME" > "$key_file"
fi

kh::private_file "$RUN_DIR/gateway.log"
# Its metrics on their own port, on this machine only (KUBEHANDS_GATEWAY_METRICS_PORT, default 8091; the operator's
# is 8090).
KUBEHANDS_GATEWAY_METRICS_HOST=127.0.0.1 "$BIN/kubehands" gateway --host 127.0.0.1 --port "$PORT" \
  > "$RUN_DIR/gateway.log" 2>&1 &
pids+=($!)
kh::wait_for "gateway /health" 30 curl -sf "http://127.0.0.1:${PORT}/health" \
  || { tail -20 "$RUN_DIR/gateway.log" >&2; kh::die "gateway did not start; see $RUN_DIR/gateway.log"; }
kh::log "gateway listening on http://127.0.0.1:${PORT} (log: $RUN_DIR/gateway.log;" \
  "metrics: http://127.0.0.1:${KUBEHANDS_GATEWAY_METRICS_PORT:-8091}/metrics); Ctrl-C stops everything"
kh::log "kubectl for this cluster (built with it): $KUBECTL --kubeconfig $KUBECONFIG"

echo "RUNTIME=remote"
echo "SANDBOX_REMOTE_RUNTIME_API_URL=http://127.0.0.1:${PORT}"
echo "SANDBOX_API_KEY=$(tail -1 "$key_file")"
echo "KUBECONFIG=$KUBECONFIG"
echo "SANDBOX_IMAGE=$SANDBOX_IMAGE"
echo "AGENT_SERVER_IMAGE_REPOSITORY=${APP_SANDBOX_IMAGE%:*}"
echo "AGENT_SERVER_IMAGE_TAG=${APP_SANDBOX_IMAGE##*:}"

# Stay in the foreground until Ctrl-C or until a component dies.
wait -n "${pids[@]}"
kh::log "a component exited; stopping"
exit 1
