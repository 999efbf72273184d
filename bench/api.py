"""Control API: GET /sessions/{id} and GET /sessions/batch (50 ids) with many sandboxes present, at
1, 10 and 50 concurrent clients, against a trivial FastAPI endpoint under the same uvicorn options."""

import asyncio
import random
from typing import Any
from urllib.parse import urlencode

from bench import load, stats
from bench.profiled import profiling
from bench.profiles import summarize_profile
from bench.system import System

NAME = "api"
BATCH = 50


def _requests(system: System, base_url: str, sessions: list[str]) -> dict[str, load.Request]:
    rng = random.Random(7)
    batches = [urlencode([("ids", s) for s in rng.sample(sessions, min(BATCH, len(sessions)))])
               for _ in range(64)]
    return {
        "get_session": load.get(lambda i: f"{base_url}/sessions/{sessions[i % len(sessions)]}", system.headers),
        "batch_50": load.get(lambda i: f"{base_url}/sessions/batch?{batches[i % len(batches)]}", system.headers),
    }


async def _measure(system: System, sessions: list[str], sizes: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    comparisons: dict[str, Any] = {}
    requests = _requests(system, system.gateway.url, sessions)  # type: ignore[union-attr]
    baseline = load.get(lambda i: f"{system.baseline.url}/ping")  # type: ignore[union-attr]
    for concurrency in sizes["api_concurrency"]:
        total = sizes["api_requests"] * max(1, concurrency // 10 + 1)
        seconds = sizes["api_max_seconds"]
        figures[f"baseline_c{concurrency}"] = (
            await load.closed_loop(baseline, concurrency, total, seconds, warmup=5)).summary()
        for name, request in requests.items():
            figures[f"{name}_c{concurrency}"] = (
                await load.closed_loop(request, concurrency, total, seconds, warmup=5)).summary()
            comparisons[f"{name}_c{concurrency}"] = stats.comparison(
                figures, f"{name}_c{concurrency}", f"baseline_c{concurrency}")
            comparisons[f"{name}_c{concurrency}_rps"] = {
                "ours": f"{name}_c{concurrency}", "baseline": f"baseline_c{concurrency}", "figure": "rps",
                "ratio_median": stats.ratio(figures[f"{name}_c{concurrency}"]["rps"],
                                            figures[f"baseline_c{concurrency}"]["rps"]),
                "higher_is_better": True,
            }
    return {"figures": figures, "comparisons": comparisons}


async def _profile(system: System, sessions: list[str], sizes: dict[str, Any]) -> dict[str, Any]:
    """The same load against a second gateway process under cProfile (separate, so the figures above
    carry no profiler overhead)."""
    out = system.log_dir / "profiles"
    out.mkdir(exist_ok=True)
    results = {}
    for name in ("get_session", "batch_50"):
        prof = out / f"{name}.prof"
        served = system.serve_gateway(f"gateway-profiled-{name}", profile_to=prof)
        try:
            request = _requests(system, served.url, sessions)[name]
            await load.closed_loop(request, 1, 3, 10)  # warm
            with profiling(served.pid):
                await load.closed_loop(request, 10, sizes["api_requests"] * 2, sizes["api_max_seconds"])
        finally:
            system.stop_served(served)
        results[name] = summarize_profile(str(prof))
    return results


def _dominant(profile: dict[str, Any], growth: dict[str, Any] | None) -> str | None:
    """The category with the most CPU in the GET /sessions/{id} profile, and how the lookup grows."""
    categories = profile["get_session"]["categories"]
    if not categories:
        return None
    top = categories[0]
    text = f"{top['category']}: {top['share']:.0%} of the gateway's busy CPU serving GET /sessions/{{id}}"
    ours = [c for c in categories if c["category"] == "kubehands control API"]
    if ours:
        text += f" (kubehands' own code: {ours[0]['share']:.0%})"
    if growth and growth.get("ratio_median"):
        ratio = growth["ratio_median"]
        shape = "a scan per id" if ratio > 3 else "indexed, near flat"
        text += f"; the batch lookup grows ×{ratio:.1f} for 10× the sandboxes ({shape})"
    return text


def run(system: System, sizes: dict[str, Any]) -> dict[str, Any]:
    present = system.ensure_paused(sizes["api_sandboxes"])
    sessions = [session_id for _, session_id in present]
    measured = asyncio.run(_measure(system, sessions, sizes))
    profile = asyncio.run(_profile(system, sessions, sizes))
    counts = sorted({max(1, sizes["api_sandboxes"] // 10), sizes["api_sandboxes"]})
    handler = handler_cost(system, counts)
    measured["figures"] |= handler
    small, large = counts[0], counts[-1]
    if small != large and small >= BATCH:  # below BATCH ids the batch itself shrinks: no growth to read
        measured["comparisons"]["handler_batch_growth"] = stats.comparison(
            measured["figures"], f"batch_lookup_{large}", f"batch_lookup_{small}")
    return {
        "sizes": {"sandboxes": len(sessions), "batch": BATCH, "concurrency": sizes["api_concurrency"],
                  "requests_per_level": sizes["api_requests"], "max_seconds": sizes["api_max_seconds"]},
        **measured,
        "profile": profile,
        "dominant_cost": _dominant(profile, measured["comparisons"].get("handler_batch_growth")),
        "notes": [
            f"{len(sessions)} Sandboxes present (Paused, created directly with the objects /start writes).",
            "baseline: GET /ping of a trivial FastAPI app run by uvicorn.run with the options of "
            "`kubehands gateway` (log level info, access log on), in the same run.",
            "closed loop: each client sends its next request when the previous one is answered (aiohttp).",
            "find_session_N / batch_lookup_N: the handler's lookup alone, in process, over N synthetic cached "
            "Sandboxes (1 id / 50 ids); handler_batch_growth compares N=max with N=max/10 (×10 would be a scan).",
        ],
    }


def handler_cost(system: System, counts: list[int], calls: int = 100) -> dict[str, Any]:
    """The lookup behind GET /sessions/{id} and /sessions/batch in process, on caches filled with `count`
    synthetic Sandboxes (no HTTP, no cluster): how the handler's own cost grows with the cache."""
    import base64
    import time

    import httpx
    from kubernetes_asyncio import client as aclient

    from kubehands.api.control.service import SandboxService
    from kubehands.api.keys import KeyRecord
    from kubehands.api.observe.alive import AliveTracker
    from kubehands.api.observe.caches import Caches
    from kubehands.api.observe.pod_details import PodDetails
    from kubehands.api.settings import Settings
    from kubehands.kube import Kube

    async def measure() -> dict[str, Any]:
        api = aclient.ApiClient()
        kube = Kube.from_api(api)
        http = httpx.AsyncClient()  # lookups never call a sandbox
        try:
            settings = Settings(namespace=system.namespace)
            caller = KeyRecord(name=system.key_name, digest="0" * 64)
            out: dict[str, Any] = {}
            for count in counts:
                caches = Caches(kube, system.namespace, system.namespace)
                alive = AliveTracker(settings, caches, http)
                details = PodDetails(settings, kube, caches.pod)
                service = SandboxService(settings, caches, kube, alive, http, details)
                sessions = []
                for i in range(count):
                    sandbox, secret = system.paused_manifests(f"micro-{i}")
                    sandbox["metadata"] |= {"resourceVersion": str(i + 1), "creationTimestamp": "2026-01-01T00:00:00Z"}
                    secret["data"] = {k: base64.b64encode(v.encode()).decode()
                                      for k, v in secret.pop("stringData").items()}
                    caches.sandboxes.items[sandbox["metadata"]["name"]] = sandbox
                    caches.session_keys.items[secret["metadata"]["name"]] = secret
                    sessions.append(f"micro-{i}")
                rng = random.Random(3)
                single, batch = [], []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    service.find_session(caller, rng.choice(sessions))
                    single.append((time.perf_counter() - t0) * 1000)
                    wanted = rng.sample(sessions, min(BATCH, count))
                    t0 = time.perf_counter()
                    for session_id in wanted:
                        service.find_session(caller, session_id)
                    batch.append((time.perf_counter() - t0) * 1000)
                out[f"find_session_{count}"] = stats.summarize(single)
                out[f"batch_lookup_{count}"] = stats.summarize(batch)
            return out
        finally:
            await http.aclose()
            await api.close()

    return asyncio.run(measure())
