"""Model parameters of the vanilla tanh RNN, under the seed's names and shapes.

Ground floor of the package: numpy only. Both the Numba path and the pure-numpy
reference twin take and return :class:`Params`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._aligned import aligned, aligned_copy, aligned_zeros

PARAM_NAMES = ("Wxh", "Whh", "Why", "bh", "by")
CLIP = 5.0  # the seed's clip: every gradient entry to [-5, 5]
ADAGRAD_EPS = 1e-8  # the seed's Adagrad: p -= lr * g / sqrt(m + 1e-8)


class Params(NamedTuple):
    """The five arrays of min-char-rnn.

    Wxh (H, V) input to hidden, Whh (H, H) hidden to hidden, Why (V, H) hidden to
    output, bh (H,) hidden bias, by (V,) output bias. The seed keeps the biases as
    column vectors (H, 1) and (V, 1); both layouts are accepted at the API
    boundary and normalised to 1-D.
    A gradient or an Adagrad memory is also a ``Params`` of the same shapes.
    """

    Wxh: np.ndarray
    Whh: np.ndarray
    Why: np.ndarray
    bh: np.ndarray
    by: np.ndarray

    @property
    def hidden_size(self) -> int:
        return int(self.Whh.shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.Why.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return self.Whh.dtype

    # copy, zeros_like and astype return 64-byte-aligned arrays (see fastrnn._aligned).

    def copy(self) -> "Params":
        return Params(*(aligned_copy(a) for a in self))

    def zeros_like(self) -> "Params":
        return Params(*(aligned_zeros(a.shape, a.dtype) for a in self))

    def astype(self, dtype) -> "Params":
        """The arrays as C-contiguous, aligned ``dtype`` arrays (the same arrays where they already are)."""
        return Params(*(aligned(a, dtype) for a in self))


def init_params(vocab_size: int, hidden_size: int, seed=None, dtype=np.float64) -> Params:
    """The seed's initialisation: weights ``randn * 0.01``, zero biases.

    Draws Wxh, Whh, Why in that order from ``numpy.random.default_rng(seed)`` in
    float64, then casts, so a float32 model starts from the rounded float64 one.
    """
    vocab_size, hidden_size = int(vocab_size), int(hidden_size)
    if vocab_size < 1 or hidden_size < 1:
        raise ValueError(
            f"vocab_size and hidden_size must be positive, got {vocab_size} and {hidden_size}"
        )
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    rng = np.random.default_rng(seed)
    Wxh = rng.standard_normal((hidden_size, vocab_size)) * 0.01
    Whh = rng.standard_normal((hidden_size, hidden_size)) * 0.01
    Why = rng.standard_normal((vocab_size, hidden_size)) * 0.01
    bh = np.zeros(hidden_size)
    by = np.zeros(vocab_size)
    return Params(Wxh, Whh, Why, bh, by).astype(dtype)


class SeedGrads(Params):
    """Gradients of the seed's five arrays (a :class:`Params` that :func:`fastrnn.to_torch` reads as ``.grad``)."""

    __slots__ = ()
    is_gradient = True
