#!/usr/bin/env bash
# Regenerate crds/*.yaml (Sandbox, SandboxPool) from the pydantic models (kubehands.crd.model, .pool_model).
#
# Usage: hack/update-crds.sh            write the CRDs
#        hack/update-crds.sh --verify   fail with a diff when a committed CRD is stale
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
"${PYTHON}" -m kubehands.crd.generate --output-dir crds "${mode[@]}"
