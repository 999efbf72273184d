"""Scale: Paused Sandboxes in steps up to 1,000 (no pods), then N Running ones as the node allows:
reconcile throughput, operator and gateway RSS/CPU, gateway cache memory per 1,000 sandboxes, and
whether the growth is linear."""

import asyncio
import time
import uuid
from typing import Any

import aiohttp

from bench import procstat, stats
from bench.system import System

NAME = "scale"


def _reconciled(system: System, names: set[str]) -> int:
    done = 0
    for item in system.list_sandboxes():
        if item["metadata"]["name"] in names and (item.get("status") or {}).get("phase") == "Paused":
            done += 1
    return done


def _paused_steps(system: System, sizes: dict[str, Any]) -> list[dict[str, Any]]:
    pids = {"gateway": system.gateway.pid, "operator": system.operator.pid}  # type: ignore[union-attr]
    steps: list[dict[str, Any]] = []

    def sample(count: int, **extra: Any) -> dict[str, Any]:
        system.wait(lambda: system.gateway_cached("sandboxes") >= count, 120, f"gateway cache at {count}")
        row: dict[str, Any] = {"sandboxes": count, **extra}
        for name, pid in pids.items():
            mem = procstat.memory(pid)
            row[f"{name}_rss"] = mem["rss"]
            row[f"{name}_cpu_seconds"] = procstat.cpu_seconds(pid)
        return row

    time.sleep(1)
    steps.append(sample(len(system.paused)))
    target, step = sizes["scale_paused"], sizes["scale_step"]
    while len(system.paused) < target:
        count = min(step, target - len(system.paused))
        t0 = time.monotonic()
        made = system.create_paused(count, prefix="scale")
        created = time.monotonic()
        names = {rid for rid, _ in made}
        system.wait(lambda names=names: _reconciled(system, names) == len(names), 300,
                    "the operator to reconcile a step", 0.25)
        reconciled = time.monotonic()
        steps.append(sample(len(system.paused), created=count, create_seconds=created - t0,
                            reconcile_seconds=reconciled - t0))
    return steps


async def _running(system: System, count: int) -> dict[str, Any]:
    """Start `count` sandboxes at once through the API and wait until all report running."""
    gw = system.gateway.url  # type: ignore[union-attr]
    tag = uuid.uuid4().hex[:4]
    t0 = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        async def one(i: int) -> tuple[str, str, float]:
            sid = f"run-{tag}-{i}"
            async with http.post(f"{gw}/start", json=system.start_body(sid), headers=system.headers) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"/start: {r.status} {body}")
            while True:
                async with http.get(f"{gw}/sessions/{sid}", headers=system.headers) as r:
                    status = (await r.json())["status"]
                if status == "running":
                    return body["runtime_id"], sid, time.monotonic() - t0
                if status == "error" or time.monotonic() - t0 > 600:
                    raise RuntimeError(f"{sid} is {status}")
                await asyncio.sleep(1.0)

        done = await asyncio.gather(*(one(i) for i in range(count)))
    return {"runtime_ids": [d[0] for d in done], "ready_after": [d[2] for d in done],
            "seconds": time.monotonic() - t0}


def run(system: System, sizes: dict[str, Any]) -> dict[str, Any]:
    pids = {"gateway": system.gateway.pid, "operator": system.operator.pid}  # type: ignore[union-attr]
    cpu = {name: procstat.CpuWindow(pid).start() for name, pid in pids.items()}
    with procstat.PeakSampler(pids) as paused_peaks:
        steps = _paused_steps(system, sizes)
    paused_cpu = {name: window.stop() for name, window in cpu.items()}

    running_count = sizes["scale_running"]
    cpu = {name: procstat.CpuWindow(pid).start() for name, pid in pids.items()}
    with procstat.PeakSampler(pids) as running_peaks:
        running = asyncio.run(_running(system, running_count))
        time.sleep(2)
    running_cpu = {name: window.stop() for name, window in cpu.items()}
    system.stop_and_settle(running["runtime_ids"])

    grown = [s for s in steps if "reconcile_seconds" in s]
    created_total = sum(s["created"] for s in grown)
    create_seconds = sum(s["create_seconds"] for s in grown)
    reconcile_seconds = sum(s["reconcile_seconds"] for s in grown)
    xs = [s["sandboxes"] for s in steps]
    fits = {f"{name}_rss": stats.linear_fit(xs, [s[f"{name}_rss"] for s in steps]) for name in pids}
    for name in pids:
        fit = fits[f"{name}_rss"]
        fit["bytes_per_1000"] = fit["slope"] * 1000 if fit["slope"] is not None else None
    figures = {
        "created_per_second": stats.rate_figure(stats.throughput(created_total, create_seconds), "1/s"),
        "reconciled_per_second": stats.rate_figure(stats.throughput(created_total, reconcile_seconds), "1/s"),
        "running_ready_seconds": stats.summarize(running["ready_after"], unit="s"),
        "running_per_second": stats.rate_figure(stats.throughput(running_count, running["seconds"]), "1/s"),
    }
    for name in pids:
        first, last = steps[0][f"{name}_rss"], steps[-1][f"{name}_rss"]
        figures[f"{name}_rss_empty_mb"] = stats.rate_figure(first / 1e6, "MB")
        figures[f"{name}_rss_full_mb"] = stats.rate_figure(last / 1e6, "MB")
        figures[f"{name}_peak_rss_mb"] = stats.rate_figure(
            max(paused_peaks.peaks.get(name, 0), running_peaks.peaks.get(name, 0)) / 1e6, "MB")
    comparisons = {
        # reconcile throughput vs the rate the same client creates the objects (1.0: the operator keeps up)
        "reconcile_vs_create_rate": stats.comparison(figures, "reconciled_per_second", "created_per_second", True),
    }
    for name in pids:
        comparisons[f"{name}_rss_full_vs_empty"] = stats.comparison(
            figures, f"{name}_rss_full_mb", f"{name}_rss_empty_mb")
    return {
        "sizes": {"paused": sizes["scale_paused"], "step": sizes["scale_step"], "running": running_count},
        "figures": figures,
        "comparisons": comparisons,
        "steps": steps,
        "fits": fits,
        "cpu": {"paused_phase": paused_cpu, "running_phase": running_cpu},
        "running": running,
        "notes": [
            f"Running sandboxes bounded to {running_count}: this node has {__import__('os').cpu_count()} cores; "
            "each agent server takes ~300 MB RSS and a few CPU-seconds to start.",
            "Paused Sandboxes are created directly (the objects /start writes, with spec.state Paused) by 8 "
            "client threads; reconciled = status.phase Paused written by the operator (a Sandbox created "
            "Paused gets no PVC until it first runs).",
            "gateway cache memory per 1,000 sandboxes = slope of gateway RSS over the sandbox count (least "
            "squares), with R² to judge linearity.",
        ],
    }
