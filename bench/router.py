"""Router: small GET, 10 MB upload, 10 MB download and WebSocket round trips through the gateway's
router vs directly to the sandbox's pod IP, at 1 and 50 concurrent clients; plus a profile."""

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import httpx

from bench import load, procstat, stats
from bench.profiled import profiling
from bench.profiles import summarize_profile
from bench.system import System

NAME = "router"
WORK_PORT = 12000
MB10 = 10 * 1024 * 1024

# A raw-ASGI echo/bulk server started next to the agent server in the sandbox (port work-1), so the
# bulk and WebSocket cases measure the router and not an agent-server endpoint's own work.
ECHO_APP = r'''
import uvicorn
from urllib.parse import parse_qs
CHUNK = b"x" * 65536
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"}); return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": m.get("text"), "bytes": m.get("bytes")})
    path = scope["path"]
    if path == "/download":
        n = int(parse_qs(scope["query_string"].decode()).get("n", ["0"])[0])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(n).encode()), (b"content-type", b"application/octet-stream")]})
        while n > 0:
            part = CHUNK[:min(n, len(CHUNK))]; n -= len(part)
            await send({"type": "http.response.body", "body": part, "more_body": n > 0})
        return
    received = 0
    while True:
        m = await receive()
        received += len(m.get("body", b""))
        if not m.get("more_body"):
            break
    body = str(received).encode() if path == "/upload" else b"ok"
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
import os
host, port = os.environ.get("BENCH_ECHO_HOST", "0.0.0.0"), int(os.environ.get("BENCH_ECHO_PORT", "12000"))
uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, ws="websockets")
'''
COMMAND = ["/bin/sh", "-c",
           '/opt/agent-venv/bin/python -c "$BENCH_ECHO_APP" & exec /usr/local/bin/openhands-agent-server --port 60000']


def start_echo_sandbox(system: System) -> dict[str, Any]:
    """A running sandbox (agent server + the echo app); returns its runtime object and pod IP."""
    session_id = f"router-{uuid.uuid4().hex[:6]}"
    body = system.start_body(session_id, command=COMMAND, environment={"BENCH_ECHO_APP": ECHO_APP})
    gw = system.gateway.url  # type: ignore[union-attr]
    started = httpx.post(f"{gw}/start", json=body, headers=system.headers, timeout=60)
    started.raise_for_status()
    runtime = started.json()

    def running() -> dict[str, Any] | None:
        current = httpx.get(f"{gw}/sessions/{session_id}", headers=system.headers, timeout=10).json()
        return current if current["status"] == "running" else None

    system.wait(running, 300, "the router sandbox to run", 0.5)
    pod_ip = system.sandbox_status(runtime["runtime_id"])["podIP"]
    system.wait(lambda: _ok(f"http://{pod_ip}:{WORK_PORT}/small"), 60, "the echo app", 0.25)
    return {"runtime": runtime, "pod_ip": pod_ip}


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _upload(url: str, payload: bytes) -> load.Request:
    async def request(http: aiohttp.ClientSession, i: int) -> int:
        async with http.post(url, data=payload) as r:
            text = await r.text()
            if r.status != 200 or int(text) != len(payload):
                raise RuntimeError(f"upload: {r.status} {text[:100]}")
        return len(payload)

    return request


def _download(url: str) -> load.Request:
    async def request(http: aiohttp.ClientSession, i: int) -> int:
        async with http.get(url) as r:
            moved = 0
            async for chunk in r.content.iter_chunked(1 << 20):
                moved += len(chunk)
            if r.status != 200 or moved != MB10:
                raise RuntimeError(f"download: {r.status}, {moved} bytes")
        return moved

    return request


