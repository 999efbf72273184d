#!/usr/bin/env bash
# Copy the CRDs from crds/ (the single source of truth) into the chart's crds/ folder.
#
# Usage: hack/update-chart-crds.sh            copy crds/*.yaml to charts/kubehands/crds/
#        hack/update-chart-crds.sh --verify   fail with a diff when the chart's copy differs
#
# Helm installs charts/kubehands/crds/ before the templates and never upgrades or deletes them
# (docs/install.md, "Upgrading").
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

SRC="$ROOT/crds"
DEST="$ROOT/charts/kubehands/crds"

usage() { sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
verify=0
case "${1:-}" in
  "") ;;
  --verify) verify=1 ;;
  -h|--help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

if [[ $verify == 1 ]]; then
  if ! diff -ru "$SRC" "$DEST"; then
    kh::die "charts/kubehands/crds/ is stale; run hack/update-chart-crds.sh"
  fi
  exit 0
fi
mkdir -p "$DEST"
# Remove copies whose source is gone, then copy byte for byte.
for f in "$DEST"/*.yaml; do
  [[ -e $f ]] || continue
  [[ -e $SRC/$(basename "$f") ]] || rm -f "$f"
done
cp "$SRC"/*.yaml "$DEST"/
kh::log "copied $(ls "$SRC"/*.yaml | wc -l) CRD file(s) into charts/kubehands/crds/"
