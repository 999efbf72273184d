#!/usr/bin/env bash
# Install the Debian packages the local cluster and image builds need (idempotent).
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PACKAGES=(
  etcd-server etcd-client                       # etcd 3.4 for kube-apiserver 1.20
  golang-go rsync jq golang-github-modern-go-reflect2-dev   # building Kubernetes from source
  containerd runc containernetworking-plugins   # the kubelet's container runtime and CNI
  iptables ipset conntrack                      # kube-proxy and kubelet (ipset: kube-proxy --cleanup)
  debootstrap                                   # sandbox image rootfs
  openssl ca-certificates gcc libc6-dev         # certs; the static pause binary
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if (( ${#missing[@]} == 0 )); then
  kh::log "Debian packages present"
  exit 0
fi

kh::log "installing: ${missing[*]}"
# There is no init system here, but never let a package start a system-wide daemon
# (containerd would otherwise try): the cluster runs its own instances.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
fi
trap '[[ $created_policy == 1 ]] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
kh::log "Debian packages installed"
