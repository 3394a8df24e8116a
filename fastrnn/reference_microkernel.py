"""The numpy twin of :mod:`fastrnn.microkernel`: the packed product written as plain numpy."""
from __future__ import annotations

import numpy as np


def unpack_panels(Wp: np.ndarray, N: int) -> np.ndarray:
    """W (K, N) from its panels Wp (P, K, NR): ``W[k, p * NR + j] = Wp[p, k, j]`` (a new array)."""
    P, K, NR = Wp.shape
    return np.ascontiguousarray(Wp.transpose(1, 0, 2).reshape(K, P * NR)[:, :N])


def matmul_packed_reference(A, Wp, N, out, accumulate=False):
    """out (M, N) = A (M, K) @ W, or out += A @ W when ``accumulate``; W = :func:`unpack_panels` (Wp, N).

    Same signature and meaning as :func:`fastrnn.microkernel.matmul_packed`; numpy's matmul (BLAS)
    sums k in its own order."""
    product = A @ unpack_panels(Wp, N)
    if accumulate:
        out += product
    else:
        out[...] = product
