"""Group ``gemm``: the machine's own matrix-multiply peak, measured in the same run.

numpy's matmul of two 2048 x 2048 matrices (float64 and float32) on one and on
two BLAS threads: 2 * 2048^3 flops per call. The report divides every
implementation's flops per second by the GEMM figure of the same dtype and
thread count ("fraction of peak").
"""
from __future__ import annotations

import numpy as np
import pytest

import numba

from ._support import QUICK, blas_threads, pinned_threads, plan

MATRIX_SIZE = 2048
ROUNDS = 5


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("blas", [1, 2], ids=["1t", "2t"])
def test_gemm(benchmark, threads, blas, dtype):
    """``threads`` (the suite's fixture) pins everything to one thread; 2t re-pins to two inside it."""
    if blas > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"{blas} threads asked, numba allows {numba.config.NUMBA_NUM_THREADS} on this machine")
    benchmark.group = "gemm"
    with pinned_threads(blas):
        _gemm(benchmark, blas, dtype)


def _gemm(benchmark, threads, dtype):
    n = MATRIX_SIZE
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype)
    benchmark.extra_info.update(
        kind="gemm", implementation="numpy-matmul", dtype=np.dtype(dtype).name,
        hidden_size=None, vocab_size=None, seq_length=None, batch_size=None, threads=threads,
        chars_per_step=None, flops_per_char=None, matrix_size=n, flops_per_call=2 * n ** 3,
        quick=QUICK, blas_threads=blas_threads(),
    )
    if not benchmark.disabled:
        np.matmul(a, b, out=c)  # fault in pages, spin up the BLAS pool

    benchmark.pedantic(np.matmul, args=(a, b), kwargs={"out": c}, **plan(ROUNDS))
    assert np.isfinite(c[0, 0])
