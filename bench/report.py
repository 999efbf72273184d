"""Render `docs/benchmarks.md` (and PNG plots when matplotlib is installed) from bench/results/*.json.

`python -m bench.report [--results DIR] [--out FILE]`; `python -m bench.run` calls it at the end.
"""

import argparse
import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TITLES = {
    "start": "1. Start latency",
    "warm": "1b. Warm start (warm pools)",
    "api": "2. Control API",
    "router": "3. Router",
    "router_local": "3b. Router without a cluster (the proxy's own cost, `python -m bench.router_local`)",
    "scale": "4. Scale",
    "polling": "5. Polling load",
}
ANCHORS = """Numbers to beat (anchors §4): agent-sandbox warm claims under 1 s (worst 0.752 s in its sample run;
targets 200 → 50 ms) and its Go router at ~5,000 req/s @10 concurrent in-process (p50 1.2 ms, p99 7.8 ms);
JupyterHub pod starts of 2–3 s on a fast cluster; OpenHands clients poll every 2 s and give `/start` a
300 s init budget; the OpenHands agent server cold-starts in ~6 s under plain Docker."""


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"×{value:.2f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def figures_table(figures: dict[str, Any]) -> list[str]:
    rows = []
    for name, f in figures.items():
        extra = []
        if f.get("rps") is not None:
            extra.append(f"{f['rps']:.0f} req/s")
        if f.get("mb_per_s") is not None:
            extra.append(f"{f['mb_per_s']:.0f} MB/s")
        if f.get("errors"):
            extra.append(f"{f['errors']} errors")
        rows.append([f"`{name}`", str(f.get("n")), fmt(f.get("median")), fmt(f.get("p90")), fmt(f.get("p99")),
                     f.get("unit", ""), ", ".join(extra)])
    return table(["figure", "n", "median", "p90", "p99", "unit", "throughput"], rows)


def comparisons_table(comparisons: dict[str, Any], figures: dict[str, Any]) -> list[str]:
    rows = []
    for name, c in comparisons.items():
        unit = (figures.get(c["ours"]) or {}).get("unit", "")
        if c.get("figure") == "rps":
            rows.append([f"`{name}`", f"`{c['ours']}` / `{c['baseline']}` (req/s)",
                         fmt_ratio(c.get("ratio_median")), "–", "–", "–"])
            continue
        rows.append([f"`{name}`", f"`{c['ours']}` / `{c['baseline']}`", fmt_ratio(c.get("ratio_median")),
                     fmt_ratio(c.get("ratio_p99")), fmt(c.get("overhead_median"), unit),
                     fmt(c.get("overhead_p99"), unit)])
    return table(["comparison", "ours / baseline", "ratio (median)", "ratio (p99)", "overhead (median)",
                  "overhead (p99)"], rows)


def breakdown_table(stages: list[dict[str, Any]]) -> list[str]:
    rows = [[s["stage"], str(s["n"]), fmt(s["median"]), fmt(s["p90"]), fmt(s["p99"]),
             "–" if s.get("share") is None else f"{s['share'] * 100:.0f}%"] for s in stages]
    return table(["stage", "n", "median ms", "p90 ms", "p99 ms", "share of median sum"], rows)


def profile_section(name: str, profile: dict[str, Any]) -> list[str]:
    out = [f"Profile `{name}` (cProfile, {profile['busy_seconds']:.1f} s busy; the epoll wait is left out):", ""]
    out += table(["category", "own time s", "share"],
                 [[c["category"], fmt(c["seconds"]), "–" if c["share"] is None else f"{c['share'] * 100:.0f}%"]
                  for c in profile["categories"][:8]])
    out += table(["function", "calls", "own s", "cumulative s"],
                 [[f"`{t['function']}`", str(t["calls"]), fmt(t["tottime"]), fmt(t["cumtime"])]
                  for t in profile["top"][:10]])
    return out


