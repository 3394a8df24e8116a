"""Report of a benchmark run (``python -m benchmarks.report``): tables, bars, plots, README summary.

Modules, by concern: :mod:`.runs` (a pytest-benchmark JSON as rows, GEMM peaks
and scaling figures; derived figures), :mod:`.bars` (the speed bars and their
verdicts), :mod:`.tables` and :mod:`.bar_tables` (the markdown of
``report.md``), :mod:`.cautions` (warnings about a run's conditions),
:mod:`.plots` (the PNGs), :mod:`.readme` (README.md's summary),
:mod:`.compare` (two runs side by side), :mod:`.markdown` (number and table
formatting), :mod:`.cli` (the command).
"""
