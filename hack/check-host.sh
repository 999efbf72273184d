#!/usr/bin/env bash
# Snapshot the host state a cluster run may change, or verify it is back to that snapshot.
#   hack/check-host.sh snapshot FILE    hack/check-host.sh verify FILE
set -o errexit -o nounset -o pipefail

state() {
  local k
  for k in kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.conf.all.route_localnet net.ipv4.ip_forward; do
    echo "sysctl $k=$(sysctl -n "$k" 2>/dev/null)"
  done
  # By executable path: pgrep -x cannot match names longer than 15 characters.
  local exe
  for exe in /proc/[0-9]*/exe; do readlink "$exe" 2>/dev/null; done | xargs -r -n1 basename | sort -u \
    | grep -xE 'etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|containerd|containerd-shim-runc-v2' \
    | sed 's/^/process running: /' || true
  ip link show cni0 >/dev/null 2>&1 && echo "link cni0 exists"
  iptables-save 2>/dev/null | grep -oE '^:(KUBE|CNI)-[^ ]+' | sed 's/^/iptables chain /' || true
  awk '$2 ~ /kubehands\/cluster|containerd\/root|\/run\/netns\/cni-|hostpath_pv/ {print "mount " $2}' /proc/self/mounts
  ls -d /sys/fs/cgroup/*/kubepods 2>/dev/null | sed 's/^/cgroup /' || true
  [[ -e /tmp/hostpath_pv ]] && echo "path /tmp/hostpath_pv exists"
  true
}

case ${1:-} in
  snapshot) state > "$2" ;;
  verify)
    if ! diff <(cat "$2") <(state) >&2; then
      echo "host state differs from the snapshot (< before, > now)" >&2
      exit 1
    fi
    echo "host state restored" >&2 ;;
  *) echo "usage: $0 snapshot|verify FILE" >&2; exit 2 ;;
esac
