"""fastrnn's benchmark suite (pytest-benchmark) and its report generator.

Run from the repository root: ``pytest benchmarks --benchmark-only
--benchmark-json=bench_results/latest.json`` then ``python -m benchmarks.report``.
See bench_results/README.md.
"""
