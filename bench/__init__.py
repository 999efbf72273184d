"""kubehands benchmarks (`make bench`): start latency, control API, router, scale and polling load.

Every figure is a summary of raw samples (median, p90, p99, n) and every comparison is a ratio
against a baseline measured in the same run. `python -m bench.run [--quick] [--only NAME]`.
"""
