"""Polling load: sandboxes polled every 2 s (as OpenHands does) — gateway CPU and requests reaching
the API server per second, against an idle window of the same length in the same run."""

import asyncio
import random
import re
import time
from typing import Any

import aiohttp

from bench import procstat, stats
from bench.system import System

NAME = "polling"
INTERVAL = 2.0
_SAMPLE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$')


def parse_request_totals(text: str) -> dict[tuple[str, str, str], float]:
    """apiserver_request_total summed by (verb, resource, code), from Prometheus text."""
    totals: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("code", ""))
        totals[key] = totals.get(key, 0.0) + float(match["value"])
    return totals


def request_delta(before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float],
                  seconds: float) -> dict[str, Any]:
    """Requests per second between two scrapes: all, and without long-running WATCH verbs, and by resource."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(after) | set(before)}
    total = sum(delta.values())
    short = sum(v for (verb, _, _), v in delta.items() if verb != "WATCH")
    by_resource: dict[str, float] = {}
    for (verb, resource, _), v in delta.items():
        if v:
            by_resource[f"{verb} {resource}"] = by_resource.get(f"{verb} {resource}", 0.0) + v / seconds
    return {"seconds": seconds, "per_second": total / seconds if seconds else None,
            "non_watch_per_second": short / seconds if seconds else None,
            "by_verb_resource": dict(sorted(by_resource.items(), key=lambda kv: -kv[1]))}


async def _poll(system: System, sessions: list[str], seconds: float) -> list[float]:
    gw = system.gateway.url  # type: ignore[union-attr]
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(sessions) + 10)) as http:
        async def client(session_id: str) -> None:
            nonlocal errors
            await asyncio.sleep(random.uniform(0, INTERVAL))
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                async with http.get(f"{gw}/sessions/{session_id}", headers=system.headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(max(0.0, INTERVAL - (time.perf_counter() - t0)))

        await asyncio.gather(*(client(s) for s in sessions))
    if errors:
        raise RuntimeError(f"{errors} polls failed")
    return latencies


def _window(system: System, seconds: float, sessions: list[str] | None) -> dict[str, Any]:
    window = procstat.CpuWindow(system.gateway.pid).start()  # type: ignore[union-attr]
    before = parse_request_totals(system.apiserver_metrics())
    t0 = time.monotonic()
    latencies = asyncio.run(_poll(system, sessions, seconds)) if sessions else time.sleep(seconds) or []
    elapsed = time.monotonic() - t0
    after = parse_request_totals(system.apiserver_metrics())
    return {"cpu": window.stop(), "apiserver": request_delta(before, after, elapsed), "latencies": latencies}


def run(system: System, sizes: dict[str, Any]) -> dict[str, Any]:
    sessions = [sid for _, sid in system.ensure_paused(sizes["poll_sandboxes"])]
    seconds = sizes["poll_seconds"]
    idle = _window(system, seconds, None)
    polled = _window(system, seconds, sessions)
    figures = {
        "poll_latency": stats.summarize(polled["latencies"]),
        "apiserver_rps_idle": stats.rate_figure(idle["apiserver"]["non_watch_per_second"], "1/s"),
        "apiserver_rps_polling": stats.rate_figure(polled["apiserver"]["non_watch_per_second"], "1/s"),
        "gateway_cores_idle": stats.rate_figure(idle["cpu"]["cores"], "cores"),
        "gateway_cores_polling": stats.rate_figure(polled["cpu"]["cores"], "cores"),
        "client_rps": stats.rate_figure(len(polled["latencies"]) / seconds, "1/s"),
    }
    return {
        "sizes": {"sandboxes": len(sessions), "interval_seconds": INTERVAL, "window_seconds": seconds},
        "figures": figures,
        "comparisons": {
            "apiserver_requests": stats.comparison(figures, "apiserver_rps_polling", "apiserver_rps_idle"),
            "gateway_cpu": stats.comparison(figures, "gateway_cores_polling", "gateway_cores_idle"),
        },
        "apiserver": {"idle": idle["apiserver"], "polling": polled["apiserver"]},
        "cpu": {"idle": idle["cpu"], "polling": polled["cpu"]},
        "notes": [
            f"{len(sessions)} clients, one per sandbox, each GET /sessions/{{id}} every {INTERVAL:g} s for "
            f"{seconds:g} s; the idle window of the same length just before is the baseline.",
            "API server requests: apiserver_request_total from its /metrics before and after, without the "
            "long-running WATCH verb, all clients of the API server included (kubelet, controllers, operator).",
            "gateway CPU: utime+stime of the gateway process from /proc, in cores (1.0 = one core busy).",
        ],
    }
