"""The running limit: a key may hold `maxRunning` sandboxes that have a pod or are getting one (starting, running
and in error: a failed pod may still hold its node's resources, and a re-/start brings it back).

What counts, as pure functions over the caches and the key's admission ledger (`admission.py` makes the calls): the
key's sandboxes the cache shows holding resources, together with the ledger's in-flight admissions (younger than
`IN_FLIGHT_SECONDS`), counted once per *slot*. A slot is the session a sandbox serves, named by its claim Secret
(`spec.sessionKeySecretRef.name`), which every path that makes a sandbox hold resources knows before it writes:
a new session's claim name, a resumed or restarted sandbox's reference.
"""

from typing import Any

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
# How long an admission counts by its ledger entry alone: longer than any write it admits takes (one API call,
# bounded by KUBEHANDS_KUBE_REQUEST_TIMEOUT_SECONDS, 10 s by default) plus the watch delay of every replica's cache,
# after which the caches show the sandbox it admitted.
IN_FLIGHT_SECONDS = 60.0


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


def slot_of(sandbox: Obj) -> str:
    """The slot a sandbox takes: its session's claim Secret (its own name for one made without a claim)."""
    ref = (sandbox.get("spec") or {}).get("sessionKeySecretRef") or {}
    return str(ref.get("name") or sandbox["metadata"]["name"])


def holding_slots(caches: Caches, tenant: str) -> set[str]:
    return {slot_of(s) for s in caches.owned_sandboxes(tenant) if holds_resources(s)}


def entry_key(slot: str, token: str) -> str:
    """A ledger entry's key: one per admission (a ConfigMap key: letters, digits, '-', '_' and '.')."""
    return f"{slot}.{token}"


def entry_slot(key: str) -> str:
    return key.rpartition(".")[0]


def in_flight(entries: dict[str, str], now: float) -> dict[str, float]:
    """The ledger's admissions younger than `IN_FLIGHT_SECONDS` (entry key → admission time); unreadable entries,
    and anything that is no entry, are left out (and so pruned at the next write)."""
    found: dict[str, float] = {}
    for key, value in entries.items():
        if not entry_slot(key):
            continue
        try:
            at = float(value)
        except ValueError:
            continue
        if now - IN_FLIGHT_SECONDS < at <= now + IN_FLIGHT_SECONDS:  # a clock far ahead is no licence to count forever
            found[key] = at
    return found


def count_others(holding: set[str], admitted: dict[str, float], slot: str) -> int:
    """Slots other than `slot` that hold resources or are being admitted: what `slot` would be added to."""
    return len((holding | {entry_slot(key) for key in admitted}) - {slot})


def over_limit_detail(tenant: str, count: int, limit: int) -> str:
    return (
        f"API key {tenant!r} already has {count} sandboxes starting, running or in error (its limit is {limit}); "
        "pause or stop one first"
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