async def websocket_round_trips(url: str, concurrency: int, per_client: int, max_seconds: float) -> load.LoadResult:
    result = load.LoadResult(concurrency)
    message = "x" * 64
    async with load.session(concurrency) as http:
        started = time.perf_counter()
        deadline = started + max_seconds

        async def client() -> None:
            try:
                async with http.ws_connect(url, autoping=False) as ws:
                    for _ in range(per_client):
                        if time.perf_counter() > deadline:
                            return
                        t0 = time.perf_counter()
                        await ws.send_str(message)
                        answer = await ws.receive(timeout=30)
                        if answer.type != aiohttp.WSMsgType.TEXT or answer.data != message:
                            raise RuntimeError(f"websocket echo: {answer.type} {str(answer.data)[:80]}")
                        result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            except Exception as exc:  # noqa: BLE001 - counted
                result.errors += 1
                result.first_error = result.first_error or repr(exc)[:300]

        await asyncio.gather(*(client() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


def _targets(system: System, sandbox: dict[str, Any], gateway_url: str) -> dict[str, dict[str, str]]:
    rid, ip = sandbox["runtime"]["runtime_id"], sandbox["pod_ip"]
    return {
        "router": {"small": f"{gateway_url}/{rid}/alive", "work": f"{gateway_url}/{rid}/work-1",
                   "ws": f"{gateway_url.replace('http://', 'ws://')}/{rid}/work-1/ws"},
        "direct": {"small": f"http://{ip}:60000/alive", "work": f"http://{ip}:{WORK_PORT}",
                   "ws": f"ws://{ip}:{WORK_PORT}/ws"},
    }


async def _case(case: str, urls: dict[str, str], concurrency: int, sizes: dict[str, Any],
                payload: bytes) -> load.LoadResult:
    if case == "small_get":
        total = sizes["router_small"] * (10 if concurrency > 1 else 1)
        return await load.closed_loop(load.get(lambda i: urls["small"]), concurrency, total,
                                      sizes["router_max_seconds"], warmup=5)
    if case == "upload_10mb":
        return await load.closed_loop(_upload(urls["work"] + "/upload", payload), concurrency,
                                      sizes["router_bulk"] * (5 if concurrency > 1 else 1),
                                      sizes["router_max_seconds"], warmup=1)
    if case == "download_10mb":
        return await load.closed_loop(_download(urls["work"] + f"/download?n={MB10}"), concurrency,
                                      sizes["router_bulk"] * (5 if concurrency > 1 else 1),
                                      sizes["router_max_seconds"], warmup=1)
    per_client = sizes["router_ws"] if concurrency == 1 else max(1, sizes["router_ws"] // 10)
    return await websocket_round_trips(urls["ws"], concurrency, per_client, sizes["router_max_seconds"])


CASES = ("small_get", "upload_10mb", "download_10mb", "websocket_round_trip")


async def _measure(system: System, sandbox: dict[str, Any], sizes: dict[str, Any]) -> dict[str, Any]:
    targets = _targets(system, sandbox, system.gateway.url)  # type: ignore[union-attr]
    payload = b"u" * MB10
    figures: dict[str, Any] = {}
    comparisons: dict[str, Any] = {}
    pid = getattr(system.gateway, "pid", None)  # None: router_local's in-process gateway
    gateway_rss_mb = {"before": procstat.memory(pid)["rss"] / 1e6} if pid else {}
    for case in CASES:
        for concurrency in sizes["router_concurrency"]:
            for path in ("direct", "router"):  # the baseline first, then ours, same sandbox, same load
                key = f"{case}_{path}_c{concurrency}"
                figures[key] = (await _case(case, targets[path], concurrency, sizes, payload)).summary()
            if pid:
                gateway_rss_mb[f"{case}_c{concurrency}"] = procstat.memory(pid)["rss"] / 1e6
            ours, base = f"{case}_router_c{concurrency}", f"{case}_direct_c{concurrency}"
            comparisons[f"{case}_c{concurrency}"] = stats.comparison(figures, ours, base)
            comparisons[f"{case}_c{concurrency}_throughput"] = {
                "ours": ours, "baseline": base, "figure": "rps",
                "ratio_median": stats.ratio(figures[ours]["rps"], figures[base]["rps"]), "higher_is_better": True}
    return {"figures": figures, "comparisons": comparisons, "gateway_rss_mb": gateway_rss_mb}


async def _profile(system: System, sandbox: dict[str, Any], sizes: dict[str, Any]) -> dict[str, Any]:
    out = system.log_dir / "profiles"
    out.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    payload = b"u" * MB10
    for case, concurrency in (("small_get", 50), ("download_10mb", 10), ("upload_10mb", 10)):
        prof = out / f"{case}.prof"
        served = system.serve_gateway(f"gateway-profiled-{case}", profile_to=prof)
        try:
            urls = _targets(system, sandbox, served.url)["router"]
            await _case(case, urls, 1, {**sizes, "router_small": 5, "router_bulk": 1}, payload)  # warm
            with profiling(served.pid):
                await _case(case, urls, concurrency, sizes, payload)
        finally:
            system.stop_served(served)
        results[case] = summarize_profile(str(prof))
    return results


def run(system: System, sizes: dict[str, Any]) -> dict[str, Any]:
    sandbox = start_echo_sandbox(system)
    try:
        measured = asyncio.run(_measure(system, sandbox, sizes))
        profile = asyncio.run(_profile(system, sandbox, sizes))
    finally:
        system.stop_and_settle([sandbox["runtime"]["runtime_id"]])
    small = profile["small_get"]["categories"]
    return {
        "sizes": {"concurrency": sizes["router_concurrency"], "small_requests": sizes["router_small"],
                  "bulk_requests": sizes["router_bulk"], "websocket_round_trips": sizes["router_ws"],
                  "bulk_bytes": MB10},
        **measured,
        "profile": profile,
        "dominant_cost": small[0]["category"] if small else None,
        "notes": [
            "direct: the benchmark client talks to the pod IP; router: the same requests through "
            "`kubehands gateway` (path mode), same sandbox, same client, in the same run.",
            "small GET is the agent server's /alive; bulk and WebSocket cases use a raw-ASGI echo server "
            "started in the sandbox on port work-1 (12000), so they measure the proxy, not the agent server.",
            "gateway_rss_mb: the serving gateway's RSS before the cases and after each (MB): what bulk "
            "transfers leave behind.",
            "profile: a second gateway process under cProfile, own time by package; the epoll wait is idle time "
            "and left out.",
        ],
    }
