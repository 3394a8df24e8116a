"""The seed's public functions for one stream: validate, allocate, call the Numba kernels
(:mod:`fastrnn.stream_kernels`: the engine's one-stream step, scoring and sampling).

Every function here has a twin of the same name, arguments and meaning in
:mod:`fastrnn.reference`; the tests run both on the same data.
"""
from __future__ import annotations

import threading

import numpy as np

from . import optim_kernels, stream_kernels
from ._aligned import aligned_group, aligned_zeros
from ._validate import (
    check_count, check_hidden, check_ids, check_params, check_positive, check_sequence_pair, check_top,
    inverse_temperature,
)
from .inference import stream_sample_pieces
from .params import ADAGRAD_EPS, CLIP, Params


class Workspace:
    """Scratch arrays for one stream's sequences of up to ``seq_length`` steps, allocated once and reused.

    The arrays of :mod:`fastrnn.stream_kernels`: hs (T+1, H), gates, dgates, dhs (T, H), dh (1, H),
    probs (T, V), WxhT, dWxhT (V, H), inputs, targets (1, T), and one gradient buffer per parameter
    (``grads``, a :class:`Params`), all of ``dtype`` (the ids int64).
    """

    def __init__(self, vocab_size, hidden_size, seq_length, dtype=np.float64):
        H, V, T = int(hidden_size), int(vocab_size), int(seq_length)
        dtype = np.dtype(dtype)
        self.shape = (V, H, T, dtype)
        z = aligned_zeros
        self.hs = z((T + 1, H), dtype)
        self.gates, self.dgates, self.dhs = z((T, H), dtype), z((T, H), dtype), z((T, H), dtype)
        self.dh = z((1, H), dtype)
        self.probs = z((T, V), dtype)
        self.WxhT, self.dWxhT = z((V, H), dtype), z((V, H), dtype)
        self.inputs, self.targets = np.zeros((1, T), np.int64), np.zeros((1, T), np.int64)
        self.grads = Params(z((H, V), dtype), z((H, H), dtype), z((V, H), dtype), z(H, dtype), z(V, dtype))

    def fits(self, params: Params, length: int) -> bool:
        V, H, T, dtype = self.shape
        return (params.vocab_size, params.hidden_size, params.dtype) == (V, H, dtype) and length <= T

    def kernel_arrays(self):
        """The workspace arguments of :mod:`fastrnn.stream_kernels`, after the gradients, in order."""
        return (self.hs, self.gates, self.dgates, self.dhs, self.dh, self.probs, self.WxhT, self.dWxhT)


_cached = threading.local()  # each thread's last workspace, reused by calls that pass none


def _workspace(params, length, workspace):
    if workspace is None:
        # A seed porter calls loss_and_grads / train_step once per sequence without a workspace:
        # allocating and zeroing one per call cost as much as the step itself at H = 256-512.
        ws = getattr(_cached, "workspace", None)
        if ws is None or not ws.fits(params, length):
            ws = _cached.workspace = Workspace(params.vocab_size, params.hidden_size, length, params.dtype)
        return ws
    if not workspace.fits(params, length):
        raise ValueError("workspace does not fit these parameters and sequence length")
    return workspace


def _scalar(value, dtype, name):
    return np.dtype(dtype).type(check_positive(value, name))


def _clip_value(clip, dtype):
    # clip=None means unclipped: clipping to the largest finite value is a no-op.
    if clip is None:
        return np.finfo(dtype).max
    return _scalar(clip, dtype, "clip")


def loss_and_grads(params, inputs, targets, hprev, clip=CLIP, workspace=None):
    """Loss, clipped gradients and last hidden state of one sequence (Numba path).

    params: :class:`Params` (float32 or float64); inputs, targets: integer ids,
    length T >= 1; hprev: (H,) or (H, 1). Returns ``(loss, grads, h_last)``:
    the cross-entropy summed over the T steps as a Python float (nats), a
    :class:`Params` of fresh gradient arrays clipped to [-clip, clip]
    (``clip=None``: unclipped) with 1-D biases, and ``h_last`` (H,).
    """
    params = check_params(params)
    inputs, targets = check_sequence_pair(inputs, targets, params.vocab_size)
    dtype = params.dtype
    hprev = check_hidden(hprev, params.hidden_size, dtype)
    clip = _clip_value(clip, dtype)
    ws = _workspace(params, inputs.size, workspace)
    ws.hs[0] = hprev
    grads = Params(*aligned_group([p.shape for p in params], dtype))  # the kernel writes every entry
    loss = stream_kernels.loss_and_grads(*grads, *ws.kernel_arrays(), inputs.reshape(1, -1),
                                         targets.reshape(1, -1), *params)
    stream_kernels.clip_grads(*grads, clip)
    return float(loss), grads, ws.hs[inputs.size].copy()


