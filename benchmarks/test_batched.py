"""Group ``train_step H=... B=...`` (kind ``batch_train_step``): minibatched training, 1 and 2 threads.

fastrnn: :func:`fastrnn.batch.batch_train_steps` with a ``BatchWorkspace(V, H,
25, B, dtype, threads=n)`` allocated once; each timed call runs several steps
(B = 1: the seed's kernel loop in one call; B > 1: the engine's steps, as the
trainer runs them). PyTorch: ``test_torch.py``'s model with a batch dimension
(``nn.RNN(tanh)`` + ``nn.Linear`` + cross-entropy summed over the B * T
characters and divided by B, as fastrnn scales its loss + ``clip_grad_value_(5)``
+ ``Adagrad(lr=0.1, eps=1e-8)``), the same number of steps per call.

Data, the same for both: tiny shakespeare cut into B equal shards; stream b
walks shard b in consecutive 25-character windows, its hidden state carried
from window to window (reset when the walk wraps to the start of its shard).

H in 100 and 512, B in 1, 32 and 128, 1 and 2 threads, float64 and float32.
Threads are pinned in code: numba and every BLAS/OpenMP pool to n
(``_support.pinned_threads``), torch with ``torch.set_num_threads(n)``.
Inside ``batch_train_steps`` fastrnn itself runs its chunks or parts on n
threads and holds BLAS to one thread (it restores the pools on return); the
PyTorch rows run with BLAS/OpenMP at n.

Group ``thread scaling`` (kind ``thread_scaling``): fastrnn's 2-thread speed-up
at B in 32 and 128, measured with the 1-thread and the 2-thread call
*alternated* round by round (a 1-thread call, then a 2-thread call, same steps
per call, each timed after one untimed call of its own that wakes its threads
and caches), so that a busy spell on the shared machine slows both sides
rather than only one of the two separately timed rows: a cross-check shown in
the report. It reads lower than the steady-state rows (switching thread counts
between calls costs the 2-thread side), so the issue-5 bars use the rows.

The rows are stored with kind ``batch_train_step`` (not ``train_step``): at
B=1, 1 thread they would otherwise share their report key with the batch-1
``fastrnn.train_step`` / PyTorch rows of ``test_train_step.py`` and
``test_torch.py``, which measure different calls.
"""
from __future__ import annotations

import time

import numba
import numpy as np
import pytest

import fastrnn
from fastrnn import batch as fbatch

from ._support import (CLIP, LEARNING_RATE, SEQ_LENGTH, ShardWindows, describe, pinned_threads, plan,
                       threadpool_limits)

try:
    import torch
except ImportError as error:  # optional extra: the PyTorch rows are skipped, the fastrnn rows run
    torch, TORCH_MISSING = None, (f"PyTorch is not importable (optional 'torch' extra), "
                                  f"no PyTorch rows: {error}")
else:
    TORCH_MISSING = None

KIND = "batch_train_step"
HIDDEN_SIZES = (100, 512)
BATCH_SIZES = (1, 32, 128)
THREADS = (1, 2)
DTYPE_NAMES = ("float64", "float32")

#: (H, B) -> (rounds, steps per timed call). Measured on 2 cores, one thread, float64
#: (float32 is ~2x faster): fastrnn ~0.25 / 2.8 / 10 ms a step at H=100, B=1 / 32 / 128,
#: ~4 / 36 / 125 ms at H=512; PyTorch ~1.5 / 7.6 / 32 ms and ~20 / 110 / 180 ms.
#: About 1 s of timed work per row; the whole group takes ~1-2 minutes.
PLANS = {
    "numba": {(100, 1): (40, 40), (100, 32): (30, 8), (100, 128): (20, 4),
              (512, 1): (30, 4), (512, 32): (15, 2), (512, 128): (10, 1)},
    "pytorch": {(100, 1): (40, 10), (100, 32): (30, 4), (100, 128): (20, 2),
                (512, 1): (20, 2), (512, 32): (12, 1), (512, 128): (10, 1)},
}
#: Steps per call in the untimed smoke run of a plain ``pytest``.
SMOKE_STEPS = 1


