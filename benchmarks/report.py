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

Every figure comes from the JSON: chars/s = ``extra_info.chars_per_step`` /
median seconds per call; fraction of peak = chars/s x ``flops_per_char`` /
GEMM flops/s of the same dtype and thread count, measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH_RESULTS = Path(__file__).resolve().parent.parent / "bench_results"

KIND_TITLES = {
    "train_step": "Training step (loss, grads, clip, Adagrad)",
    "forward_backward": "Forward + BPTT only (no update)",
    "sample": "Sampling 1,000 characters",
    "validation": "Validation: forward-only loss over a long sequence",
    "batch_train_step": "Batched training step (B streams; loss, batch gradient, clip, Adagrad)",
}
IMPLEMENTATION_ORDER = ("reference", "pytorch", "numba")
BATCH_PLOT = "batched_chars_per_second.png"


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
    source: str = "issue 4"

    @property
    def base_threads(self):
        return self.threads if self.baseline_threads is None else self.baseline_threads

    def label(self):
        def t(n):
            return f"{n} thread{'s' if n > 1 else ''}"
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
    source: str = "issue 4"

    def label(self):
        return (f"{self.implementation} {self.dtype} >= {100 * self.fraction:g} % of the {self.dtype} GEMM peak, "
                f"H={self.hidden_size}, B={self.batch_size}, {self.threads} thread{'s' if self.threads > 1 else ''}")

    def required(self):
        return f">= {100 * self.fraction:g} %"


BATCH_KIND = "batch_train_step"

#: Issue 4's bars: single sequence, one thread, same run.
ISSUE4_BARS = (
    Bar("numba", "float64", "reference", "float64", 100, 15),
    Bar("numba", "float64", "reference", "float64", 256, 8),
    Bar("numba", "float64", "reference", "float64", 512, 8),
    Bar("numba", "float32", "reference", "float64", 100, 30),
    Bar("numba", "float64", "pytorch", "float64", 100, 10),
)

#: Issue 5's bars, on the batched rows (``benchmarks/test_batched.py``), same run:
#: (a) B=32, H=512, float64, 1 thread >= 75 % of the float64 GEMM peak;
#: (b) 2 threads >= 1.8x 1 thread at B=32 and 128: every H (100, 512) and dtype;
#: (c) faster than PyTorch (>= 1x, same dtype, B, threads) at every H in {100, 512} x
#:     B in {1, 32, 128}, both dtypes, 1 and 2 threads;
#: (d) >= 2x PyTorch at B=128, H=100, float32: at 1 and at 2 threads (the issue names no thread count);
#: (e) >= 1.2x PyTorch at B=128, H=512, float32, 2 threads.
ISSUE5_BARS = (
    PeakBar("numba", "float64", 512, 0.75, kind=BATCH_KIND, batch_size=32, threads=1, source="issue 5"),
    *(Bar("numba", dtype, "numba", dtype, H, 1.8, kind=BATCH_KIND, batch_size=B, threads=2,
          baseline_threads=1, source="issue 5")
      for H in (100, 512) for B in (32, 128) for dtype in ("float64", "float32")),
    *(Bar("numba", dtype, "pytorch", dtype, H, 1.0, kind=BATCH_KIND, batch_size=B, threads=t, source="issue 5")
      for H in (100, 512) for B in (1, 32, 128) for dtype in ("float64", "float32") for t in (1, 2)),
    *(Bar("numba", "float32", "pytorch", "float32", 100, 2.0, kind=BATCH_KIND, batch_size=128, threads=t,
          source="issue 5") for t in (1, 2)),
    Bar("numba", "float32", "pytorch", "float32", 512, 1.2, kind=BATCH_KIND, batch_size=128, threads=2,
        source="issue 5"),
)

BARS = ISSUE4_BARS + ISSUE5_BARS
BAR_SOURCES = {
    "issue 4": "issue 4: batch 1, one thread, same run",
    "issue 5": "issue 5: batched training, 1 and 2 threads, same run",
}


@dataclass
class Row:
    kind: str
    implementation: str
    dtype: str
    hidden_size: int
    vocab_size: int
    batch_size: int
    threads: int
    chars_per_step: int
    flops_per_char: int
    median: float
    rounds: int
    iterations: int

    @property
    def key(self):
        return (self.kind, self.implementation, self.dtype, self.batch_size, self.threads,
                self.hidden_size)

    @property
    def series(self):
        return (self.implementation, self.dtype, self.batch_size, self.threads)

    @property
    def chars_per_second(self):
        return self.chars_per_step / self.median


