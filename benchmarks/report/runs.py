"""A benchmark run as the report reads it: rows, GEMM peaks and scaling figures out of a pytest-benchmark JSON.

Every figure comes from the JSON: chars/s = ``extra_info.chars_per_step`` /
median seconds per call; fraction of peak = chars/s x ``flops_per_char`` /
GEMM flops/s of the same dtype and thread count, measured in the same run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

BENCH_RESULTS = Path(__file__).resolve().parent.parent.parent / "bench_results"

IMPLEMENTATION_ORDER = ("reference", "pytorch", "numba", "numba-api")
BATCH_KIND = "batch_train_step"
CELLS_KIND = "cells"
MPI_GROUP = "mpi"
#: ``benchmarks/test_distributed.py``'s two ways of running one point.
MPI_THREADS, MPI_RANKS = "1 process x 2 threads", "2 MPI ranks x 1 thread"

#: The ``microkernel`` group's kind (``benchmarks/test_microkernel.py``): products, not training steps.
MICROKERNEL_KIND = "microkernel"
#: The ``scaling`` group's two kinds of independent work (``benchmarks/test_scaling.py``).
SCALING_WORK = {
    "elementwise": "vectorised tanh + exp over a private (400, 100) float32 block per chunk",
    "small-gemm": "(16, 100) @ (100, 100) float32 GEMMs, private operands per chunk",
}


@dataclass
class Row:
    """One timed call of an RNN benchmark (batch 1 or batched): what it ran and its median."""

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
class CellRow:
    """One timed call of the ``cells`` group: ``steps`` training steps of an LSTM/GRU stack (fastrnn or PyTorch).

    ``flops_per_char`` and ``vocab_size`` are None in runs made before the group
    recorded them (then no fraction of peak).
    """

    implementation: str
    cell: str
    num_layers: int
    hidden_size: int
    vocab_size: int | None
    batch_size: int
    seq_length: int
    dtype: str
    threads: int
    chars_per_step: int
    flops_per_char: int | None
    median: float
    rounds: int

    @property
    def point(self):
        """What both implementations run at: (cell, layers, H, B, T, dtype, threads)."""
        return (self.cell, self.num_layers, self.hidden_size, self.batch_size, self.seq_length, self.dtype,
                self.threads)

    @property
    def key(self):
        return self.point + (self.implementation,)

    @property
    def model(self):
        """``lstm 2x128``."""
        return f"{self.cell} {self.num_layers}x{self.hidden_size}"

    @property
    def chars_per_second(self):
        return self.chars_per_step / self.median


@dataclass
class MpiRow:
    """One point of the ``mpi`` group run one way (:data:`MPI_THREADS` or :data:`MPI_RANKS`).

    ``chars_per_second``: the threads' from the median timed call; the ranks' from
    their own fastest round (start-up and compile excluded). ``allreduce_ms``, mean
    time of one allreduce of the flat gradient buffer, and its bytes: ranks only.
    """

    point: str
    implementation: str
    chars_per_second: float
    allreduce_ms: float | None = None
    allreduce_bytes: int | None = None


def _mpi_row(info, stats):
    if "mpi_chars_per_s" in info:
        return MpiRow(info["point"], info["implementation"], info["mpi_chars_per_s"], info.get("allreduce_ms"),
                      info.get("allreduce_bytes"))
    return MpiRow(info["point"], info["implementation"], info["chars_per_call"] / stats["median"])


def _cell_row(info, stats):
    """A ``cells`` row; runs made before the group had a kind stored ``chars_per_call`` and no flops."""
    return CellRow(info["implementation"], info["cell"], info["num_layers"], info["hidden_size"],
                   info.get("vocab_size"), info["batch_size"], info["seq_length"], info["dtype"],
                   info["threads"], info.get("chars_per_step", info.get("chars_per_call")),
                   info.get("flops_per_char"), stats["median"], stats["rounds"])


@dataclass
class Run:
    """Everything the report uses from one JSON."""

    path: Path
    rows: list
    gemm: dict  # (dtype, threads) -> (flops/s, matrix size, median s)
    meta: dict
    scaling: dict = None  # (work, threads) -> median s of the two-chunk independent work
    thread_scaling: dict = None  # (dtype, H, B) -> (median s 1t, median s 2t, chars per call, rounds), alternated
    cells: list = field(default_factory=list)  # CellRow, sorted by point then implementation
    mpi: list = field(default_factory=list)  # MpiRow, in the run's order

    def scaling_speedup(self, work):
        """1-thread median / 2-thread median of the ``scaling`` group's ``work`` (or None)."""
        one, two = (self.scaling or {}).get((work, 1)), (self.scaling or {}).get((work, 2))
        return one / two if one and two else None

    def find(self, kind, implementation, dtype, batch_size, threads, hidden_size):
        for row in self.rows:
            if row.key == (kind, implementation, dtype, batch_size, threads, hidden_size):
                return row
        return None

    def find_cell(self, implementation, point):
        """The ``cells`` row of ``implementation`` at ``point`` (see :attr:`CellRow.point`), or None."""
        for row in self.cells:
            if row.key == point + (implementation,):
                return row
        return None

    def find_mpi(self, point, implementation):
        """The ``mpi`` row of ``point`` run as ``implementation`` (or None)."""
        return next((r for r in self.mpi if (r.point, r.implementation) == (point, implementation)), None)

    def peak(self, dtype, threads):
        entry = self.gemm.get((dtype, threads))
        return entry[0] if entry else None

    def l2_per_core(self):
        """Bytes of level-2 cache of one core, from the caches the suite read from sysfs (or None)."""
        sizes = [c["size_bytes"] for c in self.caches() if c.get("level") == 2 and c.get("type") != "Instruction"]
        return sizes[0] if sizes else None

    def caches(self):
        """CPU 0's caches as the suite recorded them (``[]`` when unknown)."""
        return (self.meta["machine"].get("fastrnn_bench", {}) or {}).get("caches") or []


