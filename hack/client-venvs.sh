#!/usr/bin/env bash
# Virtualenvs with the real OpenHands client libraries, for end-to-end tests. They cannot share a
# venv with each other (openhands-ai pins an older SDK) nor with kubehands, so each gets its own.
#   hack/client-venvs.sh sdk   -> openhands-workspace + openhands-sdk (APIRemoteWorkspace)
#   hack/client-venvs.sh app   -> openhands-ai (the app server with RUNTIME=remote)
# Prints the venv's python path. Idempotent.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

SDK_VERSION="${OPENHANDS_SDK_VERSION:-1.58.2}"
APP_VERSION="${OPENHANDS_APP_VERSION:-1.11.0}"
PYTHON="${PYTHON:-$(ls -d "$HOME"/.pyenv/versions/3.12.*/bin/python3.12 2>/dev/null | tail -1)}"

case ${1:-} in
  sdk) venv="$KUBEHANDS_CACHE/venvs/openhands-sdk-$SDK_VERSION"
       reqs=("openhands-workspace==$SDK_VERSION" "openhands-sdk==$SDK_VERSION") ;;
  app) venv="$KUBEHANDS_CACHE/venvs/openhands-ai-$APP_VERSION"
       reqs=("openhands-ai==$APP_VERSION") ;;
  *) echo "usage: $0 sdk|app" >&2; exit 2 ;;
esac

if [[ ! -f $venv/.complete ]]; then
  kh::log "creating $venv (${reqs[*]})"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q "${reqs[@]}" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
