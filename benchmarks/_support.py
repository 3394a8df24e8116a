"""Shared pieces of the benchmark suite: corpus, thread pinning, rounds, extra_info.

Every benchmark measures one public call of fastrnn (or of its reference twin,
or of the PyTorch equivalent) on tiny shakespeare ids, with threads pinned in
code, and stores in ``benchmark.extra_info`` everything the report needs to turn
a median time into characters per second and a fraction of the GEMM peak
(``benchmarks/report/``). Nothing here times anything.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from functools import lru_cache
from importlib import resources

import numba
import numpy as np

import fastrnn
from fastrnn import reference
from fastrnn.params import CLIP
# Imported before any numba thread pool starts: fastrnn._threads selects numba's
# threading layer (OpenMP first), which only takes effect if no pool has been launched yet.
from fastrnn import _threads  # noqa: F401

try:  # the ``bench`` extra; without it BLAS threads cannot be pinned
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # pragma: no cover - depends on the environment
    threadpool_info = threadpool_limits = None

try:
    # Load SciPy's own OpenBLAS now (Numba's np.dot goes through it), so that
    # threadpool_limits sees and pins it as well as numpy's.
    import scipy.linalg  # noqa: F401
except ImportError:  # pragma: no cover
    pass

HIDDEN_SIZES = (64, 100, 256, 512)
SEQ_LENGTH = 25
LEARNING_RATE = 0.1
DTYPES = {"float64": np.float64, "float32": np.float32}

#: FASTRNN_BENCH_QUICK=1 divides every round count by QUICK_DIVISOR (problem sizes unchanged):
#: for checking the pipeline end to end, not for publishing.
QUICK = os.environ.get("FASTRNN_BENCH_QUICK", "").strip().lower() not in ("", "0", "false", "no")
QUICK_DIVISOR = 5


def plan(rounds: int, iterations: int = 1) -> dict:
    """Keyword arguments for ``benchmark.pedantic``; fewer rounds in quick mode."""
    if QUICK:
        rounds = max(1, math.ceil(rounds / QUICK_DIVISOR))
    return dict(rounds=rounds, iterations=iterations, warmup_rounds=0)


# --- work per character --------------------------------------------------------
# Counted as in the project's notes: an FMA is 2 flops, exp/tanh/sqrt/div 1.

def train_flops_per_char(hidden_size: int, vocab_size: int) -> int:
    """Forward + BPTT of one character: 6H^2 + 6VH + 9H + 5V."""
    H, V = hidden_size, vocab_size
    return 6 * H * H + 6 * V * H + 9 * H + 5 * V


def forward_flops_per_char(hidden_size: int, vocab_size: int) -> int:
    """Forward only (validation loss, sampling): 2H^2 + 2VH + 3H + 3V.

    Whh @ h and Why @ h, plus the input column and bias adds and tanh (3H) and
    the softmax's subtract, exp and sum (3V).
    """
    H, V = hidden_size, vocab_size
    return 2 * H * H + 2 * V * H + 3 * H + 3 * V


TRAIN_FLOPS_FORMULA = "6H^2+6VH+9H+5V"
FORWARD_FLOPS_FORMULA = "2H^2+2VH+3H+3V"

#: Gate blocks per cell: the G in G*H rows of a layer's Wxh and Whh.
CELL_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
CELL_FLOPS_FORMULA = "3 x (2GH^2 (2L-1) + 2HV), G = 4 (LSTM), 3 (GRU)"


def cell_train_flops_per_char(cell: str, num_layers: int, hidden_size: int, vocab_size: int) -> int:
    """Training step of an L-layer LSTM/GRU stack, per character: 3 x (2GH^2 (2L-1) + 2HV).

    Forward, at 2 flops per multiply-add: the recurrent product of each layer
    (Whh, G*H x H: 2GH^2 each, L layers), the input projection of each layer above
    the first (Wxh, G*H x H: 2GH^2 each, L-1 layers; layer 0's one-hot input is a
    row lookup, no multiply-adds) and the head (Why, V x H: 2HV). Backward costs
    about twice the forward (a product for the input gradient and one for the
    weight gradient per forward product): training ~ 3x forward. Gate arithmetic,
    the softmax and the optimizer (O(GH) or O(V) per character, or per step) are
    left out: a lower bound of the work, as the GEMM-peak fraction wants.
    """
    G, H, L, V = CELL_GATES[cell], hidden_size, num_layers, vocab_size
    return 3 * (2 * G * H * H * (2 * L - 1) + 2 * H * V)


def describe(benchmark, *, kind, implementation, dtype, hidden_size, vocab_size, seq_length,
             chars_per_step, threads, batch_size=1, forward_only=False, **more):
    """Store the fields the report reads in ``benchmark.extra_info``.

    kind: what is measured ("train_step", "forward_backward", "sample",
    "validation", "gemm", "batch_train_step"); chars_per_step: characters
    processed by one timed call (B * T * steps for the batched rows), so
    chars/s = chars_per_step / median seconds.
    """
    flops = forward_flops_per_char if forward_only else train_flops_per_char
    benchmark.extra_info.update(
        kind=kind,
        implementation=implementation,
        dtype=np.dtype(dtype).name,
        hidden_size=hidden_size,
        vocab_size=vocab_size,
        seq_length=seq_length,
        batch_size=batch_size,
        threads=threads,
        chars_per_step=chars_per_step,
        flops_per_char=flops(hidden_size, vocab_size),
        flops_formula=FORWARD_FLOPS_FORMULA if forward_only else TRAIN_FLOPS_FORMULA,
        quick=QUICK,
        numba_threads=numba.get_num_threads(),
        blas_threads=blas_threads(),
        **more,
    )


def blas_threads():
    """The largest thread count of any loaded BLAS/OpenMP pool now (None without threadpoolctl)."""
    if threadpool_info is None:
        return None
    return max((lib.get("num_threads") or 0 for lib in threadpool_info()), default=0)


# --- threads -------------------------------------------------------------------

@contextmanager
def pinned_threads(threads: int):
    """Numba and every loaded BLAS/OpenMP pool held to ``threads``; restored on exit."""
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        if threadpool_limits is None:
            yield
        else:
            with threadpool_limits(limits=threads):
                yield
    finally:
        numba.set_num_threads(old)


# --- corpus --------------------------------------------------------------------

@lru_cache(maxsize=1)
def corpus_ids() -> tuple[np.ndarray, int]:
    """Tiny shakespeare as int64 ids over its sorted character set, and that set's size."""
    text = (resources.files("fastrnn") / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    code_points = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    vocab = np.unique(code_points)  # sorted code points == sorted(set(text))
    ids = np.searchsorted(vocab, code_points).astype(np.int64)
    ids.flags.writeable = False
    return ids, int(vocab.size)


class Windows:
    """Consecutive (inputs, targets) windows of ``seq_length`` ids, walked as min-char-rnn does.

    ``next()`` returns C-contiguous int64 rows (no copy at the API boundary) and
    whether the walk wrapped back to the start of the corpus (then the caller
    resets its hidden state, as the seed does).
    """

    def __init__(self, ids: np.ndarray, seq_length: int):
        n = (ids.size - 1) // seq_length
        self.inputs = np.ascontiguousarray(ids[: n * seq_length].reshape(n, seq_length))
        self.targets = np.ascontiguousarray(ids[1 : n * seq_length + 1].reshape(n, seq_length))
        self.position = 0

    def next(self):
        k = self.position
        self.position = (k + 1) % len(self.inputs)
        return self.inputs[k], self.targets[k], k == 0


class ShardWindows:
    """B streams over the corpus cut into B equal shards, each walked in consecutive windows.

    Stream b reads shard b = ``ids[b * L : (b + 1) * L]``, L = (len(ids) - 1) // B,
    window j = ``ids[b * L + j * T : b * L + j * T + T]`` (targets one id later),
    j = 0 .. n_windows - 1, then back to 0. ``next(k)`` returns the starts (k, B) of
    the next k steps and resets (k,) bool, true where the walk wraps to the start of
    the shards (the caller zeroes its hidden states there). ``data`` is a writable
    C-contiguous int64 copy of the ids (fastrnn's batched kernels take it as is).
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int):
        self.data = np.array(ids, dtype=np.int64, order="C")  # writable: no read-only kernel variant
        self.batch_size, self.seq_length = batch_size, seq_length
        self.shard_length = (self.data.size - 1) // batch_size
        self.n_windows = (self.shard_length - 1) // seq_length
        if self.n_windows < 1:
            raise ValueError(f"corpus too short for {batch_size} shards of {seq_length + 1} ids")
        self.shard_starts = np.arange(batch_size, dtype=np.int64) * self.shard_length
        self.position = 0

    def next(self, k: int):
        j = (self.position + np.arange(k)) % self.n_windows
        self.position = int((j[-1] + 1) % self.n_windows)
        starts = self.shard_starts[None, :] + (j * self.seq_length)[:, None]
        return np.ascontiguousarray(starts, dtype=np.int64), j == 0


class StreamStep:
    """One call = one step of single-stream training on the next corpus window.

    Carries the hidden state from window to window like training does (reset
    when the walk wraps). ``update=True``: ``train_step`` (loss, grads, clip,
    Adagrad, in place on ``params``); ``update=False``: ``loss_and_grads`` only.
    ``module`` is :mod:`fastrnn` or :mod:`fastrnn.reference`; ``workspace``
    (fast path only) is passed through when given.
    """

    def __init__(self, module, params, ids, seq_length=SEQ_LENGTH, update=True, workspace=None):
        self.module = module
        self.params = params
        self.memory = params.zeros_like()
        self.windows = Windows(ids, seq_length)
        self.update = update
        self.kwargs = {} if workspace is None else {"workspace": workspace}
        self.h = np.zeros(params.hidden_size, params.dtype)

    def __call__(self):
        inputs, targets, wrapped = self.windows.next()
        if wrapped:
            self.h = np.zeros_like(self.h)
        if self.update:
            loss, self.h = self.module.train_step(self.params, self.memory, inputs, targets, self.h,
                                                  LEARNING_RATE, clip=CLIP, **self.kwargs)
        else:
            loss, _grads, self.h = self.module.loss_and_grads(self.params, inputs, targets, self.h,
                                                              clip=CLIP, **self.kwargs)
        return loss


#: (implementation, module, dtype, workspace?)
IMPLEMENTATIONS = [
    ("reference", reference, np.float64, False),
    ("numba", fastrnn, np.float64, True),
    ("numba", fastrnn, np.float32, True),
]
IMPLEMENTATION_IDS = [f"{name}-{np.dtype(dt).name}" for name, _, dt, _ in IMPLEMENTATIONS]

#: The seed's public API as a port of min-char-rnn calls it: ``fastrnn.loss_and_grads`` /
#: ``fastrnn.train_step`` with no workspace (scratch arrays made on every call), one call
#: per sequence, float64. Only the step groups (train_step, forward_backward) run it.
SEED_API = ("numba-api", fastrnn, np.float64, False)
STEP_IMPLEMENTATIONS = IMPLEMENTATIONS + [SEED_API]
STEP_IMPLEMENTATION_IDS = [f"{name}-{np.dtype(dt).name}" for name, _, dt, _ in STEP_IMPLEMENTATIONS]


def run_stream_benchmark(benchmark, corpus, threads, kind, update, implementation, hidden_size, plans):
    """Benchmark one StreamStep of ``implementation`` (an entry of IMPLEMENTATIONS).

    plans: implementation name -> hidden size -> (rounds, steps per round).
    """
    name, module, dtype, uses_workspace = implementation
    ids, vocab_size = corpus
    params = fastrnn.init_params(vocab_size, hidden_size, seed=0, dtype=dtype)
    workspace = fastrnn.Workspace(vocab_size, hidden_size, SEQ_LENGTH, dtype) if uses_workspace else None
    step = StreamStep(module, params, ids, SEQ_LENGTH, update=update, workspace=workspace)
    describe(benchmark, kind=kind, implementation=name, dtype=dtype, hidden_size=hidden_size,
             vocab_size=vocab_size, seq_length=SEQ_LENGTH, chars_per_step=SEQ_LENGTH, threads=threads)
    if not benchmark.disabled:
        step()  # compile (or load from cache) before anything is timed
    rounds, iterations = plans[name][hidden_size]
    loss = benchmark.pedantic(step, **plan(rounds, iterations))
    assert np.isfinite(loss)
