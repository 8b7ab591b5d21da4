"""Benchmarks: `python -m bench` (or `make bench`); see bench/RESULTS.md."""
