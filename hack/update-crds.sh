#!/usr/bin/env bash
# Regenerate crds/sandboxes.kubehands.dev.yaml from the pydantic model (kubehands.crd.model).
#
# Usage: hack/update-crds.sh            write the CRD
#        hack/update-crds.sh --verify   fail with a diff when the committed CRD is stale
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The project venv by default; override for CI images with another interpreter.
PYTHON="${PYTHON:-${ROOT}/.venv/bin/python}"

usage() { sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

mode=()
case "${1:-}" in
  "") ;;
  --verify) mode=(--check) ;;
  -h|--help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

cd "${ROOT}"
"${PYTHON}" -m kubehands.crd.generate --output crds/sandboxes.kubehands.dev.yaml "${mode[@]}"
