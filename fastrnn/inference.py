"""Scoring and sampling with the engine: one stream's loss or per-step log-probabilities over a text of
any length, the output logits of B streams, and samples drawn a piece at a time (forward only, BLAS at one
thread: one stream's products are too small to share).

One stream of a 1-layer rnn runs its compiled kernels (:mod:`fastrnn.stream_kernels`, a character per
step with no workspace), every other model the engine's forward pass a chunk of steps at a time."""
from __future__ import annotations

import numpy as np

from . import kernels, stream_kernels
from ._threads import blas_threads
from ._validate import check_batch_ids, check_count, check_ids, check_model, check_state, check_top, inverse_temperature
from .engine import forward, last_state
from .model import ModelParams
from .streams import Stepper
from .workspaces import StackWorkspace


SCORE_CHUNK = 1024  # steps per forward-only kernel call when scoring a long text at batch 1
STREAM_CHUNK = 1 << 20  # ids per call of the one-stream kernels, which keep no per-step arrays: an 8 MB copy
SAMPLE_CHUNK = 1 << 16  # ids per piece of a long sample


def _stream_params(params: ModelParams):
    """The seed's :class:`~fastrnn.Params` (views) of a 1-layer rnn, whose one stream runs
    :mod:`fastrnn.stream_kernels`; None for any other model."""
    return params.as_seed() if params.spec.is_seed else None


def _check_lengths(inputs, targets) -> int:
    """The common length of two 1-D id sequences (any integer arrays, memmaps too), or a ValueError."""
    if np.ndim(inputs) != 1 or np.ndim(targets) != 1:
        raise ValueError(f"inputs and targets must be 1-D sequences of ids, got shapes {np.shape(inputs)} and "
                         f"{np.shape(targets)}")
    if len(inputs) != len(targets) or len(targets) == 0:
        raise ValueError(f"inputs and targets must have the same, non-zero length, got {len(inputs)} and "
                         f"{len(targets)}")
    return len(targets)


def sequence_loss(params: ModelParams, inputs, targets, state=None, chunk=SCORE_CHUNK):
    """Forward only, one stream of any length: ``(loss, state_last)``; the loss summed over the T steps.

    inputs, targets (T,) int ids (any integer arrays: read ``chunk`` steps at a
    time); ``state`` a tuple of (L, 1, H) arrays or None; carried across chunks.
    """
    params = check_model(params)
    spec = params.spec
    state = check_state(state, spec, 1, params.dtype)
    n = _check_lengths(inputs, targets)
    seed = _stream_params(params)
    step = chunk if seed is None else max(chunk, STREAM_CHUNK)
    ws = None
    loss = 0.0
    with blas_threads(1):  # one stream's products are too small to share: a second thread only waits
        for s in range(0, n, step):
            x = check_ids(np.asarray(inputs[s:s + step]), spec.vocab_size, "inputs")[None, :]
            y = check_ids(np.asarray(targets[s:s + step]), spec.vocab_size, "targets")[None, :]
            if x.shape != y.shape:
                raise ValueError("inputs and targets must have the same length")
            if seed is not None:
                h = state[0][0, 0]
                loss += stream_kernels.sequence_loss(np.empty(0), h, np.empty_like(h),
                                                     np.empty(spec.vocab_size, params.dtype), x[0], y[0], *seed)
                continue
            T = x.shape[1]
            if ws is None or ws.seq_length != T:
                ws = StackWorkspace(spec, T, 1, params.dtype)
            loss += forward(params, ws, x, y, state)
            last_state(ws, spec, 1, T, state)
    return float(loss), state


