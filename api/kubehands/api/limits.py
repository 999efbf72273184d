"""The running limit: a key may hold `maxRunning` sandboxes that have a pod or are getting one (starting, running
and in error: a failed pod may still hold its node's resources, and a re-/start brings it back).

/start of a new session, /start or /resume of a paused one (`control`) and the router's wake (`router`) are refused
with 429 at the limit. Counted from the caches, so replicas racing can exceed it by a little: a soft limit
(docs/gateway.md).
"""

from typing import Any

from kubehands.api.errors import LimitExceeded
from kubehands.api.observe.caches import Caches
from kubehands.api.runtime import runtime_status
from kubehands.api.schemas import RuntimeStatus
from kubehands.crd.constants import LABEL_OWNER
from kubehands.kube import labels
from kubehands.spec import objects
from kubehands.spec.constants import ANNOTATION_MAX_RUNNING
from kubehands.spec.settings import SpecSettings

Obj = dict[str, Any]
LIVE = (RuntimeStatus.STARTING, RuntimeStatus.RUNNING)
# What counts against the running limit: everything that holds a pod or is getting one (paused and
# stopped sandboxes hold only their PVC).
HOLDING = (RuntimeStatus.STARTING, RuntimeStatus.RUNNING, RuntimeStatus.ERROR)


def is_live(sandbox: Obj | None) -> bool:
    """Starting or running: listed by /list and answered as is by /start (not deleted, failed or paused)."""
    if not sandbox:
        return False
    status, _ = runtime_status(sandbox, alive=False)
    return status in LIVE


def holds_resources(sandbox: Obj | None) -> bool:
    """Counts against the running limit: starting, running or in error (not paused, not being deleted)."""
    if not sandbox:
        return False
    status, _ = runtime_status(sandbox, alive=False)
    return status in HOLDING


def holding(caches: Caches, tenant: str) -> int:
    return sum(1 for s in caches.owned_sandboxes(tenant) if holds_resources(s))


def check_limit(caches: Caches, tenant: str, limit: int) -> None:
    """429 when one more sandbox would exceed the tenant's limit."""
    count = holding(caches, tenant)
    if count >= limit:
        raise LimitExceeded(
            f"API key {tenant!r} already has {count} sandboxes starting, running or in error (its limit "
            f"is {limit}); pause or stop one first"
        )


def limit_of(caches: Caches, settings: SpecSettings, sandbox: Obj) -> int:
    """The running limit of a sandbox's owner: its key's profile when this gateway reads API keys, else
    the limit the control API recorded on the Sandbox, else the default."""
    record = caches.key_record(labels(sandbox).get(LABEL_OWNER, ""))
    if record is not None:
        return objects.running_limit(record, settings)
    annotations = (sandbox.get("metadata") or {}).get("annotations") or {}
    try:
        return max(0, int(annotations[ANNOTATION_MAX_RUNNING]))
    except (KeyError, ValueError):
        return settings.default_max_running
