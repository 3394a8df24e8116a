"""Numba compilation flags, in one place for the whole package.

``exact`` kernels (clip, Adagrad, sampling's inverse CDF) compile without
fastmath, so the Adagrad update is bit-identical to numpy. ``fast`` kernels may
reassociate and contract sums (that is what lets the dot products vectorise and
use FMA); they never assume away NaN or Inf (no ``nnan``/``ninf``), so a
diverging run still shows up as NaN.
"""
from __future__ import annotations

import numba

FASTMATH = frozenset({"reassoc", "contract", "nsz", "arcp"})

_COMMON = dict(cache=True, nogil=True, error_model="numpy")


def exact(fn):
    """Compile ``fn`` with IEEE-exact arithmetic.

    ``fastmath=False`` is spelled out: a kernel that leaves the option unset
    inherits its *caller's* fastmath when it is first compiled as a callee
    (Numba's flag inheritance), so an exact helper called from a ``fast``
    kernel would silently be compiled, and cached, with reassociation.
    """
    return numba.njit(fastmath=False, **_COMMON)(fn)


def fast(fn):
    """Compile ``fn`` allowing reassociation and FMA contraction."""
    return numba.njit(fastmath=set(FASTMATH), **_COMMON)(fn)


def parallel(fn):
    """Compile ``fn`` with ``parallel=True`` (its ``prange`` loops run on Numba's threads), exact arithmetic.

    Not fastmath: an LSTM kernel with a ``prange`` compiled with it ran other instructions once loaded
    from the cache than when just compiled (``tests/test_cells.py::test_another_process_computes_the_same_bits``)."""
    return numba.njit(parallel=True, fastmath=False, **_COMMON)(fn)


def fast_inline(fn):
    """:func:`fast`, inlined into its callers by Numba itself (``inline="always"``), so that it is compiled
    as part of each kernel that calls it. Compiled as a function of its own, a helper this size made its
    callers run other instructions once loaded from the cache than when just compiled (other bits in the
    last place: a resume in a new process was no longer exact); inlined, it runs with its caller's flags."""
    return numba.njit(fastmath=set(FASTMATH), inline="always", **_COMMON)(fn)