@dataclass
class Run:
    path: Path
    rows: list
    gemm: dict  # (dtype, threads) -> (flops/s, matrix size, median s)
    meta: dict
    scaling: dict = None  # (work, threads) -> median s of the two-chunk independent work
    thread_scaling: dict = None  # (dtype, H, B) -> (median s 1t, median s 2t, chars per call, rounds), alternated

    def scaling_speedup(self, work):
        """1-thread median / 2-thread median of the ``scaling`` group's ``work`` (or None)."""
        one, two = (self.scaling or {}).get((work, 1)), (self.scaling or {}).get((work, 2))
        return one / two if one and two else None

    def find(self, kind, implementation, dtype, batch_size, threads, hidden_size):
        for row in self.rows:
            if row.key == (kind, implementation, dtype, batch_size, threads, hidden_size):
                return row
        return None

    def peak(self, dtype, threads):
        entry = self.gemm.get((dtype, threads))
        return entry[0] if entry else None


def load(path) -> Run:
    path = Path(path)
    data = json.loads(path.read_text())
    rows, gemm, scaling, thread_scaling = [], {}, {}, {}
    for bench in data.get("benchmarks", []):
        info, stats = bench.get("extra_info", {}), bench["stats"]
        kind = info.get("kind")
        if kind == "thread_scaling":
            thread_scaling[(info["dtype"], info["hidden_size"], info["batch_size"])] = (
                info["median_1t"], info["median_2t"], info["chars_per_call"], info["rounds_each"])
        elif kind == "scaling":
            scaling[(info["implementation"], info["threads"])] = stats["median"]
        elif kind == "gemm":
            gemm[(info["dtype"], info["threads"])] = (
                info["flops_per_call"] / stats["median"], info["matrix_size"], stats["median"])
        elif kind is not None:
            rows.append(Row(kind, info["implementation"], info["dtype"], info["hidden_size"],
                            info["vocab_size"], info["batch_size"], info["threads"],
                            info["chars_per_step"], info["flops_per_char"], stats["median"],
                            stats["rounds"], stats.get("iterations", 1)))
    rows.sort(key=lambda r: (r.kind, _impl_rank(r.implementation), r.dtype != "float64",
                             r.batch_size, r.threads, r.hidden_size))
    quick = any(b.get("extra_info", {}).get("quick") for b in data.get("benchmarks", []))
    threads_seen = [{"name": b.get("name"), "threads": b["extra_info"].get("threads") or 1,
                     "blas": b["extra_info"].get("blas_threads"),
                     "numba": b["extra_info"].get("numba_threads")}
                    for b in data.get("benchmarks", []) if "extra_info" in b]
    meta = {
        "threads_seen": threads_seen,
        "datetime": data.get("datetime"),
        "commit": data.get("commit_info", {}),
        "machine": data.get("machine_info", {}),
        "quick": quick,
    }
    return Run(path, rows, gemm, meta, scaling, thread_scaling)


def _impl_rank(name):
    return IMPLEMENTATION_ORDER.index(name) if name in IMPLEMENTATION_ORDER else len(IMPLEMENTATION_ORDER)


