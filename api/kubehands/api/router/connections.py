"""The per-sandbox bound on connections through the router: one sandbox (or one client of it) cannot hold
all the gateway's connections. Every proxied request and relayed WebSocket counts while it lasts."""

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class SandboxConnections:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def open(self, runtime_id: str) -> int:
        return self._open[runtime_id]

    @contextmanager
    def hold(self, runtime_id: str) -> Iterator[bool]:
        """Count one connection for the block; yields False (counting nothing) when the sandbox is at its limit."""
        if self._open[runtime_id] >= self.limit:
            yield False
            return
        self._open[runtime_id] += 1
        try:
            yield True
        finally:
            self._open[runtime_id] -= 1
            if not self._open[runtime_id]:
                del self._open[runtime_id]

    def refusal(self, runtime_id: str) -> str:
        return (
            f"sandbox {runtime_id} already has {self.limit} connections open through the gateway (its limit); "
            "close some or retry shortly"
        )
