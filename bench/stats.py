"""Pure statistics for the benchmarks: percentiles, summaries, ratios, linear fits. No I/O."""

import math
from collections.abc import Iterable, Sequence
from typing import Any

PERCENTILES = (50, 90, 99)


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {p}")
    ordered = sorted(samples)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    fraction = rank - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * fraction)


def summarize(samples: Iterable[float], unit: str = "ms") -> dict[str, Any]:
    """median, p90, p99, mean, min, max and n of `samples` (n 0 gives None for every figure)."""
    values = [float(s) for s in samples]
    if not values:
        return {"n": 0, "unit": unit, "median": None, "p90": None, "p99": None, "mean": None,
                "min": None, "max": None}
    return {
        "n": len(values),
        "unit": unit,
        "median": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
    }


def ratio(ours: float | None, baseline: float | None) -> float | None:
    """ours / baseline; None when either is missing or the baseline is zero."""
    if ours is None or baseline is None or baseline == 0:
        return None
    return ours / baseline


def compare(ours: dict[str, Any], baseline: dict[str, Any], higher_is_better: bool = False) -> dict[str, Any]:
    """Compare two summaries: ratio of medians and p99s (ours / baseline) and the absolute overhead."""
    out: dict[str, Any] = {
        "ratio_median": ratio(ours.get("median"), baseline.get("median")),
        "ratio_p99": ratio(ours.get("p99"), baseline.get("p99")),
        "higher_is_better": higher_is_better,
    }
    for figure in ("median", "p90", "p99"):
        a, b = ours.get(figure), baseline.get(figure)
        out[f"overhead_{figure}"] = None if a is None or b is None else a - b
    return out


def throughput(count: int, seconds: float) -> float | None:
    """Operations per second; None for an empty or zero-length window."""
    return count / seconds if seconds > 0 and count > 0 else None


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float | None]:
    """Least-squares line y = slope*x + intercept and its R² (1 = perfectly linear)."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    n = len(xs)
    if n < 2:
        return {"slope": None, "intercept": None, "r2": None}
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return {"slope": None, "intercept": None, "r2": None}
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 if ss_tot == 0 else 1 - ss_res / ss_tot
    return {"slope": slope, "intercept": intercept, "r2": r2}


def breakdown(stages: Sequence[tuple[str, Sequence[float]]]) -> list[dict[str, Any]]:
    """Per-stage summaries of durations, with each stage's share of the summed medians."""
    summaries = [(name, summarize(values)) for name, values in stages]
    total = sum(s["median"] or 0.0 for _, s in summaries)
    return [
        {"stage": name, **s, "share": (s["median"] or 0.0) / total if total else None}
        for name, s in summaries
    ]


def validate_result(result: dict[str, Any]) -> list[str]:
    """Problems with a benchmark result's shape (empty list: fine). Used by the smoke test and run.py."""
    problems = []
    for key in ("name", "machine", "versions", "sizes", "figures", "comparisons", "started", "seconds"):
        if key not in result:
            problems.append(f"missing {key!r}")
    for name, figure in (result.get("figures") or {}).items():
        for key in ("n", "median", "p90", "p99"):
            if key not in figure:
                problems.append(f"figure {name!r} lacks {key!r}")
    comparisons = result.get("comparisons") or {}
    if not comparisons:
        problems.append("no comparison against a baseline")
    for name, comp in comparisons.items():
        for key in ("ours", "baseline", "ratio_median"):
            if key not in comp:
                problems.append(f"comparison {name!r} lacks {key!r}")
    return problems


def comparison(
    figures: dict[str, dict[str, Any]], ours: str, baseline: str, higher_is_better: bool = False
) -> dict[str, Any]:
    """A named comparison of two entries of `figures`: which is ours, which the baseline, the ratios."""
    return {"ours": ours, "baseline": baseline,
            **compare(figures[ours], figures[baseline], higher_is_better=higher_is_better)}


def rate_figure(value: float | None, unit: str) -> dict[str, Any]:
    """A single measured rate (one sample: a whole window) in the figure shape."""
    return {"n": 1 if value is not None else 0, "unit": unit, "median": value, "p90": value, "p99": value,
            "mean": value, "min": value, "max": value}
