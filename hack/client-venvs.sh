#!/usr/bin/env bash
# Virtualenvs with the real OpenHands client libraries, for end-to-end tests. They cannot share a
# venv with each other (openhands-ai pins an older SDK) nor with kubehands, so each gets its own.
#   hack/client-venvs.sh sdk   -> openhands-workspace + openhands-sdk (APIRemoteWorkspace)
#   hack/client-venvs.sh app   -> openhands-ai (the app server with RUNTIME=remote)
# Each installs exactly its pinned set (hack/pins/{sdk,app}-<version>.txt, written by hack/pin-openhands.py),
# so a dependency released after the client cannot change what the tests run. Prints the venv's python path.
# Idempotent; a venv whose pins changed is made anew.
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

SDK_VERSION="${OPENHANDS_SDK_VERSION:-$AGENT_SERVER_VERSION}"
APP_VERSION="${OPENHANDS_APP_VERSION:-1.11.0}"
PYTHON="${PYTHON:-$(kh::python)}"

case ${1:-} in
  sdk) name="openhands-sdk-$SDK_VERSION"; pins="$ROOT/hack/pins/sdk-$SDK_VERSION.txt" ;;
  app) name="openhands-ai-$APP_VERSION"; pins="$ROOT/hack/pins/app-$APP_VERSION.txt" ;;
  *) echo "usage: $0 sdk|app" >&2; exit 2 ;;
esac
[[ -f $pins ]] || kh::die "no pins $pins: run hack/pin-openhands.py ${1} <version>"
venv="$KUBEHANDS_CACHE/venvs/$name"
hash=$(sha256sum "$pins" | cut -c1-16)

if [[ "$(cat "$venv/.complete" 2>/dev/null)" != "$hash" ]]; then
  kh::log "creating $venv (pip install -r ${pins#"$ROOT"/})"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  # --no-deps: the pins are the whole set; `pip check` proves it is complete and consistent.
  "$venv/bin/pip" install -q --no-deps -r "$pins" >&2
  "$venv/bin/pip" check >&2 || kh::die "$pins is incomplete"
  echo "$hash" > "$venv/.complete"
fi
echo "$venv/bin/python"
