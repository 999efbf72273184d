#!/usr/bin/env bash
# A kind-based cluster for laptops that have Docker and kind (not used by CI or `make test`).
#   hack/kind-cluster.sh up      create cluster "kubehands", load the local images, install the CRDs
#   hack/kind-cluster.sh down    delete it
# The images must exist as tarballs first (`make images`); kind loads them without a registry.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$ROOT/hack/lib/images.sh"
NAME="${KIND_CLUSTER_NAME:-kubehands}"

command -v kind >/dev/null || kh::die "kind is not installed (https://kind.sigs.k8s.io)"
command -v docker >/dev/null || kh::die "docker is not installed"

case ${1:-} in
  up)
    kind get clusters | grep -qx "$NAME" || kind create cluster --name "$NAME" --wait 120s
    for ref in "$AGENT_SERVER_IMAGE" "$APP_AGENT_SERVER_IMAGE" "$KUBEHANDS_IMAGE"; do
      tarball=$(kh::images::tarball "$ref")
      [[ -f $tarball ]] || kh::die "$tarball missing: run 'make images' first"
      kind load image-archive "$tarball" --name "$NAME"
    done
    # A kubeconfig of this cluster alone (kind >= 0.6 has no `get kubeconfig-path`), kept in the cache.
    kubeconfig="$KUBEHANDS_CACHE/kind-$NAME.kubeconfig"
    mkdir -p "$KUBEHANDS_CACHE"
    (umask 077 && kind get kubeconfig --name "$NAME" > "$kubeconfig")
    kubectl --kubeconfig "$kubeconfig" apply -f "$ROOT/crds/"
    echo "KUBECONFIG=$kubeconfig"
    echo "SANDBOX_IMAGE=$AGENT_SERVER_IMAGE"
    echo "APP_SANDBOX_IMAGE=$APP_AGENT_SERVER_IMAGE"
    ;;
  down) kind delete cluster --name "$NAME" ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
