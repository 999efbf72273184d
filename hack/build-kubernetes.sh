#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl
# from Debian's `kubernetes` source package into $K8S_BIN (once; later runs reuse it).
# Only the binaries the cache lacks are built (a cache from before kubectl was added gets just kubectl),
# and each is renamed into place atomically: a running cluster's binaries are never rewritten or removed.
# The build uses Go $K8S_GO_VERSION from $K8S_GOROOT only (hack/install-deps.sh installs it) and checks it first.
# KUBEHANDS_K8S_COMPONENTS (space-separated) builds fewer, e.g. "kube-apiserver" (hack/check-debian13-build.sh).
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ALL_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
read -r -a COMPONENTS <<< "${KUBEHANDS_K8S_COMPONENTS:-${ALL_COMPONENTS[*]}}"
for c in "${COMPONENTS[@]}"; do
  [[ " ${ALL_COMPONENTS[*]} " == *" $c "* ]] || kh::die "unknown component '$c' (known: ${ALL_COMPONENTS[*]})"
done

lacks_some() {  # sets `missing`; true when the cache lacks any binary
  missing=(); for c in "${COMPONENTS[@]}"; do [[ -x $K8S_BIN/$c ]] || missing+=("$c"); done
  (( ${#missing[@]} > 0 ))
}
cached() { kh::log "kubernetes ${K8S_VERSION} binaries cached in ${K8S_BIN}"; exit 0; }
lacks_some || cached
kh::use_go

work="${KUBEHANDS_CACHE}/build/kubernetes"
mkdir -p "$work"
cd "$work"
# One build at a time; a second caller waits, then builds only what the first did not.
exec 9> "$work/.lock"
flock 9
lacks_some || cached

# A private apt configuration with a deb-src entry, so the host's sources stay untouched.
kh::private_apt "$work/apt" "deb-src ${BOOKWORM_MIRROR} bookworm main"
apt_opts=("${KH_APT_OPTS[@]}" -o "APT::Get::Only-Source=true")
orig="kubernetes_${K8S_DEB_SOURCE_VERSION%-*}.orig.tar.gz"
if [[ ! -f $orig ]]; then
  kh::log "downloading Debian source package kubernetes=${K8S_DEB_SOURCE_VERSION}"
  apt-get "${apt_opts[@]}" update -qq
  apt-get "${apt_opts[@]}" source --download-only -qq "kubernetes=${K8S_DEB_SOURCE_VERSION}"
fi
echo "${K8S_ORIG_SHA256}  ${orig}" | sha256sum --check --quiet || kh::die "checksum mismatch for ${orig}"

src="$work/src"
if [[ ! -d $src ]]; then
  kh::log "unpacking ${orig}"
  rm -rf "$src.tmp"; mkdir -p "$src.tmp"
  tar -xzf "$orig" -C "$src.tmp" --strip-components=1
  # The vendored reflect2 1.0.1 crashes under Go >= 1.18 (fault in UnsafeMapType.UnsafeIterate);
  # Debian's reflect2 1.0.2 is a drop-in fix.
  r2="$src.tmp/vendor/github.com/modern-go/reflect2"
  [[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]] || \
    kh::die "golang-github-modern-go-reflect2-dev is missing: run 'make deps' (hack/install-deps.sh)"
  rm -f "$r2"/*.go "$r2"/*.s
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$r2"/
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$r2"/ 2>/dev/null || true
  rm -f "$r2"/*_test.go "$r2"/go_above_17.go "$r2"/go_below_17.go "$r2"/go_below_19.go
  mv "$src.tmp" "$src"
fi

kh::log "building ${missing[*]} with $(go version) (takes ~5 min cold on 2 cores)"
whats=(); for c in "${missing[@]}"; do whats+=("cmd/$c"); done
(
  cd "$src"
  export HOME="$work/home" GOPATH="$work/gopath" GOCACHE="$work/gocache" GOFLAGS=-mod=vendor
  # GOPROXY=off: everything comes from vendor/; the build never reaches the network.
  export GOPROXY=off CGO_ENABLED=0 KUBE_GIT_VERSION="${K8S_VERSION}" KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean
  mkdir -p "$HOME"
  make WHAT="${whats[*]}" > "$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
)
mkdir -p "$K8S_BIN"
for c in "${missing[@]}"; do
  install -m 0755 "$src/_output/local/bin/linux/amd64/$c" "$K8S_BIN/.$c.tmp"
  mv -f "$K8S_BIN/.$c.tmp" "$K8S_BIN/$c"
done
# The source tree and Go caches are 2+ GB and only needed for a rebuild.
rm -rf "$src" "$work/gocache" "$work/gopath" "$work/home"
kh::log "kubernetes ${K8S_VERSION} binaries in ${K8S_BIN}"
