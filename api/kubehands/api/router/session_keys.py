"""Whether a router request carries its sandbox's session key.

The router authenticates nothing for the sandbox (the agent server does), but it decides two things on its
own: whether a request may resume a paused sandbox (wake), and whether it counts as activity for the idle
culler. Only requests that carry the session key may do either, so anonymous probes can neither start pods
nor keep a sandbox from being paused and, later, deleted.

The key is compared with the Sandbox's `kubehands.dev/session-key-sha256` annotation (the hex sha256 of the
key, written by the gateway with the key), so a router needs no access to Secrets. Sandboxes created before
that annotation existed fall back to the session-key Secret when this gateway watches Secrets, and are
never woken otherwise.
"""

import hashlib
import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.types import Scope

from kubehands.crd.constants import ANNOTATION_SESSION_KEY_SHA256

HEADER = b"x-session-api-key"  # every client's agent-server calls
QUERY_PARAMETERS = ("tkn", "session_api_key")  # VS Code's first load; browser WebSockets
COOKIE = "vscode-tkn"  # VS Code after its first load
# Enough for every real client (one of each); more is refused rather than hashed without bound.
MAX_CANDIDATES = 8


def presented_keys(scope: Scope) -> list[str]:
    """The candidate session keys of a request, in a bounded number."""
    found: list[str] = []
    for name, value in scope.get("headers", []):
        if name == HEADER:
            found.append(value.decode("latin-1"))
        elif name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, cookie = part.strip().partition("=")
                if key == COOKIE and cookie:
                    found.append(unquote(cookie.strip('"')))
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        found += [v for k, v in parse_qsl(query, max_num_fields=100) if k in QUERY_PARAMETERS]
    return [key for key in found if key][:MAX_CANDIDATES]


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def carries_session_key(scope: Scope, sandbox: dict[str, Any], fallback_key: Callable[[], str | None]) -> bool:
    """True when one of the presented keys is the sandbox's session key (constant-time comparisons).

    `fallback_key()` gives the key from the Secret cache; it is asked only for a Sandbox without the digest
    annotation.
    """
    try:
        candidates = presented_keys(scope)
    except ValueError:  # more query fields than parse_qsl allows: not a client of ours
        return False
    if not candidates:
        return False
    annotations = (sandbox.get("metadata") or {}).get("annotations") or {}
    expected = str(annotations.get(ANNOTATION_SESSION_KEY_SHA256) or "").lower()
    if not expected:
        key = fallback_key()
        expected = _sha256(key) if key else ""
    if not expected:
        return False
    matched = False
    for key in candidates:  # every candidate, no early exit
        matched |= hmac.compare_digest(expected, _sha256(key))
    return matched