def sequence_loss(params, inputs, targets, hprev):
    """Forward pass only: ``(loss, h_last)`` of a sequence of any length, without storing states."""
    params = check_params(params)
    inputs, targets = check_sequence_pair(inputs, targets, params.vocab_size)
    h = check_hidden(hprev, params.hidden_size, params.dtype)
    h_next = np.empty_like(h)
    logits = np.empty(params.vocab_size, params.dtype)
    loss = stream_kernels.sequence_loss(np.empty(0), h, h_next, logits, inputs, targets, *params)
    return float(loss), h


def log_probs(params, inputs, targets, hprev):
    """Per-step log-probabilities ``log p(targets[t])`` (T,) float64, and h_last."""
    params = check_params(params)
    inputs, targets = check_sequence_pair(inputs, targets, params.vocab_size)
    h = check_hidden(hprev, params.hidden_size, params.dtype)
    out = np.empty(inputs.size, np.float64)
    stream_kernels.sequence_loss(out, h, np.empty_like(h), np.empty(params.vocab_size, params.dtype),
                                 inputs, targets, *params)
    return out, h


def _check_same_layout(params, other, name):
    if isinstance(other, Params) and all(
        type(b) is np.ndarray and a.shape == b.shape and a.dtype == b.dtype and b.flags.c_contiguous
        for a, b in zip(params, other)
    ):
        return other  # the common case, checked without building a new Params
    other = check_params(other)
    for n, a, b in zip(params._fields, params, other):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"{name}.{n} has shape {b.shape} {b.dtype}, expected {a.shape} {a.dtype}")
    return other


def adagrad_update(params, grads, memory, learning_rate):
    """The seed's Adagrad, in place on ``params`` and ``memory`` (both :class:`Params`).

    ``mem += dparam * dparam; param += -learning_rate * dparam / np.sqrt(mem + 1e-8)``,
    in the same operation order as numpy, so float64 is bit-identical to the reference.
    """
    params = check_params(params)
    grads = _check_same_layout(params, grads, "grads")
    memory = _check_same_layout(params, memory, "memory")
    dtype = params.dtype
    lr = _scalar(learning_rate, dtype, "learning_rate")
    eps, unclipped, one = dtype.type(ADAGRAD_EPS), np.finfo(dtype).max, dtype.type(1)
    for p, g, m in zip(params, grads, memory):
        optim_kernels.adagrad_update(p.reshape(-1), g.reshape(-1), m.reshape(-1), lr, eps, unclipped, one)


def train_step(params, memory, inputs, targets, hprev, learning_rate, clip=CLIP, workspace=None):
    """One training step (loss, grads, clip, Adagrad) in one kernel call; ``(loss, h_last)``.

    ``params`` and ``memory`` are updated in place. Pass a :class:`Workspace`
    to reuse scratch arrays across steps.
    """
    params = check_params(params)
    memory = _check_same_layout(params, memory, "memory")
    inputs, targets = check_sequence_pair(inputs, targets, params.vocab_size)
    dtype = params.dtype
    hprev = check_hidden(hprev, params.hidden_size, dtype)
    lr = _scalar(learning_rate, dtype, "learning_rate")
    clip = _clip_value(clip, dtype)
    ws = _workspace(params, inputs.size, workspace)
    ws.hs[0] = hprev
    loss = stream_kernels.train_step(*params, *memory, *ws.grads, *ws.kernel_arrays(), inputs.reshape(1, -1),
                                     targets.reshape(1, -1), lr, clip, dtype.type(ADAGRAD_EPS))
    return float(loss), ws.hs[inputs.size].copy()


