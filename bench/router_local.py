"""The router without a cluster: the gateway's real ASGI app and proxy (RouterMiddleware, proxy.py, the
router's aiohttp upstream, uvicorn as `kubehands gateway` runs it) in front of the echo server on 127.0.0.1,
vs the echo server directly. Only the Kubernetes-backed parts are stubbed (the cache holds one ready
sandbox whose pod IP is 127.0.0.1). `python -m bench.router_local [--quick]` writes
bench/results/router_local.json; it isolates the proxy's own cost from pod networking.
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from bench import router, stats
from bench.profiled import armed_profiler, profiling
from bench.profiles import summarize_profile
from bench.system import ROOT, free_port, machine_info, start_process, stop_process, versions
from kubehands.api.cli.gateway import serve as serve_like_the_gateway
from kubehands.api.router.connections import SandboxConnections
from kubehands.api.router.upstream import Upstream

RUNTIME_ID = "kh-benchlocal01"


def fake_gateway(upstream_port: int, public_port: int) -> Any:
    from kubehands.api.settings import Settings

    settings = Settings(namespace="bench", public_url=f"http://127.0.0.1:{public_port}")
    sandbox = {
        "metadata": {"name": RUNTIME_ID, "resourceVersion": "1"},
        "spec": {"state": "Running", "ports": [{"name": "agent", "containerPort": upstream_port},
                                               {"name": "work-1", "containerPort": upstream_port}]},
        "status": {"podIP": "127.0.0.1", "podName": "p", "podStatus": "ready", "phase": "Running"},
    }
    http = httpx.AsyncClient(  # as Gateway.open builds it
        timeout=httpx.Timeout(settings.proxy_read_timeout_seconds, connect=settings.proxy_connect_timeout_seconds),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
        follow_redirects=False, trust_env=False)
    return SimpleNamespace(
        settings=settings, http=http, upstream=Upstream(settings),
        caches=SimpleNamespace(sandbox=lambda rid: sandbox if rid == RUNTIME_ID else None,
                               claim_for_runtime=lambda rid: None),
        alive=SimpleNamespace(is_alive=lambda s: True),
        activity=SimpleNamespace(touch=lambda rid: None),
        connections=SandboxConnections(settings.max_connections_per_sandbox),
    )


def serve(port: int, upstream_port: int, profile_to: str | None) -> None:

    from kubehands.api.main import create_app
    from kubehands.api.settings import Settings

    app = create_app(Settings(namespace="bench"))

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        gateway = fake_gateway(upstream_port, port)
        app.state.gateway = gateway
        yield
        await gateway.upstream.close()
        await gateway.http.aclose()

    app.router.lifespan_context = lifespan
    with armed_profiler(profile_to):
        serve_like_the_gateway(app, "127.0.0.1", port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.router_local")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.upstream_port, args.profile_to)
        return 0
    from bench.run import FULL, QUICK

    sizes = QUICK if args.quick else FULL
    logs = Path(tempfile.mkdtemp(prefix="kh-bench-local-"))
    up_port = free_port()
    env = {**os.environ, "BENCH_ECHO_HOST": "127.0.0.1", "BENCH_ECHO_PORT": str(up_port)}
    procs: list[subprocess.Popen[bytes]] = []
    began, started = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    try:
        procs.append(start_process([sys.executable, "-c", router.ECHO_APP], env,
                                   f"http://127.0.0.1:{up_port}/small", logs / "echo.log", timeout=60))

        def gateway(name: str, profile_to: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
            port = free_port()
            argv = [sys.executable, "-m", "bench.router_local", "--serve", str(port), "--upstream-port", str(up_port)]
            if profile_to:
                argv += ["--profile-to", profile_to]
            proc = start_process(argv, env, f"http://127.0.0.1:{port}/{RUNTIME_ID}/work-1/small",
                                 logs / f"{name}.log", timeout=60)
            procs.append(proc)
            return proc, port

        _, port = gateway("gateway")
        sandbox = {"runtime": {"runtime_id": RUNTIME_ID}, "pod_ip": "127.0.0.1"}

        def targets(gw_port: int) -> dict[str, dict[str, str]]:
            direct = f"http://127.0.0.1:{up_port}"
            return {"router": {"small": f"http://127.0.0.1:{gw_port}/{RUNTIME_ID}/work-1/small",
                               "work": f"http://127.0.0.1:{gw_port}/{RUNTIME_ID}/work-1",
                               "ws": f"ws://127.0.0.1:{gw_port}/{RUNTIME_ID}/work-1/ws"},
                    "direct": {"small": f"{direct}/small", "work": direct, "ws": f"ws://127.0.0.1:{up_port}/ws"}}

        original = router._targets
        router._targets = lambda system, sb, url: targets(int(url.rsplit(":", 1)[1]))  # type: ignore[assignment]
        fake_system = SimpleNamespace(gateway=SimpleNamespace(url=f"http://127.0.0.1:{port}"))
        try:
            measured = asyncio.run(router._measure(fake_system, sandbox, sizes))  # type: ignore[arg-type]
            profile = {}
            for case, concurrency in (("small_get", 50), ("download_10mb", 10), ("upload_10mb", 10)):
                prof = str(logs / f"{case}.prof")
                proc, gw_port = gateway(f"profiled-{case}", prof)
                urls = targets(gw_port)["router"]
                payload = b"u" * router.MB10
                with profiling(proc.pid):
                    asyncio.run(router._case(case, urls, concurrency, sizes, payload))
                stop_process(proc)
                procs.remove(proc)
                profile[case] = summarize_profile(prof)
        finally:
            router._targets = original  # type: ignore[assignment]
    finally:
        for proc in procs:
            stop_process(proc)
    small = profile["small_get"]["categories"]
    result = {
        "name": "router_local", "started": started, "seconds": time.monotonic() - began, "quick": args.quick,
        "machine": machine_info(), "versions": versions(None, ""),
        "sizes": {"concurrency": sizes["router_concurrency"], "small_requests": sizes["router_small"],
                  "bulk_requests": sizes["router_bulk"], "websocket_round_trips": sizes["router_ws"]},
        **measured, "profile": profile, "dominant_cost": small[0]["category"] if small else None,
        "notes": ["No cluster: the gateway's real app, router middleware and proxy under uvicorn, with the "
                  "Kubernetes-backed cache stubbed (one ready sandbox at 127.0.0.1); upstream = the echo server "
                  "on 127.0.0.1 (small GET = its /small). direct = the echo server itself."],
    }
    problems = stats.validate_result(result)
    if not problems:
        shutil.rmtree(logs, ignore_errors=True)  # the logs and profiles matter only when something failed
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "router_local.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps({k: v.get("ratio_median") for k, v in result["comparisons"].items()}, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
