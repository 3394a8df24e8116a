"""How the kernels share the cores: Numba's threading layer, its thread count and the BLAS thread count.

Threading layer: OpenMP first. A step of a small model is short and enters
two parallel regions; OpenMP's workers spin briefly before sleeping, while the
workqueue layer's sleep at once and are slow to wake, which costs a small
model most of its 2-thread speed-up. The workqueue layer stays as the fallback where no OpenMP runtime loads. Set on
import, before any parallel kernel runs; a user's NUMBA_THREADING_LAYER wins.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "default"
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

_blas_lock = threading.Lock()
_blas_controller = None


def blas_controller():
    """A threadpoolctl controller over the loaded BLAS libraries, numpy's and SciPy's (np.dot in Numba uses
    SciPy's), made once: a limit through it costs ~10 us, through a new one milliseconds."""
    global _blas_controller
    with _blas_lock:
        if _blas_controller is None:
            import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS Numba calls before looking)
            from threadpoolctl import ThreadpoolController
            _blas_controller = ThreadpoolController()
        return _blas_controller


def blas_threads(threads):
    """A context holding BLAS (numpy's and the one Numba's ``np.dot`` calls) to ``threads`` threads."""
    return blas_controller().limit(limits=int(threads), user_api="blas")


@contextlib.contextmanager
def numba_threads(n):
    """Numba's thread count at least ``n`` (within NUMBA_NUM_THREADS) inside the context."""
    previous = numba.get_num_threads()
    wanted = min(max(int(n), previous), numba.config.NUMBA_NUM_THREADS)
    if wanted == previous:
        yield
        return
    numba.set_num_threads(wanted)
    try:
        yield
    finally:
        numba.set_num_threads(previous)
