"""The project's speed bars and their verdicts: PASS, MISS or NOT MEASURED, each from one run."""
from __future__ import annotations

from dataclasses import dataclass

from .markdown import percent, threads_label, times
from .runs import BATCH_KIND, fraction_of_peak


@dataclass(frozen=True)
class Bar:
    """``implementation``/``dtype`` must be >= ``factor`` x ``baseline``/``baseline_dtype`` at H.

    Both at the same kind, batch size and thread count, except that
    ``baseline_threads`` (when given) sets the baseline's thread count: the
    2-thread vs 1-thread bars.
    """

    implementation: str
    dtype: str
    baseline: str
    baseline_dtype: str
    hidden_size: int
    factor: float
    kind: str = "train_step"
    batch_size: int = 1
    threads: int = 1
    baseline_threads: int | None = None
    group: str = "seed"

    @property
    def base_threads(self):
        return self.threads if self.baseline_threads is None else self.baseline_threads

    def label(self):
        t = threads_label
        if self.base_threads != self.threads:
            return (f"{self.implementation} {self.dtype} {t(self.threads)} >= {self.factor:g}x "
                    f"{t(self.base_threads)}, H={self.hidden_size}, B={self.batch_size}")
        return (f"{self.implementation} {self.dtype} >= {self.factor:g}x {self.baseline} "
                f"{self.baseline_dtype}, H={self.hidden_size}, B={self.batch_size}, {t(self.threads)}")

    def required(self):
        return f">= {self.factor:g}x"


@dataclass(frozen=True)
class PeakBar:
    """``implementation``/``dtype`` must reach ``fraction`` of the GEMM peak (same dtype and threads, same run)."""

    implementation: str
    dtype: str
    hidden_size: int
    fraction: float
    kind: str = "train_step"
    batch_size: int = 1
    threads: int = 1
    group: str = "seed"

    def label(self):
        return (f"{self.implementation} {self.dtype} >= {100 * self.fraction:g} % of the {self.dtype} GEMM peak, "
                f"H={self.hidden_size}, B={self.batch_size}, {threads_label(self.threads)}")

    def required(self):
        return f">= {100 * self.fraction:g} %"


@dataclass(frozen=True)
class CellBar:
    """fastrnn's chars/s must be >= ``factor`` x PyTorch's on the same LSTM/GRU stack (group ``cells``).

    Same cell, layers, H, B, T, dtype and thread count, same run.
    """

    cell: str
    num_layers: int
    hidden_size: int
    batch_size: int
    seq_length: int
    dtype: str
    threads: int
    factor: float
    implementation: str = "fastrnn"
    baseline: str = "pytorch"
    group: str = "cells"

    @property
    def point(self):
        return (self.cell, self.num_layers, self.hidden_size, self.batch_size, self.seq_length, self.dtype,
                self.threads)

    def label(self):
        return (f"{self.implementation} {self.cell} {self.num_layers}x{self.hidden_size} {self.dtype} >= "
                f"{self.factor:g}x {self.baseline}, B={self.batch_size}, T={self.seq_length}, "
                f"{threads_label(self.threads)}")

    def required(self):
        return f">= {self.factor:g}x"


#: Batch 1, one thread, same run: the seed's training step (``fastrnn.train_step`` with a
#: workspace) against the numpy reference twin and against PyTorch (``benchmarks/test_train_step.py``,
#: ``benchmarks/test_torch.py``).
SEED_BARS = (
    Bar("numba", "float64", "reference", "float64", 100, 15),
    Bar("numba", "float64", "reference", "float64", 256, 8),
    Bar("numba", "float64", "reference", "float64", 512, 8),
    Bar("numba", "float32", "reference", "float64", 100, 30),
    Bar("numba", "float64", "pytorch", "float64", 100, 10),
)

#: Batched training, 1 and 2 threads, on the batched rows (``benchmarks/test_batched.py``), same run:
#: (a) B=32, H=512, float64, 1 thread >= 75 % of the float64 GEMM peak;
#: (b) 2 threads >= 1.8x 1 thread at B=32 and 128: every H (100, 512) and dtype;
#: (c) faster than PyTorch (>= 1x, same dtype, B, threads) at every H in {100, 512} x
#:     B in {1, 32, 128}, both dtypes, 1 and 2 threads;
#: (d) >= 2x PyTorch at B=128, H=100, float32: at 1 and at 2 threads;
#: (e) >= 1.2x PyTorch at B=128, H=512, float32, 2 threads.
BATCHED_BARS = (
    PeakBar("numba", "float64", 512, 0.75, kind=BATCH_KIND, batch_size=32, threads=1, group="batched"),
    *(Bar("numba", dtype, "numba", dtype, H, 1.8, kind=BATCH_KIND, batch_size=B, threads=2,
          baseline_threads=1, group="batched")
      for H in (100, 512) for B in (32, 128) for dtype in ("float64", "float32")),
    *(Bar("numba", dtype, "pytorch", dtype, H, 1.0, kind=BATCH_KIND, batch_size=B, threads=t, group="batched")
      for H in (100, 512) for B in (1, 32, 128) for dtype in ("float64", "float32") for t in (1, 2)),
    *(Bar("numba", "float32", "pytorch", "float32", 100, 2.0, kind=BATCH_KIND, batch_size=128, threads=t,
          group="batched") for t in (1, 2)),
    Bar("numba", "float32", "pytorch", "float32", 512, 1.2, kind=BATCH_KIND, batch_size=128, threads=2,
        group="batched"),
)

