"""A trained model with its vocabulary, for sampling and scoring: :class:`CharModel` and its :class:`Score`.

Scoring reads the ids ``SCORE_WINDOW`` at a time (:func:`score_windows`), so a held-out split of any size
(a memmap) is scored in bounded memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import inference
from ._validate import check_model
from .vocab import Vocab


LN2 = math.log(2.0)


SCORE_WINDOW = 1 << 20  # ids per forward-only kernel call when scoring: an 8 MB int64 copy at most


def score_windows(params, inputs, targets, per_char=False, window=SCORE_WINDOW, after_window=None):
    """``(nats, count, log_probs or None)`` of ``targets`` given ``inputs``, from a zero hidden state.

    ``inputs``/``targets`` may be any integer arrays (e.g. memmap slices): they are
    read, and copied to int64 by :mod:`.rnn`, ``window`` ids at a time, with the
    hidden state carried across windows. The result is that of one pass over the
    whole sequence but for summation order: each window's loss is accumulated in
    float64 by the kernel, and the windows' losses are summed here in float64
    (with a single window the result is identical).
    ``after_window()``, if given, runs after each window (e.g. to release pages).
    """
    inputs = inputs if hasattr(inputs, "dtype") else np.asarray(inputs)
    targets = targets if hasattr(targets, "dtype") else np.asarray(targets)
    h = None  # the (L, 1, H) state, carried
    count = int(targets.size)
    if inputs.shape != targets.shape or inputs.ndim != 1 or count <= window:  # one call, which reports bad shapes
        pairs = [(inputs, targets)]
    else:
        pairs = ((inputs[s:s + window], targets[s:s + window]) for s in range(0, count, window))
    out = np.empty(count, np.float64) if per_char else None
    nats, done = 0.0, 0
    for x, y in pairs:
        if per_char:  # inference copies each window to int64 and checks its ids
            lp, h = inference.log_probs(params, x, y, h)
            out[done:done + lp.size] = lp
        else:
            loss, h = inference.sequence_loss(params, x, y, h)
            nats += loss
        done += y.size
        if after_window is not None:
            after_window()
    if per_char:
        nats = float(-out.sum())
    return nats, count, out


@dataclass(repr=False)
class Score:
    """Loss of a text under a model: ``nats`` summed over ``count`` predicted symbols; per character in
    :attr:`nats_per_char` and :attr:`bits_per_char`."""

    nats: float
    count: int
    log_probs: np.ndarray | None = None  # (count,) natural-log probability of each symbol, when asked for

    @property
    def nats_per_char(self) -> float:
        return self.nats / self.count

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / LN2

    def __repr__(self):
        return (f"Score(nats_per_char={self.nats_per_char:.6g}, bits_per_char={self.bits_per_char:.6g}, "
                f"count={self.count}, nats={self.nats:.6g})")


class CharModel:
    """A trained model with its vocabulary: sample text from it, score text under it."""

    def __init__(self, params, vocab: Vocab):
        """``params``: a :class:`~fastrnn.model.ModelParams` (or the seed's :class:`Params`, copied into one)."""
        params = check_model(params)
        self.params, self.vocab = params.astype(params.dtype), vocab  # cache-line aligned (copies only if not)

    def encode(self, text) -> np.ndarray:
        """Ids of ``text`` (str, or bytes in bytes mode); unknown symbols raise a ``ValueError`` listing them."""
        return self.vocab.encode(text)

    def score(self, text, per_char=False) -> Score:
        """Loss of ``text`` (or of an id array): each symbol after the first predicted from those before it.

        The hidden state starts from zeros. ``per_char=True`` also returns each
        symbol's log-probability.
        """
        ids = text if isinstance(text, np.ndarray) else self.encode(text)
        if ids.size < 2:
            raise ValueError("scoring needs a text of at least 2 characters")
        return self.score_ids(ids[:-1], ids[1:], per_char)

    def score_ids(self, inputs, targets, per_char=False) -> Score:
        """Loss of ``targets`` given ``inputs`` (the symbol before each target), from a zero hidden state.

        Any integer arrays (e.g. memmap slices), read ``SCORE_WINDOW`` ids at a time (:func:`score_windows`).
        """
        nats, count, lp = score_windows(self.params, inputs, targets, per_char)
        return Score(nats, count, lp)

    def sample(self, length, prime=None, temperature=1.0, seed=None, argmax=False, top_k=None, top_p=None):
        """Sample ``length`` symbols; returns the new text only (str, or bytes in bytes mode).

        ``prime``: text to continue. The hidden state is warmed on all of it but its
        last symbol (forward only), then sampling is seeded with the last symbol.
        Without a prime: zero state, seeded with a newline (or, if the vocabulary
        has none, a random symbol). ``seed`` (int, Generator or None) fixes the draws.
        ``top_k`` (positive int) / ``top_p`` (in (0, 1]): draw only among the k most
        likely symbols, then the smallest set of the most likely holding p of the mass.
        """
        pieces = self.sample_chunks(length, prime, temperature, seed, argmax, top_k=top_k, top_p=top_p)
        return b"".join(pieces) if self.vocab.bytes_mode else "".join(pieces)

    def sample_chunks(self, length, prime=None, temperature=1.0, seed=None, argmax=False, chunk=inference.SAMPLE_CHUNK,
                      top_k=None, top_p=None):
        """:meth:`sample` as pieces of at most ``chunk`` symbols, drawn as they are consumed (bounded memory);
        joined, they are exactly the text :meth:`sample` returns for the same arguments."""
        rng, h, first_id, temperature, length = self.sample_start(length, prime, temperature, seed)  # errors now
        chunks = inference.sample_chunks(self.params, h, first_id, length, seed=rng, temperature=temperature,
                                         argmax=argmax, chunk=chunk, top_k=top_k, top_p=top_p)
        return (self.vocab.decode(out) for out in chunks)

    def sample_start(self, length, prime, temperature, seed):
        """Where :meth:`sample_chunks` starts: ``(rng, state, first_id, temperature, length)``, the arguments
        checked, ``state`` after the prime but its last symbol (a tuple of (L, 1, H), or None: zeros),
        ``first_id`` the prime's last symbol (else a newline, else one drawn from ``rng``)."""
        temperature = float(temperature)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        length = int(length)
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        rng = np.random.default_rng(seed)
        h = None  # a zero (L, 1, H) state
        if prime:
            ids = self.encode(prime)
            if ids.size > 1:
                _, h = inference.sequence_loss(self.params, ids[:-1], ids[1:])
            first_id = int(ids[-1])
        else:
            newline = self.vocab.id_of(10)
            first_id = newline if newline is not None else int(rng.integers(len(self.vocab)))
        return rng, h, first_id, temperature, length
