"""Report of a benchmark run: markdown tables, pass/miss bars and a plot, all from the JSON.

    python -m benchmarks.report [RUN.json] [--compare OLD.json] [--out-dir DIR] [--no-plot] [--no-readme]

RUN.json is what ``pytest benchmarks --benchmark-only --benchmark-json=...``
wrote (default: the newest ``*.json`` in bench_results/). Writes
``report.md``, ``chars_per_second.png`` (batch 1: chars/s against H) and, when
the run has batched rows, ``batched_chars_per_second.png`` (chars/s against
batch size, one panel per H) into the output folder (default bench_results/).
Writing to bench_results/ also rewrites the summary tables in README.md
(between its ``benchmark-summary`` markers). ``--compare OLD.json`` also prints
and writes ``compare.md``: chars/s of OLD (before) and RUN (after) and their ratio.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .bars import BARS, evaluate_bar, measured
from .compare import compare
from .plots import BATCH_PLOT, PLOT, plot, plot_batched
from .readme import README_PATH, update_readme
from .runs import BENCH_RESULTS, load, newest_json
from .tables import render


def main(argv=None):
    """Write the report (and the PNGs, README summary, comparison) and print every bar's verdict; 0."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="pytest-benchmark JSON (default: newest in bench_results/)")
    parser.add_argument("--compare", metavar="OLD.json", help="an earlier run: write a before/after table")
    parser.add_argument("--out-dir", default=str(BENCH_RESULTS), help="where report.md and the PNG go")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    parser.add_argument("--no-readme", action="store_true",
                        help="leave README.md's summary alone (it is only rewritten when --out-dir is bench_results/)")
    args = parser.parse_args(argv)

    run = load(args.run or newest_json())
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_name = None if args.no_plot else PLOT
    batch_plot_name = None
    if plot_name:
        plot(run, out_dir / plot_name)
        if plot_batched(run, out_dir / BATCH_PLOT):
            batch_plot_name = BATCH_PLOT
    report_path = out_dir / "report.md"
    report_path.write_text(render(run, plot_name, batch_plot_name) + "\n")
    written = [str(out_dir / p) for p in (plot_name, batch_plot_name) if p]
    if not args.no_readme and out_dir.resolve() == BENCH_RESULTS.resolve() and update_readme(run):
        written.append(str(README_PATH))
    print(f"wrote {report_path}" + (f" and {', '.join(written)}" if written else ""))
    for bar in BARS:
        value, verdict, why = evaluate_bar(run, bar)
        print(f"  {verdict:<12} {bar.label()}: {measured(bar, value)}" + (f" ({why})" if why else ""))
    if args.compare:
        text = compare(load(args.compare), run)
        (out_dir / "compare.md").write_text(text)
        print(text)
        print(f"wrote {out_dir / 'compare.md'}")
    return 0