#: Batch 1, one thread, same run: the seed's public API as a port of min-char-rnn calls it
#: (``fastrnn.loss_and_grads`` with no workspace, one call per sequence, float64: the
#: ``numba-api`` rows of ``benchmarks/test_forward_backward.py``) against the reference's lossFun.
SEED_API_BARS = tuple(
    Bar("numba-api", "float64", "reference", "float64", H, factor, kind="forward_backward", group="seed-api")
    for H, factor in ((100, 5), (256, 4), (512, 4)))

#: LSTM/GRU stacks (``benchmarks/test_cells.py``), a training step of fastrnn's Trainer against
#: the same model in PyTorch, float32, 2 threads, same run.
CELL_BARS = (
    CellBar("lstm", 2, 128, 50, 50, "float32", 2, 2.0),
    CellBar("lstm", 2, 512, 32, 64, "float32", 2, 1.2),
    CellBar("gru", 2, 512, 32, 64, "float32", 2, 1.5),
)

BARS = SEED_BARS + SEED_API_BARS + BATCHED_BARS + CELL_BARS

#: Bar group -> the title of its table in the report, in report order.
BAR_GROUPS = {
    "seed": "batch 1, one thread: the seed's step against the numpy reference and PyTorch, same run",
    "seed-api": "batch 1, one thread, forward + BPTT: the seed's public API without a workspace "
                "against the numpy reference, same run",
    "batched": "batched training, 1 and 2 threads, same run",
    "cells": "LSTM and GRU stacks, training step: fastrnn against PyTorch on the same model, same run",
}


def evaluate_bar(run, bar):
    """(measured factor or fraction, or None; "PASS" / "MISS" / "NOT MEASURED"; why-not-measured)."""
    if isinstance(bar, CellBar):
        return _evaluate_cell_bar(run, bar)
    row = run.find(bar.kind, bar.implementation, bar.dtype, bar.batch_size, bar.threads, bar.hidden_size)
    if isinstance(bar, PeakBar):
        if row is None:
            return None, "NOT MEASURED", f"no {bar.implementation} {bar.dtype} row in this run"
        frac = fraction_of_peak(run, row)
        if frac is None:
            return None, "NOT MEASURED", f"no {bar.dtype} GEMM at {bar.threads} thread(s) in this run"
        return frac, ("PASS" if frac >= bar.fraction else "MISS"), ""
    base = run.find(bar.kind, bar.baseline, bar.baseline_dtype, bar.batch_size, bar.base_threads,
                    bar.hidden_size)
    if row is None or base is None:
        missing = [f"{i} {d} ({threads_label(t)})"
                   for r, i, d, t in ((row, bar.implementation, bar.dtype, bar.threads),
                                      (base, bar.baseline, bar.baseline_dtype, bar.base_threads)) if r is None]
        return None, "NOT MEASURED", f"no {' and no '.join(missing)} row in this run"
    factor = row.chars_per_second / base.chars_per_second
    return factor, ("PASS" if factor >= bar.factor else "MISS"), ""


def _evaluate_cell_bar(run, bar):
    rows = {name: run.find_cell(name, bar.point) for name in (bar.implementation, bar.baseline)}
    missing = [name for name, row in rows.items() if row is None]
    if missing:
        return None, "NOT MEASURED", (f"no {' and no '.join(missing)} {bar.cell} {bar.num_layers}x{bar.hidden_size} "
                                      f"{bar.dtype} ({threads_label(bar.threads)}) row in this run")
    factor = rows[bar.implementation].chars_per_second / rows[bar.baseline].chars_per_second
    return factor, ("PASS" if factor >= bar.factor else "MISS"), ""


def measured(bar, value):
    """A bar's measured value as the tables print it: a percentage of peak or a ratio."""
    return percent(value) if isinstance(bar, PeakBar) else times(value)
