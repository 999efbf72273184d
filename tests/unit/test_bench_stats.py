"""The benchmark harness's pure parts: statistics, ratios, result shape, parsing and rendering."""

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import stats, warm
from bench.polling import parse_request_totals, request_delta
from bench.profiles import categorize
from bench.report import render
from bench.start import STAGES, stage_durations


@pytest.mark.parametrize(
    ("samples", "p", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 90, 3.7),
        ([1, 2, 3, 4], 0, 1),
        ([1, 2, 3, 4], 100, 4),
        ([4, 1, 3, 2], 50, 2.5),  # order does not matter
        ([7], 99, 7),
        (list(range(1, 101)), 99, 99.01),
    ],
)
def test_percentile_interpolates_linearly_like_numpy(samples: list[float], p: float, expected: float) -> None:
    assert stats.percentile(samples, p) == pytest.approx(expected)


def test_percentile_rejects_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_summarize_shape_and_values() -> None:
    summary = stats.summarize([10, 20, 30, 40, 50], unit="ms")
    assert set(summary) == {"n", "unit", "median", "p90", "p99", "mean", "min", "max"}
    assert summary["n"] == 5 and summary["median"] == 30 and summary["mean"] == 30
    assert summary["p90"] == pytest.approx(46) and summary["p99"] == pytest.approx(49.6)
    assert (summary["min"], summary["max"], summary["unit"]) == (10, 50, "ms")


def test_summarize_of_nothing_keeps_the_shape() -> None:
    summary = stats.summarize([])
    assert summary["n"] == 0 and summary["median"] is None and summary["p99"] is None


def test_ratio_and_compare() -> None:
    assert stats.ratio(30, 10) == 3
    assert stats.ratio(1, 0) is None and stats.ratio(None, 1) is None
    ours, base = stats.summarize([12, 14, 16]), stats.summarize([10, 10, 10])
    compared = stats.compare(ours, base)
    assert compared["ratio_median"] == pytest.approx(1.4)
    assert compared["overhead_median"] == pytest.approx(4)
    assert compared["overhead_p99"] == pytest.approx(ours["p99"] - 10)
    named = stats.comparison({"a": ours, "b": base}, "a", "b")
    assert (named["ours"], named["baseline"]) == ("a", "b")


def test_throughput() -> None:
    assert stats.throughput(100, 4) == 25
    assert stats.throughput(0, 4) is None and stats.throughput(5, 0) is None


def test_linear_fit_exact_and_noisy() -> None:
    fit = stats.linear_fit([0, 100, 200, 300], [50, 150, 250, 350])
    assert fit["slope"] == pytest.approx(1) and fit["intercept"] == pytest.approx(50) and fit["r2"] == pytest.approx(1)
    noisy = stats.linear_fit([0, 1, 2, 3], [0, 3, 1, 4])
    assert 0 < noisy["r2"] < 1
    assert stats.linear_fit([1], [1])["slope"] is None
    assert stats.linear_fit([2, 2], [1, 3])["slope"] is None


def test_breakdown_shares_add_up() -> None:
    rows = stats.breakdown([("a", [1, 1, 1]), ("b", [3, 3, 3])])
    assert [r["stage"] for r in rows] == ["a", "b"]
    assert math.isclose(sum(r["share"] for r in rows), 1.0)
    assert rows[1]["share"] == pytest.approx(0.75)


def _result() -> dict:
    figures = {"ours": stats.summarize([2, 3]), "base": stats.summarize([1, 1])}
    return {"name": "x", "machine": {}, "versions": {}, "sizes": {}, "started": "now", "seconds": 1.0,
            "figures": figures, "comparisons": {"c": stats.comparison(figures, "ours", "base")}}


def test_validate_result_accepts_the_shape_and_names_what_lacks() -> None:
    assert stats.validate_result(_result()) == []
    broken = _result()
    broken["comparisons"] = {}
    del broken["figures"]["ours"]["p99"]
    problems = stats.validate_result(broken)
    assert "no comparison against a baseline" in problems
    assert any("p99" in p for p in problems)


