"""Arrays aligned to a cache line (64 bytes), for everything fastrnn allocates.

numpy only guarantees 16-byte alignment. The kernels' vector loads run along
rows; when an array starts 8, 16 or 48 bytes past a cache line, a 64-byte
AVX-512 load straddles two lines. Measured on the 2-core machine: a batch-1
training step at H = 512 (float64) ran 15-45 % slower with its arrays at a
16-byte offset than with 64-byte-aligned ones, and ~5 % slower at H = 100, so
speed changed from one process to the next with wherever malloc put them.

Ground floor: numpy only.
"""
from __future__ import annotations

import math

import numpy as np

ALIGNMENT = 64


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    return aligned_group([shape], dtype)[0]


def aligned_group(shapes, dtype) -> list:
    """Uninitialised C-contiguous arrays of ``shapes``, each starting on a 64-byte boundary.

    All of them are cut from one allocation: one call to the allocator and one
    address lookup for a whole set of gradients (the seed's API makes one set
    per call).
    """
    dtype = np.dtype(dtype)
    shapes = [_shape(s) for s in shapes]
    sizes = [math.prod(s) * dtype.itemsize for s in shapes]
    buffer = np.empty(sum(_whole_lines(n) for n in sizes) + ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % ALIGNMENT
    out = []
    for shape, nbytes in zip(shapes, sizes):
        out.append(buffer[start:start + nbytes].view(dtype).reshape(shape))
        start += _whole_lines(nbytes)
    return out


def _whole_lines(nbytes) -> int:
    """``nbytes`` rounded up to whole cache lines."""
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


def _shape(shape) -> tuple:
    if type(shape) is tuple:
        return shape
    return (int(shape),) if np.isscalar(shape) else tuple(shape)


def aligned_zeros(shape, dtype) -> np.ndarray:
    out = aligned_empty(shape, dtype)
    out[...] = 0
    return out


def is_aligned(a: np.ndarray) -> bool:
    return a.flags.c_contiguous and a.ctypes.data % ALIGNMENT == 0


def aligned_copy(a, dtype=None) -> np.ndarray:
    """A new 64-byte-aligned C-contiguous copy of ``a`` (cast to ``dtype`` if given)."""
    a = np.asarray(a)
    out = aligned_empty(a.shape, a.dtype if dtype is None else dtype)
    out[...] = a
    return out


def aligned(a, dtype=None) -> np.ndarray:
    """``a`` itself when it already is a C-contiguous, 64-byte-aligned array of ``dtype``; else an aligned copy."""
    a = np.asarray(a)
    if (dtype is None or a.dtype == np.dtype(dtype)) and is_aligned(a):
        return a
    return aligned_copy(a, dtype)
