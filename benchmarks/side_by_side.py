"""fastrnn beside PyTorch on the issue's stacks, the two sides alternated round by round in one process.

    python -m benchmarks.side_by_side [--rounds 5] [--threads 1 2] [--points NAME ...] [--out-dir DIR]

Each point (cell, layers, H, B, T, dtype) at each thread count builds the
``cells`` group's two callables (:func:`benchmarks.test_cells._trainer`'s
``Trainer.train`` and :class:`benchmarks.test_cells.TorchSteps`: same model,
Adam, clip by norm 5, same windows), each in a process of its own, warms both,
then times them alternately, ``--rounds`` times each, the side that goes first
swapping every round. The
run's GEMM peak of each dtype and thread count (a 2048^3 product, best of 3) is
timed in the same run. Writes ``side_by_side.json`` (every round's seconds, the
machine: CPU model, ISA flags, BLAS kernel) and ``side_by_side.md`` (median
chars/s of each side, their ratio, and fastrnn's fraction of the GEMM peak).
Ratios compare sides of one run only. Unset OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE in the command (``env -u ...``) to time the BLAS users get.

A run written to ``bench_results/`` also rewrites the README's side-by-side
table; ``--readme-only`` rewrites it from the ``side_by_side.json`` already in
``--out-dir``, timing nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from ._support import cell_train_flops_per_char, pinned_threads
from .quality import machine
from .report.readme import README_PATH, replace_between
from .test_gemm import MATRIX_SIZE

#: name: (cell, layers, H, B, T, steps per timed call, dtype)
POINTS = {
    "lstm2x512": ("lstm", 2, 512, 32, 64, 1, "float32"),
    "lstm2x256": ("lstm", 2, 256, 32, 64, 2, "float32"),
    "lstm2x128": ("lstm", 2, 128, 50, 50, 4, "float32"),
    "gru2x512": ("gru", 2, 512, 32, 64, 1, "float32"),
    "lstm2x128-f64": ("lstm", 2, 128, 50, 50, 4, "float64"),
}
PAUSE_SECONDS = 0.3  # before each timed call: the other side's threads stop spinning
BENCH_RESULTS = Path(__file__).resolve().parent.parent / "bench_results"


def gemm_peak(dtype: str, threads: int, n: int = MATRIX_SIZE) -> float:
    """GFLOP/s of the best of 3 (n, n) @ (n, n) products at ``threads`` threads."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)).astype(dtype), rng.standard_normal((n, n)).astype(dtype)
    with pinned_threads(threads):
        np.dot(a, b)
        best = min(_seconds(lambda: np.dot(a, b)) for _ in range(3))
    return 2 * n ** 3 / best / 1e9


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _worker(side, name, threads, sizes, conn):
    """One side of a point in a process of its own: build and warm it, then one timed call per message."""
    cell, layers, H, B, T, steps, dtype = POINTS[name]
    if sizes:
        H, B, T = sizes
    with pinned_threads(threads):
        if side == "fastrnn":
            from .test_cells import _trainer
            trainer = _trainer(cell, layers, H, B, T, threads, dtype)

            def call():
                trainer.train(steps)
        else:
            import torch

            from .test_cells import TorchSteps
            torch.set_num_threads(threads)
            call = TorchSteps(cell, layers, H, B, T, steps, dtype)
        call()  # warm up: compiled kernels, oneDNN primitives, caches
        conn.send("ready")
        while conn.recv() == "go":
            conn.send(_seconds(call))


