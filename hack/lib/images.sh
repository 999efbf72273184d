# Image builds without a registry. Sourced by hack/build-images.sh and hack/cluster.sh.
# shellcheck shell=bash

IMAGES_DIR="${KUBEHANDS_CACHE}/images"
PAUSE_IMAGE="registry.k8s.io/pause:3.10"
AGENT_SERVER_IMAGE="kubehands/agent-server:${AGENT_SERVER_VERSION}"          # the SDK's (SANDBOX_IMAGE)
APP_AGENT_SERVER_IMAGE="kubehands/agent-server:${APP_AGENT_SERVER_VERSION}"  # the OpenHands app's
KUBEHANDS_VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)"
KUBEHANDS_IMAGE="kubehands/kubehands:${KUBEHANDS_VERSION}"
TRIXIE_MIRROR="${TRIXIE_MIRROR:-http://deb.debian.org/debian}"
SANDBOX_UID=10001

kh::images::tarball() { echo "$IMAGES_DIR/$(echo "$1" | tr '/:' '__').tar"; }

kh::images::build_pause() {
  local out; out=$(kh::images::tarball "$PAUSE_IMAGE")
  [[ -f $out ]] && return 0
  kh::log "building $PAUSE_IMAGE"
  local tmp; tmp=$(mktemp -d); mkdir -p "$tmp/rootfs" "$IMAGES_DIR"
  gcc -static -O2 -o "$tmp/rootfs/pause" "$ROOT/hack/images/pause.c"
  python3 "$ROOT/hack/mkimage.py" "$tmp/rootfs" "$PAUSE_IMAGE" "$out" --entrypoint '["/pause"]' --user 65535:65535
  rm -rf "$tmp"
}

# chroot helpers: mounts are always undone, even when the build fails.
_kh_chroot_mounts=()
kh::images::_mount_chroot() {
  local r=$1
  mount -t proc proc "$r/proc"; _kh_chroot_mounts+=("$r/proc")
  mount --rbind /dev "$r/dev"; mount --make-rslave "$r/dev"; _kh_chroot_mounts+=("$r/dev")
  mount -t sysfs sys "$r/sys"; _kh_chroot_mounts+=("$r/sys")
  cp /etc/resolv.conf "$r/etc/resolv.conf"
  # The network here may intercept TLS with its own CA: give pip the host bundle for the build only.
  cp /etc/ssl/certs/ca-certificates.crt "$r/tmp/build-ca.crt"
}
kh::images::_umount_chroot() {
  local m
  for m in "${_kh_chroot_mounts[@]}"; do umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  _kh_chroot_mounts=()
}
kh::images::_clean_rootfs() {
  local r=$1
  rm -rf "$r/tmp/build-ca.crt" "$r/root/.cache" "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* \
    "$r/etc/resolv.conf" "$r"/tmp/*.whl
  : > "$r/etc/resolv.conf"
}

