"""`make bench` cannot silently rot: every benchmark runs end to end with tiny sizes (`--quick`) on the
local cluster, and writes a result with figures, a baseline and a ratio."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import ORDER
from bench.stats import validate_result

pytestmark = pytest.mark.node
ROOT = Path(__file__).resolve().parents[2]


# --quick takes ~250 s on 2 cores (start ~45 s: 5 agent-server boots; warm ~150 s: a pool of 2 filled three times
# and 4 cold boots); the rest is headroom for a slower machine, and the subprocess gets less than pytest so its
# stderr is still reported.
@pytest.mark.timeout(720)
def test_every_benchmark_runs_with_tiny_sizes(kubeconfig: str, agent_server_image: str, tmp_path: Path) -> None:
    results, report = tmp_path / "results", tmp_path / "benchmarks.md"
    (tmp_path / "tmp").mkdir()  # its TMPDIR: the logs a failed benchmark keeps, and the gateways' key files
    env = {**os.environ, "KUBECONFIG": kubeconfig, "SANDBOX_IMAGE": agent_server_image, "TMPDIR": str(tmp_path / "tmp")}
    # SIGTERM on timeout, not SIGKILL: bench.run then stops the operator and gateway it started
    with subprocess.Popen(
        [sys.executable, "-m", "bench.run", "--quick", "--results", str(results), "--report", str(report)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as run:
        try:
            _, stderr = run.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            run.terminate()
            _, stderr = run.communicate(timeout=90)
            pytest.fail(f"bench.run --quick took over 600 s:\n{stderr[-6000:]}")
    assert run.returncode == 0, stderr[-6000:]
    for name in ORDER:
        result = json.loads((results / f"{name}.json").read_text())
        assert validate_result(result) == [], (name, validate_result(result))
        assert result["quick"] is True
        for figure in result["figures"].values():
            assert figure["n"] >= 1, (name, figure)
        comparisons = result["comparisons"].values()
        assert any(c["ratio_median"] for c in comparisons), (name, result["comparisons"])
        for c in comparisons:
            # a ratio is undefined only against a zero baseline (an idle gateway can use 0 CPU ticks in 4 s)
            defined = result["figures"][c["baseline"]][c.get("figure", "median")] != 0
            assert (c["ratio_median"] is not None and c["ratio_median"] > 0) == defined, (name, c)
    # warm: every /start of the pool's shape was served from it, and the pool's cost was measured
    warm = json.loads((results / "warm.json").read_text())
    for figure in ("warm_sequential", "cold_sequential", "warm_burst", "cold_burst", "refill_members_per_second",
                   "dormant_pod_working_set", "claimed_pod_working_set", "cold_pod_working_set"):
        assert figure in warm["figures"], figure
    assert warm["figures"]["warm_sequential"]["n"] == warm["sizes"]["sequential"]
    assert set(warm["targets"]) == {"warm_sequential", "warm_burst"}
    text = report.read_text()
    for title in ("Start latency", "Warm start", "Control API", "Router", "Scale", "Polling load"):
        assert title in text
    for plot in ("start-breakdown.png", "scale-rss.png"):
        assert (results / plot).read_bytes().startswith(b"\x89PNG"), plot