def log_probs(params: ModelParams, inputs, targets, state=None, chunk=SCORE_CHUNK):
    """Per-step ``log p(targets[t])`` (T,) float64 of one stream, and the last state."""
    params = check_model(params)
    spec = params.spec
    state = check_state(state, spec, 1, params.dtype)
    _check_lengths(inputs, targets)
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    out = np.empty(targets.shape[0], np.float64)
    seed = _stream_params(params)
    step = chunk if seed is None else max(chunk, STREAM_CHUNK)
    ws = None
    with blas_threads(1):  # as in sequence_loss
        for s in range(0, targets.shape[0], step):
            x = check_ids(inputs[s:s + step], spec.vocab_size, "inputs")[None, :]
            y = check_ids(targets[s:s + step], spec.vocab_size, "targets")[None, :]
            T = x.shape[1]
            if seed is not None:
                h = state[0][0, 0]
                stream_kernels.sequence_loss(out[s:s + T], h, np.empty_like(h), np.empty(spec.vocab_size, params.dtype),
                                             x[0], y[0], *seed)
                continue
            if ws is None or ws.seq_length != T:
                ws = StackWorkspace(spec, T, 1, params.dtype)
            forward(params, ws, x, y, state)
            last_state(ws, spec, 1, T, state)
            out[s:s + T] = np.log(ws.probs[np.arange(T), y[0]].astype(np.float64))
    return out, state


def trace(params: ModelParams, ids, top_k=5, chunk=SCORE_CHUNK):
    """What one stream of the model does over ``ids`` (N,), from a zero state: its states and predictions.

    Returns ``(states, top_ids, top_probs)``: ``states`` a dict ``{"h_l0": (N, H), "c_l0": (N, H) (an
    LSTM's), "h_l1": ..., ...}`` of each layer's state after each id, in the parameters' dtype;
    ``top_ids`` (N, k) int64 and ``top_probs`` (N, k) float64, the ``k = min(top_k, V)`` likeliest next ids
    after each id, likeliest first, and their probabilities. Any model, through the engine.
    """
    params = check_model(params)
    spec = params.spec
    ids = check_ids(np.asarray(ids), spec.vocab_size, "ids")
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"ids must be a non-empty 1-D sequence, got shape {ids.shape}")
    n, k = ids.size, min(int(top_k), spec.vocab_size)
    names = [f"{s}_l{layer}" for layer in range(spec.num_layers) for s in spec.state_names]
    states = {name: np.empty((n, spec.hidden_size), params.dtype) for name in names}
    top_ids, top_probs = np.empty((n, k), np.int64), np.empty((n, k), np.float64)
    state = check_state(None, spec, 1, params.dtype)
    ws = None
    with blas_threads(1):  # as in sequence_loss
        for s in range(0, n, chunk):
            x = ids[s:s + chunk][None, :]
            T = x.shape[1]
            if ws is None or ws.seq_length != T:
                ws = StackWorkspace(spec, T, 1, params.dtype)
            forward(params, ws, x, x, state)
            last_state(ws, spec, 1, T, state)
            for layer, a in enumerate(ws.layers):
                states[f"h_l{layer}"][s:s + T] = a["hs"][1:]
                if spec.cell == "lstm":
                    states[f"c_l{layer}"][s:s + T] = a["cs"][1:]
            probs = ws.probs[:T]
            order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            top_ids[s:s + T] = order
            top_probs[s:s + T] = np.take_along_axis(probs, order, axis=1)
    return states, top_ids, top_probs


def logits(params, inputs, state=None):
    """The output head's logits (B, T, V) of the parameters' dtype, and the last state, of B streams.

    inputs (T,) or (B, T) ids; ``state`` None (zeros) or a tuple of (L, B, H)
    arrays (not changed). Returns ``(logits, state_last)``, the state a tuple
    of (L, B, H). Any model (the 1-layer rnn through the generic engine).
    """
    params = check_model(params)
    spec = params.spec
    ids, _, _ = check_batch_ids(inputs, inputs, spec.vocab_size)
    B, T = ids.shape
    state = check_state(state, spec, B, params.dtype)
    ws = StackWorkspace(spec, T, B, params.dtype)
    forward(params, ws, ids, ids, state)
    last_state(ws, spec, B, T, state)
    top = ws.layers[-1]["hs"][B:]  # (T * B, H), time-major
    out = (top @ params["Why"].T + params["by"]).reshape(T, B, spec.vocab_size)
    return np.ascontiguousarray(out.transpose(1, 0, 2)), state