def train_steps(params, memory, data, starts, resets, hprev, learning_rate, workspace, clip=CLIP):
    """Run ``len(starts)`` training steps in one kernel call; returns their losses (k,) float64.

    Step s trains on ``data[starts[s] : starts[s] + T]`` -> one character later,
    with T the workspace's ``seq_length``; where ``resets[s]`` is true the hidden
    state is zeroed first (the seed's reset at the end of the data). ``hprev``
    (H,) of the parameters' dtype carries the hidden state in and out (updated in
    place); ``params``, ``memory`` and ``workspace.grads`` are updated in place.
    Arithmetic is exactly that of repeated :func:`train_step` calls.
    """
    params = check_params(params)
    memory = _check_same_layout(params, memory, "memory")
    dtype = params.dtype
    if not isinstance(workspace, Workspace) or not workspace.fits(params, 1):
        raise ValueError("workspace must be a fastrnn.Workspace for these parameters")
    T = workspace.shape[2]
    data = np.asarray(data)
    if data.ndim != 1 or data.dtype != np.int64 or not data.flags.c_contiguous:
        raise ValueError("data must be a 1-D C-contiguous int64 id array")
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    resets = np.ascontiguousarray(resets, dtype=np.bool_)
    if starts.ndim != 1 or resets.shape != starts.shape:
        raise ValueError("starts and resets must be 1-D of the same length")
    if starts.size and (starts.min() < 0 or starts.max() + T + 1 > data.size):
        raise ValueError(f"every start must leave {T + 1} ids of data (0 <= start <= {data.size - T - 1})")
    if starts.size:
        touched = data[starts[:, None] + np.arange(T + 1)]
        if touched.min() < 0 or touched.max() >= params.vocab_size:
            raise ValueError(f"data holds ids outside the vocabulary [0, {params.vocab_size})")
    if not (isinstance(hprev, np.ndarray) and hprev.shape == (params.hidden_size,)
            and hprev.dtype == dtype and hprev.flags.c_contiguous):
        raise ValueError(f"hprev must be a C-contiguous ({params.hidden_size},) {dtype} array")
    lr = _scalar(learning_rate, dtype, "learning_rate")
    clip = _clip_value(clip, dtype)
    ws = workspace
    losses = np.zeros(starts.size, np.float64)
    stream_kernels.train_steps(losses, *params, *memory, *ws.grads, *ws.kernel_arrays(), ws.inputs, ws.targets,
                               hprev, data, starts, resets, np.full(starts.size, lr), clip,
                               dtype.type(ADAGRAD_EPS))
    return losses


def sample(params, hprev, seed_ix, n, seed=None, temperature=1.0, argmax=False, top_k=None, top_p=None):
    """Sample ``n`` ids from the model, as an int64 array (Numba path).

    hprev (H,) or (H, 1); seed_ix the id fed at the first step. Draw t uses the
    t-th ``numpy.random.default_rng(seed).random()`` value through the inverse
    CDF of ``softmax(logits / temperature)``, exactly as the reference does, so
    one seed gives the same ids in both paths. ``argmax=True``: greedy.
    ``top_k`` (a positive int) and ``top_p`` (in (0, 1]) draw from the k most
    likely ids, then from the smallest set of the most likely whose mass
    reaches p (nucleus sampling, :func:`fastrnn.kernels.keep_top`); None: off.
    """
    params = check_params(params)
    (seed_ix,) = check_ids([seed_ix], params.vocab_size, "seed_ix")
    h = check_hidden(hprev, params.hidden_size, params.dtype)
    n = check_count(n, "n")
    inv_temperature = inverse_temperature(temperature, params.dtype)
    top_k, top_p = check_top(top_k, top_p)
    pieces = stream_sample_pieces(params, h, seed_ix, n, np.random.default_rng(seed), inv_temperature, bool(argmax),
                                  max(n, 1), top_k, top_p)  # one piece: one kernel call
    return next(pieces, np.empty(0, np.int64))


SAMPLE_CHUNK = 1 << 16  # ids per kernel call of sample_chunks: ~1 MB of draws and ids, whatever n is


def sample_chunks(params, hprev, seed_ix, n, seed=None, temperature=1.0, argmax=False, chunk=SAMPLE_CHUNK,
                  top_k=None, top_p=None):
    """:func:`sample` in pieces of at most ``chunk`` ids (int64 arrays), so ``n`` may exceed memory.

    The hidden state and the last id are carried from one piece to the next, and
    the draws come from one ``numpy.random.default_rng(seed)`` stream, ``chunk``
    at a time, so the pieces joined equal :func:`sample` with the same arguments.
    """
    params = check_params(params)
    (seed_ix,) = check_ids([seed_ix], params.vocab_size, "seed_ix")
    h = check_hidden(hprev, params.hidden_size, params.dtype)
    n = check_count(n, "n")
    chunk = check_count(chunk, "chunk")
    if chunk < 1:
        raise ValueError("chunk must be positive")
    inv_temperature = inverse_temperature(temperature, params.dtype)
    top_k, top_p = check_top(top_k, top_p)
    return stream_sample_pieces(params, h, seed_ix, n, np.random.default_rng(seed), inv_temperature, bool(argmax),
                                chunk, top_k, top_p)  # arguments checked now
