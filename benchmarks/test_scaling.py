"""Group ``scaling``: how much a second thread gives on this machine for work that needs no sharing.

The batched bars ask 2 threads for >= 1.8x one thread. This group measures the
machine's own ceiling for that ratio in the same run: two independent chunks
of the elementwise work of a batched step (fastrnn's vectorised ``tanh`` of the
gates and ``exp`` of the softmax over (rows, H) float32 blocks, each block
private to its chunk and L2-resident) and two independent small GEMMs ((16, 100) @ (100, 100) float32,
the recurrent product of a 32-stream chunk at H = 100). Each call runs both
chunks: one after the other on one thread, or side by side on two Numba threads
(BLAS held to one thread inside). The report divides the 1-thread median by the
2-thread median; a result well under 2x on this work, where nothing is shared,
is a limit of the machine rather than of fastrnn's kernels.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest
from numba import prange

from fastrnn import gate_math, kernels

from ._support import QUICK, blas_threads, pinned_threads, plan

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - depends on the environment
    threadpool_limits = None

ROWS, HIDDEN = 400, 100  # elementwise: one chunk of 16 streams x 25 steps at H = 100
GEMM_ROWS = 16
REPEATS = {"elementwise": 200, "small-gemm": 2000}  # per call, so one call takes ~10-40 ms
ROUNDS = 15


@numba.njit(nogil=True)
def _elementwise_chunk(block, x, repeats):
    """block (ROWS, H): tanh(. + x) then exp(. - 1) per row, ``repeats`` times (values stay in [0, 1])."""
    for _ in range(repeats):
        for r in range(block.shape[0]):
            row = block[r]
            for k in range(row.shape[0]):
                row[k] = gate_math.tanh(row[k] + x[k])
            kernels.exp_sub_inplace(block[r], block.dtype.type(1))


@numba.njit(nogil=True)
def _gemm_chunk(a, w, out, repeats):
    for _ in range(repeats):
        np.dot(a, w, out)


@numba.njit(parallel=True)
def _elementwise_both(blocks, xs, repeats):
    for c in prange(blocks.shape[0]):
        _elementwise_chunk(blocks[c], xs[c], repeats)


@numba.njit
def _elementwise_serial(blocks, xs, repeats):
    for c in range(blocks.shape[0]):
        _elementwise_chunk(blocks[c], xs[c], repeats)


@numba.njit(parallel=True)
def _gemm_both(a, w, out, repeats):
    for c in prange(a.shape[0]):
        _gemm_chunk(a[c], w[c], out[c], repeats)


@numba.njit
def _gemm_serial(a, w, out, repeats):
    for c in range(a.shape[0]):
        _gemm_chunk(a[c], w[c], out[c], repeats)


@pytest.mark.parametrize("work", ["elementwise", "small-gemm"])
@pytest.mark.parametrize("n_threads", [1, 2], ids=["1t", "2t"])
def test_thread_scaling(benchmark, threads, n_threads, work):
    if n_threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"{n_threads} threads asked, numba allows {numba.config.NUMBA_NUM_THREADS} on this machine")
    benchmark.group = "scaling"
    rng = np.random.default_rng(0)
    repeats = REPEATS[work]
    if work == "elementwise":
        data = (rng.standard_normal((2, ROWS, HIDDEN)).astype(np.float32),
                rng.standard_normal((2, HIDDEN)).astype(np.float32))
        fn = _elementwise_both if n_threads > 1 else _elementwise_serial
    else:
        data = (rng.standard_normal((2, GEMM_ROWS, HIDDEN)).astype(np.float32),
                rng.standard_normal((2, HIDDEN, HIDDEN)).astype(np.float32),
                np.zeros((2, GEMM_ROWS, HIDDEN), np.float32))
        fn = _gemm_both if n_threads > 1 else _gemm_serial
    benchmark.extra_info.update(
        kind="scaling", implementation=work, dtype="float32", hidden_size=HIDDEN, vocab_size=None,
        seq_length=None, batch_size=None, threads=n_threads, chars_per_step=None, flops_per_char=None,
        chunks=2, repeats=repeats, quick=QUICK,
    )
    with pinned_threads(n_threads):
        # Inside the parallel region each chunk's BLAS call must stay on its own thread.
        limit = threadpool_limits(limits=1, user_api="blas") if threadpool_limits else None
        try:
            benchmark.extra_info.update(blas_threads=blas_threads(), numba_threads=numba.get_num_threads())
            fn(*data, 1)  # compile and warm up
            benchmark.pedantic(fn, args=(*data, repeats), **plan(ROUNDS))
        finally:
            if limit is not None:
                limit.restore_original_limits()
    assert np.all(np.isfinite(data[-1]))