class FastrnnBatchSteps:
    """One call = ``steps`` batched training steps of fastrnn in one kernel call, states carried."""

    def __init__(self, windows, vocab_size, hidden_size, dtype, threads, steps):
        B = windows.batch_size
        self.windows, self.steps, self.threads = windows, steps, threads
        self.params = fastrnn.init_params(vocab_size, hidden_size, seed=0, dtype=dtype)
        self.memory = self.params.zeros_like()
        self.workspace = fbatch.BatchWorkspace(vocab_size, hidden_size, SEQ_LENGTH, B, dtype, threads=threads)
        self.h = np.zeros((B, hidden_size), dtype)

    def __call__(self):
        starts, resets = self.windows.next(self.steps)
        losses = fbatch.batch_train_steps(self.params, self.memory, self.windows.data, starts, resets, self.h,
                                          LEARNING_RATE, self.workspace, clip=CLIP, threads=self.threads)
        return float(losses[-1])


if torch is not None:
    nn, F = torch.nn, torch.nn.functional
    TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}

    from .torch_models import CharModel

    class TorchBatchSteps:
        """One call = ``steps`` PyTorch training steps on the next windows of every shard, states carried."""

        def __init__(self, windows, vocab_size, hidden_size, dtype, steps):
            torch.manual_seed(0)
            B = windows.batch_size
            self.windows, self.steps, self.vocab_size, self.dtype = windows, steps, vocab_size, dtype
            self.model = CharModel("rnn", vocab_size, hidden_size).to(dtype)
            self.optimizer = torch.optim.Adagrad(self.model.parameters(), lr=LEARNING_RATE, eps=1e-8)
            self.h = torch.zeros(1, B, hidden_size, dtype=dtype)
            self.offsets = np.arange(SEQ_LENGTH + 1)

        def __call__(self):
            starts, resets = self.windows.next(self.steps)
            B, T, V = self.windows.batch_size, SEQ_LENGTH, self.vocab_size
            for s in range(self.steps):
                if resets[s]:
                    self.h = torch.zeros_like(self.h)
                ids = torch.from_numpy(self.windows.data[starts[s][None, :] + self.offsets[:, None]])  # (T+1, B)
                logits, h = self.model(ids[:-1], self.h)  # (T, B) ids, one-hot inside
                loss = F.cross_entropy(logits.reshape(T * B, V), ids[1:].reshape(T * B), reduction="sum") / B
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_value_(self.model.parameters(), CLIP)
                self.optimizer.step()
                self.h = h.detach()
            return loss.item()


