#!/usr/bin/env bash
# Install the Debian packages the local cluster and image builds need (idempotent), on Debian 12 or 13.
#   hack/install-deps.sh              everything
#   hack/install-deps.sh kubernetes   only what hack/build-kubernetes.sh needs (hack/check-debian13-build.sh)
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Go $K8S_GO_VERSION, the one the pinned Kubernetes source is built with (not golang-go: Go 1.24 on Debian 13).
GO_PACKAGES=("golang-${K8S_GO_VERSION}-go" "golang-${K8S_GO_VERSION}-src")
KUBERNETES_BUILD=(
  make rsync jq golang-github-modern-go-reflect2-dev  # building Kubernetes from source (reflect2: 1.0.2 in 12 and 13)
)
PACKAGES=(
  etcd-server etcd-client                       # etcd 3.4 for kube-apiserver 1.20 (Debian 13 has 3.5)
  containerd runc containernetworking-plugins   # the kubelet's container runtime and CNI
  iptables ipset conntrack                      # kube-proxy and kubelet (ipset: kube-proxy --cleanup)
  dnsmasq-base                                  # the pods' resolver (hack/lib/egress.sh)
  debootstrap                                   # sandbox image rootfs
  openssl ca-certificates gcc libc6-dev         # certs; the static pause binary
)
case ${1:-all} in
  all) PACKAGES+=("${KUBERNETES_BUILD[@]}" "${GO_PACKAGES[@]}") ;;
  kubernetes) PACKAGES=("${KUBERNETES_BUILD[@]}" "${GO_PACKAGES[@]}") ;;
  *) kh::die "usage: $0 [all|kubernetes]" ;;
esac

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if (( ${#missing[@]} == 0 )); then
  kh::log "Debian packages present"
  exit 0
fi

# There is no init system here, but never let a package start a system-wide daemon
# (containerd would otherwise try): the cluster runs its own instances.
policy=/usr/sbin/policy-rc.d
created_policy=0
debs=""
cleanup() {
  [[ $created_policy == 1 ]] && rm -f "$policy"
  [[ -z $debs ]] || rm -rf "$debs"
}
trap cleanup EXIT
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq

# Debian 13 has no Go 1.19: take bookworm's packages, downloaded (and verified) by apt through a private
# configuration, then installed as files by the host's apt, which takes their dependencies (libc6) from the
# host's own sources. Neither conflicts with a package of trixie (Go 1.19 lives in /usr/lib/go-1.19 alone).
offered() { [[ "$(apt-cache policy "$1" | awk '/Candidate:/ {print $2}')" =~ ^[^\(] ]]; }
go_missing=() rest=()
for p in "${missing[@]}"; do
  if [[ " ${GO_PACKAGES[*]} " == *" $p "* ]] && ! offered "$p"; then go_missing+=("$p"); else rest+=("$p"); fi
done
if (( ${#go_missing[@]} > 0 )); then
  kh::log "this release has no ${go_missing[*]}: downloading from bookworm"
  mkdir -p "$KUBEHANDS_CACHE"
  debs=$(mktemp -d "$KUBEHANDS_CACHE/install-deps.XXXXXX")
  kh::private_apt "$debs/apt" "deb ${BOOKWORM_MIRROR} bookworm main"
  apt-get "${KH_APT_OPTS[@]}" update -qq
  (cd "$debs" && apt-get "${KH_APT_OPTS[@]}" download -qq "${go_missing[@]}")
  missing=("${rest[@]}" "$debs"/*.deb)
fi

kh::log "installing: ${missing[*]##*/}"
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
kh::log "Debian packages installed"
