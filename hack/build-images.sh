#!/usr/bin/env bash
# Build the local images as docker-save tarballs (no registry, no daemon) and, when the
# cluster's containerd is running, import them into it.
#   pause                     the pod sandbox image the kubelet needs
#   kubehands/agent-server    the sandbox images: openhands-agent-server from PyPI, one per release in
#                             AGENT_SERVER_VERSIONS (hack/lib/common.sh), each from its pins; uid 10001
#   kubehands/kubehands       the project's own image (operator and gateway)
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$ROOT/hack/lib/images.sh"
trap kh::images::_umount_chroot EXIT

usage() { echo "usage: $0 [all|pause|agent-server|kubehands|import]" >&2; exit 2; }
what=${1:-all}

case $what in
  all) kh::images::build_pause; kh::images::build_agent_servers; kh::images::build_kubehands ;;
  pause) kh::images::build_pause ;;
  agent-server) kh::images::build_agent_servers ;;
  kubehands) kh::images::build_kubehands ;;
  import) ;;
  *) usage ;;
esac
if [[ -S $KUBEHANDS_STATE/containerd.sock ]]; then
  kh::images::import_all
else
  kh::log "cluster not running: images will be imported by 'make cluster'"
fi
