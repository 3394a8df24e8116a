"""Numba compilation flags, in one place for the whole package.

``exact`` kernels (clip, Adagrad, sampling's inverse CDF) compile without
fastmath, so the Adagrad update is bit-identical to numpy. ``fast`` kernels may
reassociate and contract sums (that is what lets the dot products vectorise and
use FMA); they never assume away NaN or Inf (no ``nnan``/``ninf``), so a
diverging run still shows up as NaN.

Numba's on-disk cache keys a compiled function on the contents of its own
source file only, yet a kernel carries compiled into it the functions it calls
from other files (the gates, the micro-kernel): edit one of those and the
cached kernel would keep the old code. So every function cached from fastrnn's
package (and, in a source checkout, from the tests and benchmarks beside it)
is keyed on its own file and on all the kernel modules' sources
(:data:`KERNEL_MODULES`) together: changing any of them recompiles every
kernel once.
"""
from __future__ import annotations

import functools
import hashlib
import os

import numba
from numba.core import caching

#: the package's modules that define compiled functions (any of them may be compiled into another's)
KERNEL_MODULES = ("_numba.py", "gate_math.py", "microkernel.py", "kernels.py", "stream_kernels.py",
                  "cell_kernels.py", "cell_parts_kernels.py", "stack_kernels.py", "optim_kernels.py", "chunk_kernels.py")
PACKAGE_FOLDER = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(PACKAGE_FOLDER)  # the tests and benchmarks beside the package, in a source checkout
_KEYED_FOLDERS = tuple(os.path.join(folder, "") for folder in (
    PACKAGE_FOLDER, *(os.path.join(_CHECKOUT, d) for d in ("tests", "benchmarks")
                      if os.path.exists(os.path.join(_CHECKOUT, "pyproject.toml")))))


def kernel_sources_digest(folder: str = PACKAGE_FOLDER) -> str:
    """SHA-256 (hex) of the :data:`KERNEL_MODULES` of ``folder``, read in that order."""
    stats = tuple((st.st_mtime_ns, st.st_size) for st in (os.stat(os.path.join(folder, name))
                                                          for name in KERNEL_MODULES))
    return _digest(folder, stats)


@functools.lru_cache(maxsize=None)
def _digest(folder, stats):
    digest = hashlib.sha256()
    for name in KERNEL_MODULES:
        with open(os.path.join(folder, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


class _KeyedOnKernelSources:
    """A cache locator's mixin: for a file of fastrnn's folders, the stamp is the file's own and
    :func:`kernel_sources_digest`; other files are left to Numba's own locators."""

    def get_source_stamp(self):
        return super().get_source_stamp(), kernel_sources_digest()

    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.abspath(py_file).startswith(_KEYED_FOLDERS):
            return None
        return super().from_function(py_func, py_file)


class UserDirLocator(_KeyedOnKernelSources, caching.UserProvidedCacheLocator):
    """Numba's locator for ``NUMBA_CACHE_DIR``, keyed on the kernel sources too."""


class InTreeLocator(_KeyedOnKernelSources, caching.InTreeCacheLocator):
    """Numba's locator for the ``__pycache__`` beside the file, keyed on the kernel sources too."""


class UserWideLocator(_KeyedOnKernelSources, caching.UserWideCacheLocator):
    """Numba's locator for the user's cache folder (where ``__pycache__`` is not writable), keyed likewise."""


# first in Numba's list (after dropping those of an earlier import of this module, should it be reloaded)
caching.CacheImpl._locator_classes[:] = [UserDirLocator, InTreeLocator, UserWideLocator] + [
    cls for cls in caching.CacheImpl._locator_classes if cls.__module__ != __name__]

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