def load(path) -> Run:
    """Read a pytest-benchmark JSON written by ``pytest benchmarks --benchmark-json=...``."""
    path = Path(path)
    data = json.loads(path.read_text())
    rows, gemm, scaling, thread_scaling, cells, mpi = [], {}, {}, {}, [], []
    for bench in data.get("benchmarks", []):
        info, stats = bench.get("extra_info", {}), bench["stats"]
        kind = info.get("kind")
        if kind == CELLS_KIND or (kind is None and bench.get("group") == CELLS_KIND):
            cells.append(_cell_row(info, stats))
        elif bench.get("group") == MPI_GROUP and "point" in info:
            mpi.append(_mpi_row(info, stats))
        elif kind == "thread_scaling":
            thread_scaling[(info["dtype"], info["hidden_size"], info["batch_size"])] = (
                info["median_1t"], info["median_2t"], info["chars_per_call"], info["rounds_each"])
        elif kind == "scaling":
            scaling[(info["implementation"], info["threads"])] = stats["median"]
        elif kind == MICROKERNEL_KIND:
            continue  # products in GFLOP/s, not chars/s: benchmarks/test_microkernel.py, not tabulated yet
        elif kind == "gemm":
            gemm[(info["dtype"], info["threads"])] = (
                info["flops_per_call"] / stats["median"], info["matrix_size"], stats["median"])
        elif kind is not None:
            rows.append(Row(kind, info["implementation"], info["dtype"], info["hidden_size"],
                            info["vocab_size"], info["batch_size"], info["threads"],
                            info["chars_per_step"], info["flops_per_char"], stats["median"],
                            stats["rounds"], stats.get("iterations", 1)))
    rows.sort(key=lambda r: (r.kind, impl_rank(r.implementation), r.dtype != "float64",
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
    cells.sort(key=lambda r: (r.hidden_size, r.cell != "lstm", r.cell, r.num_layers, r.batch_size, r.seq_length,
                              r.dtype != "float64", r.threads, impl_rank(r.implementation)))
    return Run(path, rows, gemm, meta, scaling, thread_scaling, cells, mpi)


def impl_rank(name):
    """Where an implementation sorts: reference, pytorch, numba, then the rest."""
    return IMPLEMENTATION_ORDER.index(name) if name in IMPLEMENTATION_ORDER else len(IMPLEMENTATION_ORDER)


def _is_benchmark_run(path: Path) -> bool:
    """Whether ``path`` is what pytest-benchmark writes (not quality.json, side_by_side.json, step_split.json)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "benchmarks" in data and "machine_info" in data


def newest_json(folder=BENCH_RESULTS) -> Path:
    """The most recently modified pytest-benchmark ``*.json`` in ``folder``."""
    candidates = sorted((p for p in Path(folder).glob("*.json") if _is_benchmark_run(p)), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise SystemExit(f"no benchmark run (*.json) in {folder}: run the benchmarks first (see bench_results/README.md)")
    return candidates[-1]


# --- derived figures ---------------------------------------------------------------

def speedup(run, row, implementation, dtype="float64"):
    """row's chars/s over ``implementation``/``dtype``'s at the same kind, B, threads and H."""
    base = run.find(row.kind, implementation, dtype, row.batch_size, row.threads, row.hidden_size)
    if base is None or base is row:
        return None
    return row.chars_per_second / base.chars_per_second


def fraction_of_peak(run, row):
    """row's flops/s over the GEMM flops/s of its dtype and thread count (None without that GEMM)."""
    peak = run.peak(row.dtype, row.threads)
    if peak is None or row.flops_per_char is None:
        return None
    return row.chars_per_second * row.flops_per_char / peak
