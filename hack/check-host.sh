#!/usr/bin/env bash
# Snapshot the host state a cluster run may change, or verify it is back to that snapshot.
#   hack/check-host.sh snapshot FILE    hack/check-host.sh verify FILE
# verify also fails on new top-level entries of /tmp that are still there (a run must leave nothing in /tmp);
# entries that disappeared meanwhile are not its business.
# Knobs: KUBEHANDS_CHECK_TMP (default /tmp: the folder checked), KUBEHANDS_CHECK_TMP_IGNORE (more
# space-separated glob patterns of entries other programs on this machine create, e.g. 'tmux-*').
set -o errexit -o nounset -o pipefail

TMP_ROOT="${KUBEHANDS_CHECK_TMP:-/tmp}"
# What the OS creates there by itself: systemd's PrivateTmp folders and the X11/ICE socket folders.
TMP_IGNORE=('systemd-private-*' '.X11-unix' '.ICE-unix' '.XIM-unix' '.font-unix' '.Test-unix' 'snap-private-tmp')
read -r -a extra_ignore <<< "${KUBEHANDS_CHECK_TMP_IGNORE:-}"
TMP_IGNORE+=("${extra_ignore[@]}")

state() {
  local k
  for k in kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.conf.all.route_localnet net.ipv4.ip_forward; do
    echo "sysctl $k=$(sysctl -n "$k" 2>/dev/null)"
  done
  # By executable path: pgrep -x cannot match names longer than 15 characters.
  local exe
  for exe in /proc/[0-9]*/exe; do readlink "$exe" 2>/dev/null; done | xargs -r -n1 basename | sort -u \
    | grep -xE 'etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy|containerd|containerd-shim-runc-v2|dnsmasq' \
    | sed 's/^/process running: /' || true
  ip link show cni0 >/dev/null 2>&1 && echo "link cni0 exists"
  iptables-save 2>/dev/null | grep -oE '^:(KUBE|CNI|KUBEHANDS)-[^ ]+' | sed 's/^/iptables chain /' || true
  awk '$2 ~ /kubehands\/cluster|containerd\/root|\/run\/netns\/cni-|hostpath_pv/ {print "mount " $2}' /proc/self/mounts
  ls -d /sys/fs/cgroup/*/kubepods 2>/dev/null | sed 's/^/cgroup /' || true
  [[ -e /tmp/hostpath_pv ]] && echo "path /tmp/hostpath_pv exists"
  true
}

# One "tmp NAME" line per top-level entry of $TMP_ROOT (hidden ones too), sorted.
tmp_entries() {
  local path name pattern
  for path in "$TMP_ROOT"/* "$TMP_ROOT"/.[!.]* "$TMP_ROOT"/..?*; do
    [[ -e $path || -L $path ]] || continue   # an unmatched glob stays literal
    name=${path##*/}
    for pattern in "${TMP_IGNORE[@]}"; do
      # shellcheck disable=SC2053  # a glob match is the point
      [[ $name == $pattern ]] && continue 2
    done
    printf 'tmp %q\n' "$name"
  done | LC_ALL=C sort
}

case ${1:-} in
  snapshot) { state; tmp_entries; } > "$2" ;;
  verify)
    rc=0
    if ! diff <(grep -v '^tmp ' "$2") <(state) >&2; then
      echo "host state differs from the snapshot (< before, > now)" >&2
      rc=1
    fi
    left=$(LC_ALL=C comm -13 <(grep '^tmp ' "$2" | LC_ALL=C sort) <(tmp_entries) | sed "s|^tmp |$TMP_ROOT/|")
    if [[ -n $left ]]; then
      echo "left in $TMP_ROOT since the snapshot:" >&2
      echo "$left" | sed 's/^/  /' >&2
      rc=1
    fi
    [[ $rc == 0 ]] && echo "host state restored" >&2
    exit $rc ;;
  *) echo "usage: $0 snapshot|verify FILE" >&2; exit 2 ;;
esac