def _torch_threads(n):
    """torch.set_num_threads(n) until the returned callable is called (which restores it)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    return lambda: torch.set_num_threads(old)


@pytest.mark.parametrize("threads", THREADS, ids=[f"{n}t" for n in THREADS])
@pytest.mark.parametrize("batch_size", BATCH_SIZES, ids=[f"B{b:03d}" for b in BATCH_SIZES])
@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES, ids=[f"H{h:03d}" for h in HIDDEN_SIZES])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
@pytest.mark.parametrize("implementation", ["numba", "pytorch"])
def test_batch_train_step(benchmark, corpus, implementation, dtype_name, hidden_size, batch_size, threads):
    if implementation == "pytorch" and torch is None:
        pytest.skip(TORCH_MISSING)
    if threadpool_limits is None and not benchmark.disabled:
        pytest.skip("threadpoolctl is not installed, so BLAS threads cannot be pinned: "
                    "pip install threadpoolctl (the 'bench' extra)")
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"{threads} threads asked, numba allows {numba.config.NUMBA_NUM_THREADS} on this machine")
    ids, vocab_size = corpus
    H, B = hidden_size, batch_size
    benchmark.group = f"train_step H={H:03d} B={B:03d}"
    rounds, steps = PLANS[implementation][(H, B)]
    if benchmark.disabled:
        steps = SMOKE_STEPS
    windows = ShardWindows(ids, B, SEQ_LENGTH)
    dtype = np.dtype(dtype_name)
    more = {"steps_per_call": steps, "shard_chars": windows.shard_length}
    restore_torch = None
    with pinned_threads(threads):
        if implementation == "numba":
            step = FastrnnBatchSteps(windows, vocab_size, H, dtype, threads, steps)
            more.update(api="fastrnn.batch.batch_train_steps", chunks=step.workspace.n_chunks,
                        split=step.workspace.split, blas_threads_in_kernel=1)
        else:
            restore_torch = _torch_threads(threads)
            step = TorchBatchSteps(windows, vocab_size, H, TORCH_DTYPES[dtype_name], steps)
            more.update(torch_version=torch.__version__, torch_threads=torch.get_num_threads())
        try:
            if not benchmark.disabled:
                step()  # compile or load kernels, allocate optimizer state, start thread pools
            if implementation == "numba":
                more["numba_threading_layer"] = _threading_layer()
            describe(benchmark, kind=KIND, implementation=implementation, dtype=dtype, hidden_size=H,
                     vocab_size=vocab_size, seq_length=SEQ_LENGTH, chars_per_step=B * SEQ_LENGTH * steps,
                     threads=threads, batch_size=B, **more)
            loss = benchmark.pedantic(step, **plan(rounds))
        finally:
            if restore_torch is not None:
                restore_torch()
    assert np.isfinite(loss)


def _threading_layer():
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet (serial path only)
        return None


SCALING_BATCH_SIZES = (32, 128)


@pytest.mark.parametrize("batch_size", SCALING_BATCH_SIZES, ids=[f"B{b:03d}" for b in SCALING_BATCH_SIZES])
@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES, ids=[f"H{h:03d}" for h in HIDDEN_SIZES])
@pytest.mark.parametrize("dtype_name", DTYPE_NAMES)
def test_batch_thread_scaling(benchmark, corpus, dtype_name, hidden_size, batch_size):
    """One timed call = a 1-thread call then a 2-thread call of fastrnn; their own medians go to extra_info."""
    if threadpool_limits is None and not benchmark.disabled:
        pytest.skip("threadpoolctl is not installed, so BLAS threads cannot be pinned: "
                    "pip install threadpoolctl (the 'bench' extra)")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip(f"2 threads asked, numba allows {numba.config.NUMBA_NUM_THREADS} on this machine")
    ids, vocab_size = corpus
    H, B = hidden_size, batch_size
    benchmark.group = "thread scaling"
    rounds, steps = PLANS["numba"][(H, B)]
    if benchmark.disabled:
        steps = SMOKE_STEPS
    dtype = np.dtype(dtype_name)
    steppers = {}
    for n in (1, 2):
        with pinned_threads(n):
            steppers[n] = FastrnnBatchSteps(ShardWindows(ids, B, SEQ_LENGTH), vocab_size, H, dtype, n, steps)
    times = {1: [], 2: []}

    def one_of_each():
        for n in (1, 2):
            with pinned_threads(n):
                steppers[n]()  # untimed: wake this side's threads and caches after the other side ran
                start = time.perf_counter()
                loss = steppers[n]()
                times[n].append(time.perf_counter() - start)
        return loss

    if not benchmark.disabled:
        one_of_each()  # compile or load kernels, start thread pools
        times[1].clear()
        times[2].clear()
    loss = benchmark.pedantic(one_of_each, **plan(rounds))
    benchmark.extra_info.update(
        kind="thread_scaling", implementation="numba", dtype=dtype_name, hidden_size=H, vocab_size=vocab_size,
        seq_length=SEQ_LENGTH, batch_size=B, threads=2, chars_per_step=None, flops_per_char=None,
        chars_per_call=B * SEQ_LENGTH * steps, steps_per_call=steps, rounds_each=len(times[1]),
        median_1t=float(np.median(times[1])), median_2t=float(np.median(times[2])),
        split_2t=steppers[2].workspace.split, chunks_2t=steppers[2].workspace.n_chunks)
    assert np.isfinite(loss)
