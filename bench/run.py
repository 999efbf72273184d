"""`python -m bench.run [--quick] [--only NAME ...]`: run the benchmarks on the local cluster, write
`bench/results/<name>.json` and regenerate `docs/benchmarks.md`.

The cluster must be running (hack/bench.sh brings it up); KUBECONFIG and SANDBOX_IMAGE come from the
environment or `hack/cluster.sh status`.
"""

import argparse
import importlib
import json
import shutil
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report, stats
from bench.system import ROOT, System, cluster_env, machine_info, versions

# start first and warm right after it: both want a quiet node; scale before router, so the gateway's memory is
# measured before bulk transfers have grown its heap; api and polling reuse scale's Paused Sandboxes
ORDER = ("start", "warm", "scale", "api", "polling", "router")

FULL: dict[str, Any] = {
    "start_sequential": 20, "start_concurrent": 20,
    "warm_sequential": 20, "warm_burst": 10,  # the burst runs against a pool of warm_burst members
    "router_concurrency": [1, 50], "router_small": 500, "router_bulk": 10, "router_ws": 500,
    "router_max_seconds": 30,
    "scale_paused": 1000, "scale_step": 100, "scale_running": 20,
    "api_sandboxes": 1000, "api_concurrency": [1, 10, 50], "api_requests": 500, "api_max_seconds": 20,
    "poll_sandboxes": 200, "poll_seconds": 30,
}
QUICK: dict[str, Any] = {
    "start_sequential": 1, "start_concurrent": 2, "start_warmup": False,
    "warm_sequential": 2, "warm_burst": 2,
    "router_concurrency": [1, 5], "router_small": 20, "router_bulk": 1, "router_ws": 20,
    "router_max_seconds": 10,
    "scale_paused": 20, "scale_step": 10, "scale_running": 1,
    "api_sandboxes": 20, "api_concurrency": [1, 10], "api_requests": 30, "api_max_seconds": 5,
    "poll_sandboxes": 10, "poll_seconds": 4,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test's)")
    parser.add_argument("--only", action="append", choices=ORDER, help="run only this benchmark (repeatable)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks.md",
                        help="the Markdown report to regenerate ('-' for none)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still cleans up (System.__exit__)
    sizes = QUICK if args.quick else FULL
    names = [n for n in ORDER if not args.only or n in args.only]
    env = cluster_env()
    args.results.mkdir(parents=True, exist_ok=True)
    failed = []
    began = time.monotonic()
    with System(kubeconfig=env["KUBECONFIG"], image=env["SANDBOX_IMAGE"],
                max_running=max(100, sizes["start_concurrent"] * 2 + sizes["scale_running"])) as system:
        print(f"bench: namespace {system.namespace}, logs in {system.log_dir}", file=sys.stderr, flush=True)
        info, vers = machine_info(), versions(system.api, system.image)
        for name in names:
            module = importlib.import_module(f"bench.{name}")
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            t0, started = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
            try:
                body = module.run(system, sizes)
            except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
                traceback.print_exc()
                failed.append(name)
                continue
            result = {"name": name, "started": started, "seconds": time.monotonic() - t0, "quick": args.quick,
                      "machine": info, "versions": vers, **body}
            problems = stats.validate_result(result)
            if problems:
                print(f"bench: {name} result is malformed: {problems}", file=sys.stderr)
                failed.append(name)
            (args.results / f"{name}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
            print(f"bench: {name} done in {result['seconds']:.0f}s", file=sys.stderr, flush=True)
    if failed:
        print(f"bench: logs kept in {system.log_dir}", file=sys.stderr)
    else:
        shutil.rmtree(system.log_dir, ignore_errors=True)  # logs matter only when something failed
    if str(args.report) != "-":
        report.write(args.results, args.report)
    print(f"bench: finished in {time.monotonic() - began:.0f}s; failed: {failed or 'none'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