# Debian trixie (Python 3.13) minbase shared by both Python images; built once.
kh::images::base_rootfs() {
  local base="$IMAGES_DIR/base-trixie"
  if [[ ! -f $base/.complete ]]; then
    kh::log "debootstrap trixie minbase (~40 s)"
    rm -rf "$base"; mkdir -p "$IMAGES_DIR"
    debootstrap --variant=minbase \
      --include=python3,python3-venv,tmux,git,bash,ca-certificates,curl,procps \
      trixie "$base" "$TRIXIE_MIRROR" > "$IMAGES_DIR/debootstrap.log" 2>&1 \
      || { tail -20 "$IMAGES_DIR/debootstrap.log"; kh::die "debootstrap failed"; }
    rm -rf "$base"/var/cache/apt/archives/*.deb "$base"/var/lib/apt/lists/*
    # The sandbox user, as the upstream agent-server image has it (uid/gid 10001).
    chroot "$base" groupadd -g "$SANDBOX_UID" openhands
    chroot "$base" useradd -u "$SANDBOX_UID" -g "$SANDBOX_UID" -m -d /home/openhands -s /bin/bash openhands
    touch "$base/.complete"
  fi
  echo "$base"
}

# kh::images::_pip_into ROOTFS VENV PIP_ARGS... : create a venv in the chroot and pip install.
kh::images::_pip_into() {
  local r=$1 venv=$2; shift 2
  kh::images::_mount_chroot "$r"   # callers trap kh::images::_umount_chroot on EXIT
  chroot "$r" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root PIP_CERT=/tmp/build-ca.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
    sh -c "python3 -m venv $venv && $venv/bin/pip install --no-cache-dir -q $*"
  kh::images::_umount_chroot
}

# What the agent server needs from Debian beyond the shared base: the OpenHands app's agent always carries the
# browser tool, which refuses to start (and with it every conversation that runs) without a Chromium on PATH, as
# the upstream agent-server image has one.
AGENT_SERVER_DEBIAN_PACKAGES=(chromium)

# kh::images::_apt_into ROOTFS PACKAGE... : install Debian packages into the chroot (no recommends), then drop
# apt's lists and downloads.
kh::images::_apt_into() {
  local r=$1; shift
  (( $# > 0 )) || return 0
  kh::images::_mount_chroot "$r"   # callers trap kh::images::_umount_chroot on EXIT
  chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive \
    sh -c "apt-get -o Acquire::https::CAInfo=/tmp/build-ca.crt update -qq \
           && apt-get install -y -qq --no-install-recommends $* >/dev/null" \
    || { kh::images::_umount_chroot; kh::die "apt-get install $* in the image failed"; }
  kh::images::_umount_chroot
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
}

# kh::images::build_agent_server [VERSION] : the sandbox image of one agent-server release, installed from its
# pinned set (hack/pins/agent-server-VERSION.txt, written by hack/pin-openhands.py) and nothing else, so a
# dependency released later cannot change what the image runs. Rebuilt when the pins change.
kh::images::build_agent_server() {
  local version=${1:-$AGENT_SERVER_VERSION}
  local image="kubehands/agent-server:$version"
  local pins="$ROOT/hack/pins/agent-server-$version.txt"
  [[ -f $pins ]] || kh::die "no pinned dependencies for agent-server $version: run hack/pin-openhands.py agent-server $version"
  local out; out=$(kh::images::tarball "$image")
  local hash; hash=$( (cat "$pins"; echo "${AGENT_SERVER_DEBIAN_PACKAGES[*]}") | sha256sum | cut -c1-16)
  [[ -f $out && "$(cat "$out.pins-hash" 2>/dev/null)" == "$hash" ]] && return 0
  local base; base=$(kh::images::base_rootfs)
  local r="$IMAGES_DIR/agent-server-$version-rootfs"
  kh::log "building $image (pip install -r hack/pins/agent-server-$version.txt, ~2 min)"
  rm -rf "$r"; cp -a "$base" "$r"
  kh::images::_apt_into "$r" "${AGENT_SERVER_DEBIAN_PACKAGES[@]}"
  cp "$pins" "$r/tmp/pins.txt"
  # --no-deps: the pins are the whole set; `pip check` proves it is complete and consistent.
  kh::images::_pip_into "$r" /opt/agent-venv --no-deps -r /tmp/pins.txt
  chroot "$r" /opt/agent-venv/bin/pip check >/dev/null || kh::die "hack/pins/agent-server-$version.txt is incomplete"
  # OpenHands clients launch /usr/local/bin/openhands-agent-server; the wheel installs `agent-server`.
  ln -sf /opt/agent-venv/bin/agent-server "$r/usr/local/bin/openhands-agent-server"
  install -d -m 0775 -o "$SANDBOX_UID" -g "$SANDBOX_UID" "$r/workspace"
  rm -f "$r/tmp/pins.txt"
  kh::images::_clean_rootfs "$r"
  python3 "$ROOT/hack/mkimage.py" "$r" "$image" "$out" \
    --entrypoint '["/usr/local/bin/openhands-agent-server"]' --cmd '["--port", "60000"]' \
    --env PATH=/opt/agent-venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --env LITELLM_LOCAL_MODEL_COST_MAP=True --env HOME=/home/openhands \
    --workdir / --user "$SANDBOX_UID:$SANDBOX_UID" --port 60000
  echo "$hash" > "$out.pins-hash"
  rm -rf "$r"
  kh::log "built $image -> $out"
}

# Every agent-server release the clients this project supports launch (hack/lib/common.sh).
kh::images::build_agent_servers() {
  local version
  for version in $AGENT_SERVER_VERSIONS; do kh::images::build_agent_server "$version"; done
}

# The project's own image is rebuilt whenever its sources change.
kh::images::source_hash() {
  (cd "$ROOT" && cat pyproject.toml && find operator api -type f -name '*.py' -print0 | sort -z | xargs -0 cat) \
    | sha256sum | cut -c1-16
}

kh::images::build_kubehands() {
  local out; out=$(kh::images::tarball "$KUBEHANDS_IMAGE")
  local hash; hash=$(kh::images::source_hash)
  [[ -f $out && "$(cat "$out.source-hash" 2>/dev/null)" == "$hash" ]] && return 0
  local base; base=$(kh::images::base_rootfs)
  local r="$IMAGES_DIR/kubehands-rootfs"
  kh::log "building $KUBEHANDS_IMAGE"
  rm -rf "$r"; cp -a "$base" "$r"
  local dist; dist=$(mktemp -d)
  python3 -m pip wheel -q --no-deps --ignore-requires-python -w "$dist" "$ROOT" >/dev/null
  cp "$dist"/kubehands-*.whl "$r/tmp/"; rm -rf "$dist"
  kh::images::_pip_into "$r" /opt/kubehands "/tmp/kubehands-*.whl"
  ln -sf /opt/kubehands/bin/kubehands "$r/usr/local/bin/kubehands"
  kh::images::_clean_rootfs "$r"
  python3 "$ROOT/hack/mkimage.py" "$r" "$KUBEHANDS_IMAGE" "$out" \
    --entrypoint '["/usr/local/bin/kubehands"]' \
    --env PATH=/opt/kubehands/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --env PYTHONUNBUFFERED=1 --workdir / --user "$SANDBOX_UID:$SANDBOX_UID" --port 8080
  echo "$hash" > "$out.source-hash"
  rm -rf "$r"
  kh::log "built $KUBEHANDS_IMAGE -> $out"
}

kh::images::ctr() { ctr --address "$KUBEHANDS_STATE/containerd.sock" --namespace k8s.io "$@"; }

# Import each built tarball unless containerd already holds that exact build.
kh::images::import_all() {
  local ref out stamp
  local version refs=("$PAUSE_IMAGE" "$KUBEHANDS_IMAGE")
  for version in $AGENT_SERVER_VERSIONS; do refs+=("kubehands/agent-server:$version"); done
  for ref in "${refs[@]}"; do
    out=$(kh::images::tarball "$ref")
    [[ -f $out ]] || continue
    stamp="$KUBEHANDS_CACHE/containerd/imported-$(basename "$out").stamp"
    if [[ "$(cat "$stamp" 2>/dev/null)" == "$(stat -c %Y "$out")" ]] && \
       kh::images::ctr images ls -q | grep -qx "docker.io/$ref\|$ref"; then
      continue
    fi
    kh::log "importing $ref into containerd"
    kh::images::ctr images import --no-unpack=false "$out" >/dev/null
    stat -c %Y "$out" > "$stamp"
  done
}