def test_stage_durations_are_monotonic_and_add_up() -> None:
    sample = {"t0": 100.0, "sandbox_added": 100.05, "pod_added": 100.04, "pod_scheduled": 100.5,
              "pod_running": 101.0, "pod_ready": 104.0, "sandbox_ready": 104.1, "reported_running": 104.3,
              "alive_ok": 104.31}
    rows = stage_durations([sample], STAGES)
    by_stage = {r["stage"]: r["median"] for r in rows}
    assert by_stage["operator: Sandbox → Pod created"] == 0  # seen before its predecessor: clamped
    assert sum(by_stage.values()) == pytest.approx(4310)


def test_apiserver_request_totals_parse_and_delta() -> None:
    before = parse_request_totals(
        '# HELP apiserver_request_total x\n'
        'apiserver_request_total{code="200",component="apiserver",resource="pods",verb="GET"} 10\n'
        'apiserver_request_total{code="200",component="apiserver",resource="pods",verb="WATCH"} 3\n'
    )
    after = parse_request_totals(
        'apiserver_request_total{code="200",component="apiserver",resource="pods",verb="GET"} 30\n'
        'apiserver_request_total{code="200",component="apiserver",resource="pods",verb="WATCH"} 5\n'
        'apiserver_request_total{code="201",component="apiserver",resource="secrets",verb="POST"} 1e+01\n'
    )
    delta = request_delta(before, after, 10.0)
    assert delta["per_second"] == pytest.approx(3.2)
    assert delta["non_watch_per_second"] == pytest.approx(3.0)
    assert delta["by_verb_resource"]["GET pods"] == pytest.approx(2.0)


def test_profile_categories() -> None:
    assert categorize("/x/site-packages/kubehands/api/proxy.py", "proxy_http") == "kubehands router/proxy"
    assert categorize("/x/site-packages/httpcore/_async/connection.py", "x") == "httpx/httpcore"
    assert categorize("/x/site-packages/aiohttp/client.py", "x") == "aiohttp (the router's upstream client)"
    assert categorize("/x/site-packages/kubernetes_asyncio/client/api_client.py", "x") == "kubernetes client"
    assert categorize("~", "<method 'acquire' of '_thread.lock' objects>") == "thread pool hand-offs"
    assert categorize("/work/main/api/kubehands/api/sandboxes.py", "find_session") == "kubehands control API"
    assert categorize("~", "<method 'poll' of 'select.epoll' objects>") == "asyncio event loop + sockets"


def test_report_renders_every_section_present(tmp_path) -> None:
    result = _result() | {"name": "api", "notes": ["a note"], "dominant_cost": "find_session"}
    text = render({"api": result}, {}, tmp_path / "benchmarks.md")
    assert "## 2. Control API" in text and "a note" in text and "×2.50" in text
    assert "## 1. Start latency" not in text


def test_metric_value_reads_one_labelled_sample() -> None:
    text = (
        "# HELP kubehands_pool_ready x\n"
        'kubehands_pool_ready{pool="a"} 2.0\n'
        'kubehands_pool_ready{pool="ab"} 7.0\n'
    )
    assert warm.metric_value(text, "kubehands_pool_ready", {"pool": "a"}) == 2.0
    assert warm.metric_value(text, "kubehands_pool_ready", {"pool": "ab"}) == 7.0
    assert warm.metric_value(text, "kubehands_pool_ready", {"pool": "b"}) is None


def _summary_pod(name: str, namespace: str, at: str, rss: int | None = None) -> dict:
    memory = {"time": at, "workingSetBytes": 300, **({"rssBytes": rss} if rss is not None else {})}
    return {"podRef": {"name": name, "namespace": namespace},
            "containers": [{"name": "sandbox", "memory": memory, "cpu": {"usageNanoCores": 4_000_000}}]}


def test_pod_memory_keeps_only_fresh_figures_of_the_pods_asked_for() -> None:
    summary = {"pods": [_summary_pod("a", "ns", "2026-01-01T00:00:10Z", rss=200),
                        _summary_pod("b", "ns", "2026-01-01T00:00:01Z"),  # taken before `since`
                        _summary_pod("a", "other", "2026-01-01T00:00:10Z"),
                        _summary_pod("c", "ns", "2026-01-01T00:00:10Z")]}
    since = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC).timestamp()
    found = warm.pod_memory(summary, "ns", ["a", "b"], since)
    assert found == {"a": {"rss": 200.0, "working_set": 300.0, "nano_cores": 4_000_000.0}}
    # the kubelet's summary through CRI has no rssBytes: None, not 0
    assert warm.pod_memory({"pods": [_summary_pod("b", "ns", "2026-01-01T00:00:10Z")]}, "ns", ["b"], since)["b"][
        "rss"] is None


