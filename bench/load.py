"""Bounded closed-loop load: `concurrency` clients issue up to `total` requests (or stop at `max_seconds`)."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench import stats


@dataclass
class LoadResult:
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    bytes: int = 0
    first_error: str | None = None

    def summary(self) -> dict[str, Any]:
        out = stats.summarize(self.latencies_ms)
        out |= {"concurrency": self.concurrency, "errors": self.errors, "seconds": self.seconds,
                "rps": stats.throughput(len(self.latencies_ms), self.seconds),
                "mb_per_s": (self.bytes / 1e6 / self.seconds) if self.bytes and self.seconds else None}
        if self.first_error:
            out["first_error"] = self.first_error
        return out


Request = Callable[[aiohttp.ClientSession, int], Awaitable[int]]  # returns bytes moved (0 if not counted)


def session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=concurrency + 10, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))


async def closed_loop(request: Request, concurrency: int, total: int, max_seconds: float,
                      warmup: int = 0) -> LoadResult:
    """Run `request` `total` times over `concurrency` workers; each worker waits for its answer first."""
    result = LoadResult(concurrency)
    async with session(concurrency) as http:
        for i in range(warmup):
            await request(http, i)
        counter = iter(range(total))
        started = time.perf_counter()
        deadline = started + max_seconds

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    moved = await request(http, i)
                except Exception as exc:  # noqa: BLE001 - counted, the first one is kept
                    result.errors += 1
                    result.first_error = result.first_error or repr(exc)[:300]
                    continue
                result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                result.bytes += moved

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


def get(url_for: Callable[[int], str], headers: dict[str, str] | None = None) -> Request:
    async def request(http: aiohttp.ClientSession, i: int) -> int:
        async with http.get(url_for(i), headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {url_for(i)}: {response.status} {body[:200]!r}")
            return 0

    return request