def measure(name: str, threads: int, rounds: int, sizes=None) -> dict:
    """One point at ``threads``: both sides' seconds per call, alternated, and their medians' chars/s.

    Each side runs in a process of its own (two OpenMP runtimes in one process would spin against each
    other), the other side idle meanwhile, with a pause between calls for spinning threads to park."""
    import multiprocessing

    from fastrnn.corpus import load_corpus

    cell, layers, H, B, T, steps, dtype = POINTS[name]
    if sizes:
        H, B, T = sizes
    context = multiprocessing.get_context("spawn")
    workers, conns = {}, {}
    try:
        for side in ("fastrnn", "pytorch"):
            conns[side], theirs = context.Pipe()
            workers[side] = context.Process(target=_worker, args=(side, name, threads, sizes, theirs), daemon=True)
            workers[side].start()
            if conns[side].recv() != "ready":
                raise RuntimeError(f"the {side} worker did not start")
        seconds, order = {side: [] for side in workers}, []
        for r in range(rounds):
            for side in (("fastrnn", "pytorch") if r % 2 == 0 else ("pytorch", "fastrnn")):
                time.sleep(PAUSE_SECONDS)
                conns[side].send("go")
                seconds[side].append(conns[side].recv())
                order.append(side)
    finally:
        for side, conn in conns.items():
            conn.send("stop")
            workers[side].join(timeout=60)
    chars = steps * B * T
    median = {side: chars / statistics.median(s) for side, s in seconds.items()}
    vocab_size = len(load_corpus(None).vocab)
    return dict(point=name, cell=cell, num_layers=layers, hidden_size=H, batch_size=B, seq_length=T,
                steps_per_call=steps, dtype=dtype, threads=threads, seconds=seconds, order=order,
                chars_per_call=chars, chars_per_second=median, ratio=median["fastrnn"] / median["pytorch"],
                flops_per_char=cell_train_flops_per_char(cell, layers, H, vocab_size))


README_START = "<!-- side-by-side:start (written by python -m benchmarks.side_by_side; do not edit) -->"
README_END = "<!-- side-by-side:end -->"


def table(run: dict) -> str:
    """The markdown table of a run: one row per point and thread count."""
    when = f"; run on {run['date']}" if run.get("date") else ""
    lines = [f"CPU: {run['machine']['cpu']}; ISA: {' '.join(run['machine']['isa'])}; BLAS: "
             + ", ".join(f"{b['library']} {b['architecture']}" for b in run["machine"]["blas"])
             + f"; OPENBLAS env: {run['machine']['openblas_env'] or 'unset'}; {run['rounds']} rounds alternated"
             + f"{when}.",
             "", "| point | threads | fastrnn chars/s | PyTorch chars/s | x PyTorch | fastrnn % of GEMM peak |",
             "|---|---|---|---|---|---|"]
    for row in run["results"]:
        peak = run["gemm_peak_gflops"][f"{row['dtype']}-{row['threads']}"]
        fraction = row["chars_per_second"]["fastrnn"] * row["flops_per_char"] / 1e9 / peak
        lines.append(f"| {row['point']} B{row['batch_size']} T{row['seq_length']} {row['dtype']} | {row['threads']} "
                     f"| {row['chars_per_second']['fastrnn']:,.0f} | {row['chars_per_second']['pytorch']:,.0f} "
                     f"| {row['ratio']:.2f} | {100 * fraction:.0f} % |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.side_by_side", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--points", nargs="+", choices=sorted(POINTS), default=list(POINTS))
    parser.add_argument("--sizes", type=int, nargs=3, metavar=("H", "B", "T"), help="override (a smoke run)")
    parser.add_argument("--out-dir", default=str(BENCH_RESULTS))
    parser.add_argument("--readme-only", action="store_true",
                        help="rewrite the README's table from the run in --out-dir; time nothing")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    if args.readme_only:
        run = json.loads((out_dir / "side_by_side.json").read_text())
        if not replace_between(README_PATH, README_START, README_END, table(run)):
            raise SystemExit(f"no side-by-side markers in {README_PATH}")
        return 0
    run = dict(machine=machine(), date=time.strftime("%Y-%m-%d"), rounds=args.rounds, gemm_peak_gflops={},
               results=[])
    for dtype in sorted({POINTS[p][-1] for p in args.points}):
        for threads in args.threads:
            run["gemm_peak_gflops"][f"{dtype}-{threads}"] = gemm_peak(dtype, threads)
    for name in args.points:
        for threads in args.threads:
            row = measure(name, threads, args.rounds, args.sizes)
            run["results"].append(row)
            print(f"{name} threads={threads}: x{row['ratio']:.2f} PyTorch", flush=True)
    write_run(out_dir, "side_by_side", run, table(run))
    if out_dir.resolve() == BENCH_RESULTS.resolve():
        replace_between(README_PATH, README_START, README_END, table(run))
    return 0


def write_run(out_dir: Path, name: str, run: dict, text: str):
    """``NAME.json`` (the run) and ``NAME.md`` (``text``) in ``out_dir``; ``text`` printed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(run, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
