"""Benchmarks: each module's `run()` returns rows {name, ours, baseline, unit, ratio, target}."""
