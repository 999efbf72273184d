"""Port mode: which runtime ids a /start may give out, so that no two sandboxes share a block of gateway ports.

A sandbox's ports are a hash of its runtime id (`urls.port_slot`), so nothing is stored: a new sandbox gets a
freshly minted id whose slot is free, and a warm-pool member may be claimed only when its own id's slot is free.
"Used" is every session sandbox and session claim in the caches, plus the slots this replica handed out that the
caches do not show yet (they see a new claim a moment after it is written; a reservation whose claim was never
written lapses after `RESERVATION_SECONDS`). One gateway replica serves port mode (docs/gateway.md#port-mode), so
these reservations are the only ones that matter.
"""

import time
from collections.abc import Callable

from kubehands.api.errors import Unavailable
from kubehands.api.observe.caches import Caches
from kubehands.api.runtime import is_pool_member
from kubehands.api.settings import Settings
from kubehands.spec import urls
from kubehands.spec.objects import mint_runtime_id

RESERVATION_SECONDS = 60.0
# Minting ids until one hashes to a free slot: with f of n slots free it takes n/f tries on average.
TRIES_PER_SLOT = 64


def pick_runtime_id(used: set[int], slots: int, slot_of: Callable[[str], int], mint: Callable[[], str]) -> str | None:
    """A minted id whose slot is not in `used`; None when every slot is used (or, improbably, no try found one)."""
    if len(used) >= slots:
        return None
    for _ in range(TRIES_PER_SLOT * slots):
        runtime_id = mint()
        if slot_of(runtime_id) not in used:
            return runtime_id
    return None


class PortSlots:
    def __init__(self, settings: Settings, caches: Caches, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.caches = caches
        self._clock = clock
        self._reserved: dict[int, tuple[str, float]] = {}  # slot -> (runtime id, when this replica handed it out)

    @property
    def enabled(self) -> bool:
        return self.settings.routing_mode == "port"

    def _slot(self, runtime_id: str) -> int:
        return urls.port_slot(self.settings, runtime_id)

    def _in_caches(self, runtime_id: str) -> bool:
        sandbox = self.caches.sandbox(runtime_id)
        return self.caches.claim_for_runtime(runtime_id) is not None or (
            sandbox is not None and not is_pool_member(sandbox)
        )

    def _used(self) -> set[int]:
        now = self._clock()
        for slot, (runtime_id, since) in list(self._reserved.items()):
            if self._in_caches(runtime_id) or now - since > RESERVATION_SECONDS:
                del self._reserved[slot]  # the caches count it from now on (and free it when it is deleted)
        return self.caches.used_slots() | set(self._reserved)

    def mint_runtime_id(self) -> str:
        """A new sandbox's runtime id (reserved in port mode). Raises `Unavailable` when every port block is taken."""
        if not self.enabled:
            return mint_runtime_id()
        slots = urls.port_slots(self.settings)
        runtime_id = pick_runtime_id(self._used(), slots, self._slot, mint_runtime_id)
        if runtime_id is None:
            raise Unavailable(
                f"all {slots} sandbox port blocks ({self.settings.sandbox_ports}) are in use, paused sandboxes "
                "included; stop a sandbox, or widen KUBEHANDS_SANDBOX_PORTS"
            )
        self.reserve(runtime_id)
        return runtime_id

    def is_free(self, runtime_id: str) -> bool:
        """Whether a sandbox may take this (pool member's) id: always outside port mode."""
        return not self.enabled or self._slot(runtime_id) not in self._used()

    def reserve(self, runtime_id: str) -> None:
        if self.enabled:
            self._reserved[self._slot(runtime_id)] = (runtime_id, self._clock())
