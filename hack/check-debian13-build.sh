#!/usr/bin/env bash
# Prove that the Kubernetes build works on Debian 13: debootstrap trixie into a folder of its own, copy hack/ in,
# run `hack/install-deps.sh kubernetes` and hack/build-kubernetes.sh (kube-apiserver only) inside it, and check
# that `kube-apiserver --version` says Kubernetes $K8S_VERSION. 13-17 min of CPU time (~10 min on an idle
# 2-core machine, 21-30 min on a busy one). Needs root and debootstrap, and the network only for Debian's mirror
# (plain http: apt checks signatures, so a network that intercepts TLS does not matter). Everything it mounts
# is unmounted and the chroot removed, however it ends.
# Knobs: KUBEHANDS_KEEP_CHROOT=1 keeps the chroot for a look inside (the next run starts afresh), TRIXIE_MIRROR.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

TRIXIE_MIRROR="${TRIXIE_MIRROR:-http://deb.debian.org/debian}"
DIR="$KUBEHANDS_CACHE/debian13-check"
R="$DIR/rootfs"

[[ $(id -u) == 0 ]] || kh::die "needs root (debootstrap, chroot, mounts)"
command -v debootstrap >/dev/null || kh::die "debootstrap is missing: run 'make deps' (hack/install-deps.sh)"
mkdir -p "$DIR"
exec 9> "$DIR/.lock"
flock -n 9 || kh::die "another Debian 13 check is running (lock: $DIR/.lock)"

# Mount points under the chroot, in mount order (a submount after its parent).
mounts_under() { awk -v r="$R" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/self/mounts; }
# PIDs of processes running inside the chroot: only this check starts any there.
chroot_pids() {
  local p
  for p in /proc/[0-9]*; do [[ "$(readlink "$p/root" 2>/dev/null)" == "$R" ]] && echo "${p#/proc/}"; done
  true
}
no_chroot_pids() { [[ -z "$(chroot_pids)" ]]; }
# Long steps run in the background and are waited for: bash runs a signal's trap only once the foreground
# command has ended, but interrupts `wait` at once.
step=""
run() { "$@" & step=$!; wait "$step" || { local rc=$?; step=""; return "$rc"; }; step=""; }

# Stop what still runs in the chroot (a build interrupted by a signal to this script alone), unmount everything
# under it, innermost first (also what an earlier, killed run or debootstrap left), then remove it. It is never
# removed while anything is still mounted in it: rm would reach into the host's /dev.
undo() {
  local pid m
  if [[ -n $step ]]; then kill "$step" 2>/dev/null || true; wait "$step" 2>/dev/null || true; step=""; fi
  for pid in $(chroot_pids); do kill "$pid" 2>/dev/null || true; done
  if ! kh::wait_for "processes in the chroot to exit" 30 no_chroot_pids; then
    for pid in $(chroot_pids); do kill -KILL "$pid" 2>/dev/null || true; done
    kh::wait_for "processes in the chroot to exit after SIGKILL" 10 no_chroot_pids || true
  fi
  for m in $(mounts_under | tac); do umount "$m" 2>/dev/null || umount -l "$m" || true; done
  if [[ -n "$(mounts_under)" ]]; then
    kh::log "ERROR: still mounted under $R (left in place): $(mounts_under | tr '\n' ' ')"
    return 1
  fi
}
cleanup() {
  local rc=$?
  undo || rc=1
  if [[ ${KUBEHANDS_KEEP_CHROOT:-0} == 1 && -z "$(mounts_under)" ]]; then
    kh::log "kept the chroot: chroot $R"
  elif [[ -z "$(mounts_under)" ]]; then
    rm -rf --one-file-system "$R"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The rest of a kept or interrupted earlier run.
undo || kh::die "cannot unmount what an earlier run left under $R"
rm -rf --one-file-system "$R"

kh::log "debootstrap trixie into $R"
run debootstrap --variant=minbase trixie "$R" "$TRIXIE_MIRROR" > "$DIR/debootstrap.log" 2>&1 \
  || { tail -20 "$DIR/debootstrap.log"; kh::die "debootstrap failed (log: $DIR/debootstrap.log)"; }
# Packages never start a daemon in the chroot.
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$R/etc/resolv.conf"
# A fresh proc and sysfs, and the host's /dev as a slave (unmounting it never propagates back to the host). Never
# the host's /sys with its submounts: a running kubelet (libcontainer) then finds the cgroup hierarchies under the
# chroot too, writes its pods' cgroup settings there, and its containers are killed (exit 137) until it restarts.
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount --rbind /dev "$R/dev"; mount --make-rslave "$R/dev"
mkdir -p "$R/kubehands"
cp -a "$ROOT/hack" "$R/kubehands/"

in_chroot() {
  chroot "$R" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 "$@"
}
run in_chroot bash /kubehands/hack/install-deps.sh kubernetes
# One Kubernetes build at a time on this machine: wait for a host build holding its lock (opened read-only).
host_lock="$KUBEHANDS_CACHE/build/kubernetes/.lock"
if [[ -f $host_lock ]]; then
  exec 8< "$host_lock"
  flock -n 8 || { kh::log "waiting for the Kubernetes build running on this host"; run flock 8; }
fi
run in_chroot KUBEHANDS_K8S_COMPONENTS=kube-apiserver bash /kubehands/hack/build-kubernetes.sh
exec 8<&-
version=$(in_chroot bash -c 'source /kubehands/hack/lib/common.sh && "$K8S_BIN/kube-apiserver" --version')
[[ $version == "Kubernetes ${K8S_VERSION}" ]] || \
  kh::die "kube-apiserver --version says '${version}', not Kubernetes ${K8S_VERSION}"
kh::log "Debian 13 build check passed in $((SECONDS / 60)) min $((SECONDS % 60)) s:" \
  "kube-apiserver --version: ${version}"
