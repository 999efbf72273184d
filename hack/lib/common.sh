# Shared helpers for hack/ scripts. Source it; do not run it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export ROOT

# Everything built once and reused across runs lives outside the repository.
KUBEHANDS_CACHE="${KUBEHANDS_CACHE:-${HOME}/.cache/kubehands}"
# Everything a running cluster owns (certs, etcd data, logs, PIDs) lives here.
KUBEHANDS_STATE="${KUBEHANDS_STATE:-${KUBEHANDS_CACHE}/cluster}"
export KUBEHANDS_CACHE KUBEHANDS_STATE

# Pinned versions. Changing one rebuilds what depends on it.
K8S_VERSION="v1.20.2"
K8S_DEB_SOURCE_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
K8S_ORIG_SHA256="b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc"
# The Go the pinned source is built with: golang-1.19-go of Debian 12, the release the source package comes from.
# hack/install-deps.sh installs it (from bookworm on hosts whose release lacks it, e.g. Debian 13, whose Go 1.24
# this Kubernetes was never built with); hack/build-kubernetes.sh uses nothing else.
K8S_GO_VERSION="1.19"
K8S_GOROOT="${KUBEHANDS_GOROOT:-/usr/lib/go-${K8S_GO_VERSION}}"
# Where bookworm's packages and source packages come from on every host (Debian 12 and 13 alike).
BOOKWORM_MIRROR="${BOOKWORM_MIRROR:-http://deb.debian.org/debian}"
K8S_BIN="${KUBEHANDS_CACHE}/kubernetes-${K8S_VERSION}/bin"
# kubectl of the same version, built with the cluster (hack/build-kubernetes.sh): the one every script uses.
KUBECTL="${K8S_BIN}/kubectl"
# The agent server each supported client launches: the SDK's own release (openhands-sdk/-workspace 1.58.2, the
# default SANDBOX_IMAGE), and the one the OpenHands app 1.11 bundles (openhands-sdk 1.34.0; the app refuses
# events of a newer server). Each is built from hack/pins/agent-server-<version>.txt.
AGENT_SERVER_VERSION="${AGENT_SERVER_VERSION:-1.58.2}"
APP_AGENT_SERVER_VERSION="${APP_AGENT_SERVER_VERSION:-1.34.0}"
AGENT_SERVER_VERSIONS="$AGENT_SERVER_VERSION $APP_AGENT_SERVER_VERSION"

# The Python for the project's venvs: pyenv's newest 3.12, else python3.12, python3.13 or a python3 >= 3.12
# on PATH (Debian 13's is 3.13); prints nothing when there is none.
kh::python() {
  local p
  for p in $(ls -d "$HOME"/.pyenv/versions/3.12.*/bin/python3.12 2>/dev/null | sort -V | tail -1) \
           $(command -v python3.12 python3.13 python3 2>/dev/null); do
    "$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo "$p"; return 0; }
  done
  return 0
}

kh::log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
kh::die() { kh::log "ERROR: $*"; exit 1; }

# kh::private_apt DIR SOURCES_LINE: an apt configuration of its own in DIR, with that one sources.list line and
# its own lists and caches, so the host's apt sources and caches stay untouched. Sets KH_APT_OPTS for apt-get
# and apt-cache. Downloads run as root: the _apt user cannot write under a root-owned cache folder.
kh::private_apt() {
  local dir=$1 line=$2
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  echo "$line" > "$dir/sources.list"
  KH_APT_OPTS=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
               -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o "APT::Sandbox::User=root")
}

# kh::go_release "$(go version)": the Go release it names, e.g. "go version go1.19.8 linux/amd64" -> 1.19;
# nothing (and false) when the text names none.
kh::go_release() {
  [[ $1 =~ ^go\ version\ go([0-9]+)\.([0-9]+)([^0-9]|$) ]] || return 1
  echo "${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
}

# kh::use_go: make $K8S_GOROOT the Go of this script (first on PATH, GOROOT), after checking that it is Go
# $K8S_GO_VERSION; a missing or different Go stops the script and says what to do.
kh::use_go() {
  local go="$K8S_GOROOT/bin/go" fix="run 'make deps' (hack/install-deps.sh), which installs it" out release
  [[ -x $go ]] || kh::die "Go ${K8S_GO_VERSION} not found (no ${go}): ${fix}"
  out=$(GOROOT=$K8S_GOROOT "$go" version 2>&1) || kh::die "${go} version failed (${out}): ${fix}"
  release=$(kh::go_release "$out") || true
  [[ $release == "$K8S_GO_VERSION" ]] || \
    kh::die "Kubernetes ${K8S_VERSION} is built with Go ${K8S_GO_VERSION}, but ${go} is '${out}': ${fix}"
  export GOROOT=$K8S_GOROOT PATH="$K8S_GOROOT/bin:$PATH"
}

# kh::private_dir DIR: DIR, made if missing, readable by its owner only (0700), whatever the umask.
kh::private_dir() {
  mkdir -p "$1"
  chmod 0700 "$1"
}

# kh::private_file FILE...: each file readable by its owner only (0600) before anything is written to it: a new one
# is born so (made under umask 077), an existing one (of an earlier run) is restricted first. The caller then
# writes it (`>` keeps the mode), so a key or a log line is never readable by others, not even for a moment.
kh::private_file() {
  local file
  for file in "$@"; do
    (umask 077 && : >> "$file")
    chmod 0600 "$file"
  done
}

# kh::wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND... : poll until COMMAND succeeds.
kh::wait_for() {
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      kh::log "timed out after ${timeout}s waiting for ${what}"
      return 1
    fi
    sleep 0.5
  done
}

# Stop the local cluster when this script exits, unless it was already running when called: a
# cluster someone started beforehand is left alone, one this run starts never outlives it. A cluster that was
# stopped with its state kept (Ctrl-C on make run) is stopped again keeping it; any other is deleted.
kh::stop_cluster_at_exit_unless_running() {
  KH_CLUSTER_WAS_RUNNING=0 KH_CLUSTER_TEARDOWN=down
  "$ROOT/hack/cluster.sh" status >/dev/null 2>&1 && KH_CLUSTER_WAS_RUNNING=1
  [[ -f $KUBEHANDS_STATE/initialized ]] && KH_CLUSTER_TEARDOWN=stop
  trap '[[ $KH_CLUSTER_WAS_RUNNING == 1 ]] || "$ROOT/hack/cluster.sh" "$KH_CLUSTER_TEARDOWN" >/dev/null 2>&1 || true' EXIT
}