def newest_json(folder=BENCH_RESULTS) -> Path:
    candidates = sorted(Path(folder).glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise SystemExit(f"no *.json in {folder}: run the benchmarks first (see bench_results/README.md)")
    return candidates[-1]


# --- formatting ------------------------------------------------------------------

def _rate(x):
    return "—" if x is None else f"{x:,.0f}"


def _times(x):
    return "—" if x is None else f"{x:.1f}x"


def _percent(x):
    return "—" if x is None else f"{100 * x:.1f} %"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _series_label(series):
    implementation, dtype, batch_size, threads = series
    label = f"{implementation} {dtype}"
    if batch_size != 1:
        label += f" B={batch_size}"
    if threads != 1:
        label += f" {threads} threads"
    return label


# --- derived figures ---------------------------------------------------------------

def speedup(run, row, implementation, dtype="float64"):
    """row's chars/s over ``implementation``/``dtype``'s at the same kind, B, threads and H."""
    base = run.find(row.kind, implementation, dtype, row.batch_size, row.threads, row.hidden_size)
    if base is None or base is row:
        return None
    return row.chars_per_second / base.chars_per_second


def fraction_of_peak(run, row):
    peak = run.peak(row.dtype, row.threads)
    if peak is None:
        return None
    return row.chars_per_second * row.flops_per_char / peak


def evaluate_bar(run, bar):
    """(measured factor or fraction, or None; "PASS" / "MISS" / "NOT MEASURED"; why-not-measured)."""
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
        missing = [f"{i} {d} ({t} thread{'s' if t > 1 else ''})"
                   for r, i, d, t in ((row, bar.implementation, bar.dtype, bar.threads),
                                      (base, bar.baseline, bar.baseline_dtype, bar.base_threads)) if r is None]
        return None, "NOT MEASURED", f"no {' and no '.join(missing)} row in this run"
    factor = row.chars_per_second / base.chars_per_second
    return factor, ("PASS" if factor >= bar.factor else "MISS"), ""


def _measured(bar, value):
    return _percent(value) if isinstance(bar, PeakBar) else _times(value)


# --- report ------------------------------------------------------------------------

def _header(run):
    commit = run.meta["commit"] or {}
    machine = run.meta["machine"] or {}
    cpu = machine.get("cpu", {}) or {}
    libs = machine.get("fastrnn_bench", {}) or {}
    lines = [
        "# fastrnn benchmark report",
        "",
        f"Generated by `python -m benchmarks.report` from `{run.path.name}` "
        f"(run {run.meta['datetime'] or 'of unknown date'}, commit {str(commit.get('id', '?'))[:12]}"
        f"{' + uncommitted changes' if commit.get('dirty') else ''}).",
        "",
        f"Machine: {cpu.get('brand_raw', machine.get('processor', '?'))}, "
        f"{cpu.get('count', '?')} logical CPUs ({_cache_summary(run)}); "
        f"Python {machine.get('python_version', '?')}, "
        f"numpy {libs.get('numpy', '?')}, numba {libs.get('numba', '?')}, "
        f"torch {libs.get('torch') or 'not installed'}.",
        "",
        "chars/s = characters per timed call / median seconds per call. "
        "Speed-ups are ratios of chars/s in this run. \"% of GEMM peak\" = chars/s x flops per "
        "character / the numpy matmul flops/s of the same dtype and thread count measured in this "
        "run (training: 6H^2+6VH+9H+5V flops per character; forward only: 2H^2+2VH+3H+3V).",
    ]
    lines += _thread_warnings(run, run.meta["threads_seen"])
    if run.meta["quick"]:
        lines += ["", "**Quick run (FASTRNN_BENCH_QUICK=1): few rounds, for checking the pipeline; "
                      "do not publish these numbers.**"]
    return lines


def _cache(value):
    if value in (None, ""):
        return "?"
    if isinstance(value, (int, float)):
        return f"{value / 1024:.0f} KiB" if value < 1 << 20 else f"{value / (1 << 20):.0f} MiB"
    return str(value)


def _gemm_section(run):
    if not run.gemm:
        return ["## Machine peak (GEMM)", "", "No GEMM benchmark in this run: no fraction of peak."]
    rows = [(dtype, threads, f"{n}^2", f"{median * 1e3:.1f}", f"{flops / 1e9:.1f}")
            for (dtype, threads), (flops, n, median) in sorted(run.gemm.items())]
    lines = ["## Machine peak (GEMM, numpy matmul)", "",
             _table(["dtype", "threads", "size", "median ms", "GFLOP/s"], rows)]
    return lines + _scaling_section(run)


SCALING_WORK = {
    "elementwise": "vectorised tanh + exp over a private (400, 100) float32 block per chunk",
    "small-gemm": "(16, 100) @ (100, 100) float32 GEMMs, private operands per chunk",
}


def _scaling_section(run):
    """The machine's own 2-thread speed-up on two chunks of independent work (group ``scaling``)."""
    if not run.scaling:
        return []
    rows = []
    for work, what in SCALING_WORK.items():
        one, two = run.scaling.get((work, 1)), run.scaling.get((work, 2))
        if one and two:
            rows.append([work, what, f"{one * 1e3:.2f}", f"{two * 1e3:.2f}", _times(one / two)])
    if not rows:
        return []
    return ["", "## Two threads on independent work (the machine's ceiling for the 2-thread bars)", "",
            "Two chunks of work that share nothing, one after the other on one thread or side by side "
            "on two Numba threads (BLAS at one thread each), same run (`benchmarks/test_scaling.py`).", "",
            _table(["work", "what", "1 thread ms", "2 threads ms", "speed-up"], rows)]


def _kind_section(run, kind):
    rows = [r for r in run.rows if r.kind == kind]
    if not rows:
        return []
    title = KIND_TITLES.get(kind, kind)
    sizes = sorted({r.hidden_size for r in rows})
    series = list(dict.fromkeys(r.series for r in rows))
    by_key = {(r.series, r.hidden_size): r for r in rows}
    summary = [[_series_label(s)] + [_rate(by_key[(s, h)].chars_per_second) if (s, h) in by_key else "—"
                                     for h in sizes] for s in series]
    has_torch = any(r.implementation == "pytorch" for r in rows)
    header = ["implementation", "dtype", "B", "threads", "H", "chars/call", "median ms", "chars/s",
              "x reference f64"] + (["x PyTorch (same dtype)"] if has_torch else []) + ["% of GEMM peak"]
    detail = []
    for r in rows:
        cells = [r.implementation, r.dtype, r.batch_size, r.threads, r.hidden_size, f"{r.chars_per_step:,}",
                 f"{r.median * 1e3:.3f}", _rate(r.chars_per_second), _times(speedup(run, r, "reference"))]
        if has_torch:
            cells.append(_times(speedup(run, r, "pytorch", r.dtype)))
        cells.append(_percent(fraction_of_peak(run, r)))
        detail.append(cells)
    return [f"## {title}", "", "chars/s by hidden size:", "",
            _table(["implementation"] + [f"H={h}" for h in sizes], summary), "",
            _table(header, detail)]


def _contention_warning(run):
    """A warning line when 2-thread batched rows ran below half their 1-thread rate ([] otherwise)."""
    rows = {(r.implementation, r.dtype, r.threads, r.hidden_size, r.batch_size): r
            for r in run.rows if r.kind == BATCH_KIND}
    slow = []
    for (impl, dtype, threads, H, B), r in rows.items():
        one = rows.get((impl, dtype, 1, H, B))
        if threads == 2 and one is not None and r.chars_per_second < 0.5 * one.chars_per_second:
            slow.append(f"{impl} {dtype} H={H} B={B}")
    if not slow:
        return []
    return [f"**Warning: at 2 threads, {len(slow)} batched row(s) ran at less than half their 1-thread "
            f"rate ({'; '.join(sorted(slow))}). That is usually the signature of a busy machine (another "
            "process on one of the cores; PyTorch's OpenMP threads spin-wait and collapse under "
            "contention): rerun on an idle machine before reading the 2-thread rows and bars.**"]


def _batch_section(run):
    """Batched rows: chars/s by batch size per (implementation, dtype, threads, H), then the detail."""
    rows = [r for r in run.rows if r.kind == BATCH_KIND]
    if not rows:
        return []
    batch_sizes = sorted({r.batch_size for r in rows})
    lines_key = sorted({(r.hidden_size, r.dtype != "float64", r.dtype, _impl_rank(r.implementation),
                         r.implementation, r.threads) for r in rows})
    by_key = {(r.implementation, r.dtype, r.threads, r.hidden_size, r.batch_size): r for r in rows}
    summary = []
    for H, _, dtype, _, impl, threads in lines_key:
        summary.append([H, impl, dtype, threads] + [
            _rate(by_key[(impl, dtype, threads, H, b)].chars_per_second) if (impl, dtype, threads, H, b) in by_key
            else "—" for b in batch_sizes])
    detail = []
    ordered = sorted(rows, key=lambda r: (r.hidden_size, r.batch_size, r.dtype != "float64",
                                          _impl_rank(r.implementation), r.threads))
    for r in ordered:
        one = by_key.get((r.implementation, r.dtype, 1, r.hidden_size, r.batch_size))
        scaling = (r.chars_per_second / one.chars_per_second) if (one is not None and r.threads != 1) else None
        detail.append([r.hidden_size, r.batch_size, r.implementation, r.dtype, r.threads,
                       f"{r.chars_per_step:,}", f"{r.median * 1e3:.3f}", _rate(r.chars_per_second),
                       _times(speedup(run, r, "pytorch", r.dtype)), _times(scaling),
                       _percent(fraction_of_peak(run, r))])
    warning = _contention_warning(run)
    warning = warning + [""] if warning else []
    alternated = []
    for (dtype, H, B), (m1, m2, chars, n) in sorted((run.thread_scaling or {}).items(),
                                                    key=lambda kv: (kv[0][1], kv[0][2], kv[0][0] != "float64")):
        alternated.append([H, B, dtype, f"{m1 * 1e3:.2f}", f"{m2 * 1e3:.2f}", _rate(chars / m1), _rate(chars / m2),
                           _times(m1 / m2), n])
    if alternated:
        alternated_lines = ["", "Cross-check, 2 threads vs 1 with the 1-thread and 2-thread calls alternated round by "
                            "round in one process (group `thread scaling`). The bars use the steady-state rows above: "
                            "alternating also charges the 2-thread side for switching thread counts between calls "
                            "(its calls run slower than in the 2t rows, even after an untimed call of their own), "
                            "so this ratio reads low; it is a check against a busy spell hitting one row only.", "",
                            _table(["H", "B", "dtype", "1t ms/call", "2t ms/call", "1t chars/s", "2t chars/s",
                                    "2t / 1t", "rounds each"], alternated)]
    else:
        alternated_lines = []
    return [f"## {KIND_TITLES[BATCH_KIND]}", ""] + warning + [
            "`fastrnn.batch.batch_train_steps` (numba) and PyTorch with a batch dimension, T=25, B streams "
            "over B equal shards of the corpus, hidden states carried; chars/s counts all B x 25 characters "
            "of a step. \"x PyTorch\": over PyTorch at the same dtype, H, B and threads; \"2t / 1t\": over "
            "the same implementation at 1 thread; \"% of GEMM peak\": against the GEMM of the same dtype and "
            "thread count.", "",
            "chars/s by batch size:", "",
            _table(["H", "implementation", "dtype", "threads"] + [f"B={b}" for b in batch_sizes], summary), "",
            _table(["H", "B", "implementation", "dtype", "threads", "chars/call", "median ms", "chars/s",
                    "x PyTorch", "2t / 1t", "% of GEMM peak"], detail)] + alternated_lines


def _bars_section(run):
    lines = []
    for source, title in BAR_SOURCES.items():
        lines += _bars_table(run, [b for b in BARS if b.source == source], f"## Bars ({title})")
        if source == "issue 5":
            warning = _contention_warning(run)
            lines += warning + ([""] if warning else [])
    return lines


def _bars_table(run, bars, heading):
    lines = [heading, ""]
    rows, missed, unmeasured = [], [], []
    for bar in bars:
        value, verdict, why = evaluate_bar(run, bar)
        rows.append([bar.label(), _measured(bar, value), bar.required(),
                     f"**{verdict}**" + (f" ({why})" if why else "")])
        if verdict == "MISS":
            missed.append((bar, value))
        elif verdict == "NOT MEASURED":
            unmeasured.append(bar)
    passed = len(bars) - len(missed) - len(unmeasured)
    lines.append(_table(["target", "measured", "required", "result"], rows))
    lines.append("")
    lines.append(f"{passed} of {len(bars)} bars pass, {len(missed)} missed, {len(unmeasured)} not measured.")
    if missed:
        lines.append("")
        lines.append(f"**Missed: {len(missed)} of {len(bars)} bars.**")
        lines.append("")
        for bar, value in missed:
            lines.append(f"- {bar.label()}: measured {_measured(bar, value)}. {_limit_note(run, bar)}")
    if unmeasured:
        lines.append("")
        lines.append("Not measured in this run: " + "; ".join(b.label() for b in unmeasured) + ".")
    return lines + [""]


def _limit_note(run, bar):
    """What the numbers say about the missed bar: its share of the GEMM peak, Whh against L2."""
    row = run.find(bar.kind, bar.implementation, bar.dtype, bar.batch_size, bar.threads, bar.hidden_size)
    if bar.kind == BATCH_KIND:
        return _batch_limit_note(run, bar, row)
    base = run.find(bar.kind, bar.baseline, bar.baseline_dtype, bar.batch_size, bar.threads,
                    bar.hidden_size)
    parts = []
    frac = fraction_of_peak(run, row)
    if frac is not None:
        parts.append(f"{bar.implementation} {bar.dtype} runs at {_percent(frac)} of the GEMM peak")
    base_frac = fraction_of_peak(run, base)
    if base_frac is not None:
        parts.append(f"the {bar.baseline} at {_percent(base_frac)}")
    H = bar.hidden_size
    whh = H * H * (8 if bar.dtype == "float64" else 4)
    l2 = l2_per_core(run)
    if l2:
        if whh > l2:
            parts.append(f"Whh ({whh / (1 << 20):.1f} MiB in {bar.dtype}) is larger than one core's "
                         f"L2 ({_cache(l2)}), so every time step reads it from L3: at batch 1 the "
                         "recurrent matrix-vector product is likely bound by L3 bandwidth rather than by flops")
        else:
            parts.append(f"Whh ({whh / 1024:.0f} KiB in {bar.dtype}) fits in one core's L2 "
                         f"({_cache(l2)}), so cache capacity does not explain the gap")
    return ("; ".join(parts) + ".") if parts else ""


def _batch_limit_note(run, bar, row):
    """The measured rates behind a missed batched bar, and their shares of the GEMM peak."""
    def rate(r):
        frac = fraction_of_peak(run, r)
        return f"{_rate(r.chars_per_second)} chars/s" + (f" ({_percent(frac)} of GEMM peak)" if frac else "")
    parts = [f"{bar.implementation} {bar.dtype} {bar.threads}t: {rate(row)}"]
    if isinstance(bar, Bar):
        base = run.find(bar.kind, bar.baseline, bar.baseline_dtype, bar.batch_size, bar.base_threads,
                        bar.hidden_size)
        parts.append(f"{bar.baseline} {bar.baseline_dtype} {bar.base_threads}t: {rate(base)}")
        if bar.base_threads != bar.threads:
            entry = (run.thread_scaling or {}).get((bar.dtype, bar.hidden_size, bar.batch_size))
            if entry:
                parts.append(f"with 1t and 2t calls alternated (cross-check): {_times(entry[0] / entry[1])}")
            ceiling = [f"{work} {_times(x)}" for work in SCALING_WORK
                       if (x := run.scaling_speedup(work)) is not None]
            if ceiling:
                parts.append("this machine's 2-thread speed-up on independent work, same run: " + ", ".join(ceiling))
    return "; ".join(parts) + "."


def l2_per_core(run):
    """Bytes of level-2 cache of one core, from the caches the suite read from sysfs (or None)."""
    caches = (run.meta["machine"].get("fastrnn_bench", {}) or {}).get("caches") or []
    sizes = [c["size_bytes"] for c in caches if c.get("level") == 2 and c.get("type") != "Instruction"]
    return sizes[0] if sizes else None


def _cache_summary(run):
    caches = (run.meta["machine"].get("fastrnn_bench", {}) or {}).get("caches") or []
    parts = [f"L{c['level']}{'d' if c['type'] == 'Data' else ''} {_cache(c['size_bytes'])}"
             + (" shared" if ("," in c["shared_cpu_list"] or "-" in c["shared_cpu_list"]) else " per core")
             for c in caches if c.get("type") != "Instruction"]
    return ", ".join(parts) if parts else "caches unknown"


def _thread_warnings(run, data_rows):
    """Rows whose BLAS pools or numba ran with more threads than the row claims."""
    bad = [f"{r['name']} (claims {r['threads']}, BLAS {r['blas']}, numba {r['numba']})" for r in data_rows
           if (r["blas"] is not None and r["blas"] > r["threads"])
           or (r["numba"] is not None and r["numba"] > r["threads"])]
    if not bad:
        return []
    return ["", "**Warning: threads were not pinned in: " + "; ".join(bad) + ".**"]


def render(run, plot_name=None, batch_plot_name=None):
    lines = _header(run) + [""]
    if plot_name:
        lines += [f"![chars/s against hidden size]({plot_name})", ""]
    if batch_plot_name:
        lines += [f"![batched training: chars/s against batch size]({batch_plot_name})", ""]
    lines += _bars_section(run) + [""]
    lines += _gemm_section(run) + [""]
    for kind in list(KIND_TITLES) + sorted({r.kind for r in run.rows} - set(KIND_TITLES)):
        section = _batch_section(run) if kind == BATCH_KIND else _kind_section(run, kind)
        if section:
            lines += section + [""]
    return "\n".join(lines)


def _log_axes(ax, ticks, xlabel):
    """Log-2 x axis with a tick at each value, log y axis of chars/s."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("characters per second (log)")


def plot(run, path, kind="train_step"):
    """chars/s against hidden size, one line per implementation/dtype/B/threads, log y."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib (pip install -e '.[bench]'), or pass --no-plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in run.rows if r.kind == kind]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    series = list(dict.fromkeys(r.series for r in rows))
    for s in series:
        points = sorted((r.hidden_size, r.chars_per_second) for r in rows if r.series == s)
        style = "--" if s[0] == "reference" else ":" if s[0] == "pytorch" else "-"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=_series_label(s))
    sizes = sorted({r.hidden_size for r in rows})
    for (dtype, threads), (flops, _n, _m) in sorted(run.gemm.items()):
        vocab = rows[0].vocab_size if rows else None
        if vocab is None or threads != 1:
            continue
        flops_per_char = [next((r.flops_per_char for r in rows if r.hidden_size == h), None) for h in sizes]
        ceiling = [flops / f for f in flops_per_char if f]
        if len(ceiling) == len(sizes):
            ax.plot(sizes, ceiling, color="grey", alpha=0.6, linewidth=1,
                    linestyle="-." if dtype == "float64" else (0, (1, 3)),
                    label=f"GEMM-peak ceiling {dtype} (1 thread)")
    _log_axes(ax, sizes, "hidden size H")
    title = f"fastrnn, {KIND_TITLES.get(kind, kind)}: T=25, V={rows[0].vocab_size if rows else '?'}"
    if run.meta["quick"]:
        title += " (QUICK RUN)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_batched(run, path):
    """Batched training: chars/s against batch size, one panel per H, one line per
    implementation/dtype/threads, log-log. Returns False (and writes nothing) without batched rows."""
    rows = [r for r in run.rows if r.kind == BATCH_KIND]
    if not rows:
        return False
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib (pip install -e '.[bench]'), or pass --no-plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r.hidden_size for r in rows})
    batch_sizes = sorted({r.batch_size for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 5), squeeze=False)
    colors = {("numba", "float64"): "C0", ("numba", "float32"): "C1",
              ("pytorch", "float64"): "C2", ("pytorch", "float32"): "C3"}
    for ax, H in zip(axes[0], sizes):
        here = [r for r in rows if r.hidden_size == H]
        series = sorted({(_impl_rank(r.implementation), r.implementation, r.dtype != "float64", r.dtype, r.threads)
                         for r in here})
        for _, impl, _, dtype, threads in series:
            points = sorted((r.batch_size, r.chars_per_second) for r in here
                            if (r.implementation, r.dtype, r.threads) == (impl, dtype, threads))
            ax.plot([p[0] for p in points], [p[1] for p in points],
                    "-" if threads == 1 else "--", marker="o" if impl == "numba" else "s",
                    color=colors.get((impl, dtype)), label=f"{impl} {dtype} {threads} thread{'s' if threads > 1 else ''}")
        for dtype in ("float64", "float32"):
            peak = run.peak(dtype, 1)
            if peak is not None and here:
                ax.axhline(peak / here[0].flops_per_char, color="grey", alpha=0.6, linewidth=1,
                           linestyle="-." if dtype == "float64" else (0, (1, 3)),
                           label=f"GEMM-peak ceiling {dtype} (1 thread)")
        _log_axes(ax, batch_sizes, "batch size B (streams per step)")
        ax.set_title(f"H={H}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    title = f"Batched training step, fastrnn vs PyTorch: chars/s against batch size, T=25, V={rows[0].vocab_size}"
    if run.meta["quick"]:
        title += " (QUICK RUN)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def compare(old, new):
    """Markdown table: chars/s (GFLOP/s for GEMM) before and after, and after/before."""
    rows = []
    old_rows = {r.key: r for r in old.rows}
    for r in new.rows:
        o = old_rows.get(r.key)
        if o is None:
            continue
        rows.append([r.kind, _series_label(r.series), r.hidden_size, _rate(o.chars_per_second),
                     _rate(r.chars_per_second), f"{r.chars_per_second / o.chars_per_second:.2f}"])
    for key, (flops, _n, _m) in sorted(new.gemm.items()):
        if key in old.gemm:
            rows.append(["gemm", f"numpy-matmul {key[0]} {key[1]} thread", "—",
                         f"{old.gemm[key][0] / 1e9:.1f} GFLOP/s", f"{flops / 1e9:.1f} GFLOP/s",
                         f"{flops / old.gemm[key][0]:.2f}"])
    only_old = sorted({r.key for r in old.rows} - {r.key for r in new.rows})
    only_new = sorted({r.key for r in new.rows} - {r.key for r in old.rows})
    lines = [f"# Benchmark comparison: `{old.path.name}` (before) -> `{new.path.name}` (after)", "",
             "after/before > 1 means faster after. Runs on different machines or under different "
             "load are not comparable.", "",
             _table(["kind", "implementation", "H", "before chars/s", "after chars/s", "after/before"], rows)]
    for label, keys in (("Only in before", only_old), ("Only in after", only_new)):
        if keys:
            lines += ["", f"{label}: " + "; ".join(f"{k[0]} {k[1]} {k[2]} B={k[3]} t={k[4]} H={k[5]}" for k in keys)]
    return "\n".join(lines) + "\n"


README_START = "<!-- benchmark-summary:start (written by python -m benchmarks.report; do not edit) -->"
README_END = "<!-- benchmark-summary:end -->"
README_PATH = Path(__file__).resolve().parent.parent / "README.md"


def readme_summary(run):
    """The short tables the README shows: batch 1 by H, batched at B=128, and the bar counts."""
    lines = [f"Run of {run.meta.get('datetime') or '?'} ({run.path.name}); full tables: "
             "[bench_results/report.md](bench_results/report.md).", ""]
    train = [r for r in run.rows if r.kind == "train_step"]
    if train:
        sizes = sorted({r.hidden_size for r in train})
        by_key = {(r.implementation, r.dtype, r.hidden_size): r for r in train}
        rows = []
        for impl, dtype in (("reference", "float64"), ("pytorch", "float64"), ("numba", "float64"),
                            ("numba", "float32")):
            if any((impl, dtype, h) in by_key for h in sizes):
                cells = []
                for h in sizes:
                    r = by_key.get((impl, dtype, h))
                    x = speedup(run, r, "reference") if r is not None else None
                    cells.append("—" if r is None else _rate(r.chars_per_second) + (f" ({_times(x)})" if x else ""))
                rows.append([("fastrnn" if impl == "numba" else impl) + f" {dtype}"] + cells)
        lines += ["Batch 1, one thread, chars/s (x the reference twin):", "",
                  _table(["training step"] + [f"H={h}" for h in sizes], rows), ""]
    batched = [r for r in run.rows if r.kind == BATCH_KIND and r.batch_size == 128 and r.implementation == "numba"]
    if batched:
        rows = []
        for r in sorted(batched, key=lambda r: (r.hidden_size, r.dtype != "float64", r.threads)):
            rows.append([r.hidden_size, r.dtype, r.threads, _rate(r.chars_per_second),
                         _times(speedup(run, r, "pytorch", r.dtype))])
        lines += ["Batched training, B=128 streams, chars/s (x PyTorch at the same H, dtype, B and threads):", "",
                  _table(["H", "dtype", "threads", "fastrnn chars/s", "x PyTorch"], rows), ""]
    verdicts = [evaluate_bar(run, bar)[1] for bar in BARS]
    lines.append(f"Speed bars: {verdicts.count('PASS')} of {len(verdicts)} pass, {verdicts.count('MISS')} missed"
                 + (f", {verdicts.count('NOT MEASURED')} not measured" if "NOT MEASURED" in verdicts else "")
                 + " (the list is in the report).")
    return "\n".join(lines)


def update_readme(run, path=README_PATH):
    """Replace the README's text between the summary markers; False if the markers are not there."""
    text = path.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(head + README_START + "\n" + readme_summary(run) + "\n" + README_END + tail)
    return True


def main(argv=None):
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
    plot_name = None if args.no_plot else "chars_per_second.png"
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
        print(f"  {verdict:<12} {bar.label()}: {_measured(bar, value)}" + (f" ({why})" if why else ""))
    if args.compare:
        text = compare(load(args.compare), run)
        (out_dir / "compare.md").write_text(text)
        print(text)
        print(f"wrote {out_dir / 'compare.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