def test_cgroup_paths_and_memory_stat() -> None:
    paths = warm.cgroup_memory_stat_paths(Path("/sys/fs/cgroup"), "1-2", "Burstable", "abc")
    assert Path("/sys/fs/cgroup/memory/kubepods/burstable/pod1-2/abc/memory.stat") in paths  # v1, cgroupfs
    assert Path("/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/"
                "cri-containerd-abc.scope/memory.stat") in paths  # v2, systemd
    assert Path("/sys/fs/cgroup/memory/kubepods/pod1-2/abc/memory.stat") in warm.cgroup_memory_stat_paths(
        Path("/sys/fs/cgroup"), "1-2", "Guaranteed", "abc")
    v1 = "cache 10\nrss 20\ntotal_cache 100\ntotal_rss 200\n"
    assert warm.parse_memory_stat(v1) == {"rss": 200.0, "cache": 100.0}
    assert warm.parse_memory_stat("anon 300\nfile 400\n") == {"rss": 300.0, "cache": 400.0}
    assert warm.parse_memory_stat("") == {"rss": None, "cache": None}


def test_target_check() -> None:
    figure = stats.summarize([100.0] * 19 + [900.0])
    assert warm.target_check(figure, 300, 1000, 20)["met"]
    missed = warm.target_check(figure, 300, 500, 21)
    assert not missed["met"] and len(missed["problems"]) == 2
    assert warm.target_check(stats.summarize([]), None, 2000, 1)["problems"] == ["n 0 < 1", "p99 – ms > 2000 ms"]


def _start_sample(t0: float, total: float, **checkpoints: float) -> dict:
    return {"t0": t0, "api_answered": t0 + 0.05, "alive_ok": t0 + total / 1000, "total_ms": total,
            "runtime_id": "kh-x", **checkpoints}


def test_warm_result_has_the_shape_and_renders() -> None:
    claimed = {"claimed_at": 100.01, "init_ready": 100.04, "claimed_current": 100.06, "reported_running": 100.15}
    warm_samples = {"sequential": [_start_sample(100.0, 160, **claimed)] * 2,
                    "burst": [_start_sample(100.0, 300, **claimed)] * 2}
    cold_samples = {"sequential": [_start_sample(100.0, 6000)] * 2, "burst": [_start_sample(100.0, 9000)] * 2}
    pod = {"rss": 300e6, "working_set": 313e6, "cache": 1e5, "nano_cores": 4e6}
    memory = {"dormant": [pod, pod], "claimed": [pod], "cold": [pod | {"nano_cores": None}]}
    timing = {"fill_seconds": 8.0, "refill_seconds": 10.0, "refilled": 2, "cold_burst_seconds": 9.0}
    refill = [{"t0": 100.0, "sandbox_added": 100.2, "pod_added": 100.4, "pod_scheduled": 100.41,
               "pod_running": 101.5, "pod_ready": 109.9, "member_ready": 110.0}]
    body = warm.result(2, 2, warm_samples, cold_samples, [8000.0, 8200.0], refill, memory, timing, 2)
    result = body | {"name": "warm", "machine": {}, "versions": {}, "started": "now", "seconds": 1.0}
    assert stats.validate_result(result) == []
    assert result["comparisons"]["start_sequential"]["ratio_median"] == pytest.approx(160 / 6000)
    assert result["comparisons"]["refill_rate"]["higher_is_better"]
    assert result["figures"]["dormant_pod_rss"]["median"] == pytest.approx(300)
    assert "cold_pod_cpu" not in result["figures"]  # no CPU figure from one kubelet sample: left out, not n 0
    assert not result["targets"]["warm_sequential"]["met"]  # n 2 < 20
    stages = {s["stage"]: s["median"] for s in result["breakdowns"]["warm_sequential"]}
    assert sum(stages.values()) == pytest.approx(160)
    text = render({"warm": result}, {}, Path("/tmp/benchmarks.md"))
    assert "## 1b. Warm start (warm pools)" in text and "Targets:" in text
    assert "warm start, burst of 2 against a pool of 2" in text  # the headline