def sample(params: ModelParams, state, first_id, n, seed=None, temperature=1.0, argmax=False, top_k=None,
           top_p=None):
    """``n`` sampled ids (int64) from ``state`` (tuple of (L, 1, H) or None), the first input id ``first_id``.

    Draw t uses the t-th ``numpy.random.default_rng(seed).random()`` value
    through the inverse CDF of ``softmax(logits / temperature)``, as
    :func:`fastrnn.sample` does; ``argmax=True``: greedy; ``top_k``, ``top_p``:
    only the most likely ids (:func:`fastrnn.kernels.keep_top`). The numpy twin
    is :func:`fastrnn.reference.stack_sample`.
    """
    pieces = list(sample_chunks(params, state, first_id, n, seed, temperature, argmax, top_k=top_k, top_p=top_p))
    return np.concatenate(pieces) if pieces else np.empty(0, np.int64)


def sample_chunks(params: ModelParams, state, first_id, n, seed=None, temperature=1.0, argmax=False,
                  chunk=SAMPLE_CHUNK, top_k=None, top_p=None):
    """:func:`sample` in pieces of at most ``chunk`` ids, the state carried: joined, the same ids.

    Arguments are checked when this is called; the ids are drawn as the pieces are consumed.
    """
    params = check_model(params)
    spec = params.spec
    state = check_state(state, spec, 1, params.dtype)
    (first_id,) = check_ids([first_id], spec.vocab_size, "first_id")
    n = check_count(n, "n")
    chunk = check_count(chunk, "chunk")
    if chunk < 1:
        raise ValueError("chunk must be positive")
    inv_t = inverse_temperature(temperature, params.dtype)
    top_k, top_p = check_top(top_k, top_p)
    return _sample_pieces(params, state, int(first_id), n, np.random.default_rng(seed), inv_t, bool(argmax), chunk,
                          top_k, top_p)


def _sample_pieces(params, state, ix, n, rng, inv_t, argmax, chunk, top_k, top_p):
    seed = _stream_params(params)
    if seed is not None:
        yield from stream_sample_pieces(seed, state[0][0, 0], ix, n, rng, inv_t, argmax, chunk, top_k, top_p)
        return
    # One row of fastrnn.streams' batched step: a stream draws here what it draws in a batch of fastrnn serve.
    logits = np.empty((1, params.spec.vocab_size), params.dtype)
    x = np.array([ix], np.int64)
    u = np.empty(1)
    options = (np.full(1, inv_t, params.dtype), np.array([argmax]), np.array([top_k], np.int64),
               np.array([top_p], np.float64))
    done = 0
    while done < n:
        stepper = Stepper(params)  # weights packed once a piece: the caller may change params between pieces
        out = np.empty(min(chunk, n - done), np.int64)
        for t in range(out.size):
            stepper.step(logits, x, state)
            u[0] = rng.random()
            kernels.draw_rows(x, logits, u, *options)
            out[t] = x[0]
        done += out.size
        yield out


def stream_sample_pieces(seed, h, ix, n, rng, inv_t, argmax, chunk, top_k, top_p):
    """Pieces of at most ``chunk`` sampled ids (int64) of one stream of a 1-layer rnn (``seed``: its
    :class:`~fastrnn.Params`), arguments already checked: h (H,) carried (updated in place), ``ix`` the first
    input id, draw t the t-th ``rng.random()`` value (``chunk`` at a time), as :func:`sample_chunks`."""
    h_next, logits = np.empty_like(h), np.empty(seed.vocab_size, seed.dtype)
    ix, done = np.int64(ix), 0
    while done < n:
        k = min(chunk, n - done)
        out = np.empty(k, np.int64)
        stream_kernels.sample_ids(out, h, h_next, logits, ix, rng.random(k), *seed, inv_t, argmax, top_k, top_p)
        ix, done = np.int64(out[-1]), done + k
        yield out
