"""When a Sandbox last showed a sign of life: what the operator's idle culler measures idleness from, and what
`kubehands sandboxes` shows as its idle time."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubehands.crd import conditions as c
from kubehands.crd.times import parse_time


def last_activity(sandbox: Mapping[str, Any]) -> datetime | None:
    """The latest sign of life: gateway activity, or the current pod's start, or the (re)start request.

    A resumed Sandbox keeps an old `lastActivityTime`; the pod and condition times stop it from
    being culled again before anyone could use it.
    """
    status = sandbox.get("status") or {}
    paused = c.find_condition(status.get("conditions") or [], c.PAUSED) or {}
    candidates = [
        status.get("lastActivityTime"),
        status.get("podCreatedTime"),
        status.get("readyTime"),
        (sandbox.get("metadata") or {}).get("creationTimestamp"),
        paused.get("lastTransitionTime") if paused.get("status") == c.FALSE else None,
    ]
    moments = [m for m in (parse_time(x) for x in candidates) if m is not None]
    return max(moments, default=None)