def plots(results: dict[str, dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """PNG plots when matplotlib is importable; {} otherwise."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    made: dict[str, Path] = {}
    start = results.get("start")
    if start:
        # one panel per mode (6 s and 80 s scales); a stage keeps its colour across bars and panels
        fig, axes = plt.subplots(2, 1, figsize=(9, 4.8))
        colours: dict[str, Any] = {}
        palette = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
        for ax, mode in zip(axes, ("sequential", "concurrent"), strict=True):
            for who in ("bare", "ours"):
                left = 0.0
                for s in start["breakdowns"].get(f"{who}_{mode}") or []:
                    stage = s["stage"].split(": ", 1)[-1]  # "Pod created → scheduled": shared by ours and bare
                    new = stage not in colours
                    colour = colours.setdefault(stage, palette[len(colours) % len(palette)])
                    width = s["median"] or 0.0
                    ax.barh(who, width, left=left, color=colour, label=stage if new else None)
                    left += width
            ax.set_title(f"{mode} (median per stage, ms)", fontsize=9)
        fig.legend(fontsize=7, loc="lower center", ncol=3)
        fig.tight_layout(rect=(0, 0.2, 1, 1))
        made["start"] = out_dir / "start-breakdown.png"
        fig.savefig(made["start"], dpi=110)
        plt.close(fig)
    scale = results.get("scale")
    if scale:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        xs = [s["sandboxes"] for s in scale["steps"]]
        for name in ("gateway", "operator"):
            ax.plot(xs, [s[f"{name}_rss"] / 1e6 for s in scale["steps"]], marker="o", label=f"{name} RSS")
        ax.set_xlabel("Paused Sandboxes")
        ax.set_ylabel("MB")
        ax.legend()
        fig.tight_layout()
        made["scale"] = out_dir / "scale-rss.png"
        fig.savefig(made["scale"], dpi=110)
        plt.close(fig)
    return made


def headline(results: dict[str, dict[str, Any]]) -> list[str]:
    rows: list[list[str]] = []

    def add(what: str, bench: str, figure: str, comparison: str | None, key: str = "median", unit: str = "") -> None:
        r = results.get(bench)
        if not r or figure not in r["figures"]:
            return
        f = r["figures"][figure]
        c = r["comparisons"].get(comparison or "", {})
        base = r["figures"].get(c.get("baseline", ""), {})
        rows.append([what, fmt(f.get(key), unit or f.get("unit", "")), fmt(f.get("p99"), unit or f.get("unit", "")),
                     str(f.get("n")), f"`{c.get('baseline', '–')}` {fmt(base.get(key))}",
                     fmt_ratio(c.get("ratio_median"))])

    add("start, sequential (POST /start → running + /alive)", "start", "ours_sequential", "start_sequential")
    add("start, concurrent", "start", "ours_concurrent", "start_concurrent")
    warm = results.get("warm")
    burst = f"burst of {warm['sizes']['burst']} against a pool of {warm['sizes']['pool']}" if warm else ""
    add("warm start, sequential (POST /start from a full pool → running + /alive)", "warm", "warm_sequential",
        "start_sequential")
    add(f"warm start, {burst}", "warm", "warm_burst", "start_burst")
    add("warm pool refill after the burst (members per second)", "warm", "refill_members_per_second", "refill_rate")
    add("dormant pool member's memory (RSS)", "warm", "dormant_pod_rss", "dormant_rss")
    if warm and "dormant_pod_rss" not in warm["figures"]:  # no cgroup files on the host that ran it
        add("dormant pool member's memory (working set)", "warm", "dormant_pod_working_set", "dormant_working_set")
    for c in (1, 10, 50):
        add(f"GET /sessions/{{id}}, {c} clients", "api", f"get_session_c{c}", f"get_session_c{c}")
        add(f"GET /sessions/batch (50 ids), {c} clients", "api", f"batch_50_c{c}", f"batch_50_c{c}")
    for c in (1, 50):
        add(f"router small GET, {c} clients", "router", f"small_get_router_c{c}", f"small_get_c{c}")
        add(f"router WebSocket round trip, {c} clients", "router", f"websocket_round_trip_router_c{c}",
            f"websocket_round_trip_c{c}")
    for c in (1, 50):
        add(f"router small GET, {c} clients, no cluster (127.0.0.1 upstream)", "router_local",
            f"small_get_router_c{c}", f"small_get_c{c}")
        add(f"router 10 MB download, {c} clients, no cluster", "router_local", f"download_10mb_router_c{c}",
            f"download_10mb_c{c}")
    add("reconciled Sandboxes per second", "scale", "reconciled_per_second", "reconcile_vs_create_rate")
    add("API server requests/s while polling", "polling", "apiserver_rps_polling", "apiserver_requests")
    add("gateway CPU while polling (cores)", "polling", "gateway_cores_polling", "gateway_cpu")
    if not rows:
        return []
    return ["## Headline", ""] + table(["figure", "median", "p99", "n", "baseline (median)", "ratio"], rows)


def render(results: dict[str, dict[str, Any]], images: dict[str, Path], out: Path) -> str:
    lines = ["# Benchmarks", "",
             "Generated by `make bench` (`hack/bench.sh` → `python -m bench.run`; `python -m bench.report` "
             "re-renders this page from `bench/results/*.json`). Do not edit by hand.", "",
             "Every figure is a median with p90/p99 and its number of samples; every comparison is a ratio "
             "against a baseline measured in the same run (absolute times on a shared machine drift).", "",
             ANCHORS, ""]
    any_result = next(iter(results.values()), None)
    if any_result:
        m, v = any_result["machine"], any_result["versions"]
        lines += [f"Machine: {m.get('cpus')} × {m.get('cpu_model') or 'CPU'}, "
                  f"{(m.get('memory_bytes') or 0) / 2**30:.0f} GiB, Linux {m.get('kernel')}, Python {m.get('python')}; "
                  f"Kubernetes {v.get('kubernetes')}, kubehands {v.get('kubehands')} ({v.get('git_commit')}), "
                  f"uvicorn {v.get('uvicorn')}, fastapi {v.get('fastapi')}, image `{v.get('sandbox_image')}`.", ""]
        quick = [TITLES[n] for n, r in results.items() if r.get("quick")]
        if quick:
            lines += [f"**From a `--quick` run (tiny sizes), not representative: {', '.join(quick)}.**", ""]
    lines += headline(results)
    dominant = [(TITLES[n], r.get("dominant_cost")) for n, r in results.items() if r.get("dominant_cost")]
    if dominant:
        lines += ["Dominant cost per benchmark (evidence below):", ""]
        lines += [f"- {title}: {cost}" for title, cost in dominant] + [""]
    for name in TITLES:
        r = results.get(name)
        if not r:
            continue
        lines += [f"## {TITLES[name]}", "",
                  f"Run {r['started']}, {r['seconds']:.0f} s; sizes: `{json.dumps(r['sizes'])}`."
                  + (" **Quick run (tiny sizes): not representative.**" if r.get("quick") else ""), ""]
        lines += [f"- {n}" for n in r.get("notes", [])] + [""]
        if name in images:
            lines += [f"![{name}]({os.path.relpath(images[name], out.parent)})", ""]
        lines += ["Comparisons:", ""] + comparisons_table(r["comparisons"], r["figures"])
        lines += ["Figures:", ""] + figures_table(r["figures"])
        if r.get("targets"):
            lines += ["Targets:", ""] + table(
                ["figure", "median ≤", "p99 ≤", "n ≥", "median", "p99", "n", "met"],
                [[f"`{k}`", fmt(t["median_max"], "ms"), fmt(t["p99_max"], "ms"), str(t["min_n"]),
                  fmt(r["figures"][k]["median"], "ms"), fmt(r["figures"][k]["p99"], "ms"), str(r["figures"][k]["n"]),
                  "yes" if t["met"] else "no"] for k, t in r["targets"].items()])
        for key, stages in (r.get("breakdowns") or {}).items():
            lines += [f"Breakdown `{key}`:", ""] + breakdown_table(stages)
        for key, profile in (r.get("profile") or {}).items():
            lines += profile_section(key, profile)
        if name == "scale":
            lines += ["Steps:", ""] + table(
                ["sandboxes", "gateway RSS MB", "operator RSS MB", "reconcile s (step)"],
                [[str(s["sandboxes"]), fmt(s["gateway_rss"] / 1e6), fmt(s["operator_rss"] / 1e6),
                  fmt(s.get("reconcile_seconds"))] for s in r["steps"]])
            lines += ["Linear fits (RSS over sandbox count):", ""] + table(
                ["process", "bytes per 1,000 sandboxes", "R²"],
                [[k, fmt((f.get("bytes_per_1000") or 0) / 1e6, "MB"), fmt(f.get("r2"))] for k, f in r["fits"].items()])
        if r.get("gateway_rss_mb"):
            lines += ["Gateway RSS (MB) before the cases and after each:", ""] + table(
                ["after", "MB"], [[k, fmt(v)] for k, v in r["gateway_rss_mb"].items()])
        if name == "polling":
            for window in ("idle", "polling"):
                top = list(r["apiserver"][window]["by_verb_resource"].items())[:8]
                lines += [f"API server requests/s by verb and resource, {window} window:", ""]
                lines += table(["verb resource", "req/s"], [[k, fmt(v)] for k, v in top])
    return "\n".join(lines).rstrip() + "\n"


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for name in TITLES:
        path = results_dir / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


def write(results_dir: Path, out: Path) -> None:
    results = load_results(results_dir)
    images = plots(results, results_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results, images, out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    write(args.results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
