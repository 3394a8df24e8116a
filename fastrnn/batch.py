"""Minibatched training of the seed's model: B streams per step (adapters over the engine).

Semantics of a batched step (the twin is :mod:`fastrnn.reference` run on each
stream separately):
- stream b trains on ``inputs[b] -> targets[b]`` from its own hidden state
  ``hprev[b]``, exactly as batch 1 would;
- the gradient of the step is the per-stream gradients *summed over the B
  streams and divided by B*, then clipped to [-clip, clip] and applied with
  Adagrad (eps 1e-8), exactly as batch 1 clips and applies its gradient;
- the loss returned is the cross-entropy summed over all B * T characters and
  divided by B: the summed loss of an average stream, comparable to the loss
  of batch 1 (which sums over its T characters).

One stream (B = 1) runs :func:`fastrnn.train_step`'s compiled step, so every result is
bit-identical to :func:`fastrnn.train_step`. More streams run the engine
(:mod:`fastrnn.engine`) on a 1-layer rnn, the trainer's path for every batch
above 1: the workspace's :class:`~fastrnn.workspaces.ParallelWorkspace` cuts a
step into chunks of streams or into parts of the hidden units (``split``), on
``threads`` threads. Results depend on the workspace only (its split and
thread count), bit for bit.
"""
from __future__ import annotations

import numpy as np

from . import chunks, optim, optim_kernels, rnn
from ._validate import check_params, check_positive
from .model import ModelParams, ModelSpec
from .params import ADAGRAD_EPS, CLIP, Params
from .steps import step_threads, train_steps
from .workspaces import ParallelWorkspace

__all__ = ["BatchWorkspace", "batch_loss_and_grads", "batch_train_step", "batch_train_steps"]


SPLITS = ("auto", "streams", "units")


class BatchWorkspace:
    """Scratch arrays for batched steps of ``batch_size`` streams of ``seq_length`` ids, allocated once.

    ``split="streams"``: the streams cut into ``n_chunks = min(threads,
    batch_size)`` contiguous chunks run at once; ``"units"`` (threads >= 2):
    all streams together, each layer's hidden units cut into ``threads`` parts
    run at once; ``"auto"``: the engine's choice ("units" from
    :data:`~fastrnn.workspaces.UNIT_SPLIT_MIN_HIDDEN` hidden units on, with 2
    or more threads). ``grads`` (a :class:`Params`) holds the last step's
    clipped batch gradient. With ``batch_size`` 1, the seed's
    :class:`fastrnn.Workspace` instead (split "streams", one chunk).
    """

    def __init__(self, vocab_size, hidden_size, seq_length, batch_size, dtype=np.float64, threads=1, split="auto"):
        V, H, T, B = (_positive_int(x, name) for x, name in (
            (vocab_size, "vocab_size"), (hidden_size, "hidden_size"), (seq_length, "seq_length"),
            (batch_size, "batch_size")))
        threads = _positive_int(threads, "threads")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if split == "units" and threads < 2:
            raise ValueError(f"split='units' needs threads >= 2, got threads={threads}")
        self.vocab_size, self.hidden_size, self.seq_length, self.batch_size = V, H, T, B
        self.dtype, self.threads = dtype, threads
        if B == 1:
            self.seed = rnn.Workspace(V, H, T, dtype)
            self.split, self.n_chunks, self.grads = "streams", 1, self.seed.grads
            return
        spec = ModelSpec("rnn", 1, V, H)
        self.engine = ParallelWorkspace(spec, T, B, dtype, threads, None if split == "auto" else split)
        self.split, self.n_chunks = self.engine.split, self.engine.n_chunks
        self.model, self.memory = ModelParams(spec, dtype), ModelParams(spec, dtype)
        self.grads = self.engine.grads.as_seed()

    def fits(self, params: Params) -> bool:
        return (params.vocab_size, params.hidden_size, params.dtype) == (self.vocab_size, self.hidden_size,
                                                                         self.dtype)

    def load(self, params: Params, memory: Params | None = None):
        """``(model, memory)``: the workspace's engine buffers holding copies of ``params`` (and ``memory``)."""
        for dst, src in zip(self.model.as_seed(), params):
            dst[...] = src
        if memory is not None:
            for dst, src in zip(self.memory.as_seed(), memory):
                dst[...] = src
        return self.model, self.memory

    def store(self, params: Params, memory: Params):
        """Copy the engine buffers back into the caller's ``params`` and ``memory`` (after an update)."""
        for dst, src in zip(params, self.model.as_seed()):
            dst[...] = src
        for dst, src in zip(memory, self.memory.as_seed()):
            dst[...] = src


# --- argument checks (small, local: they complement fastrnn._validate) -----------------

def _positive_int(x, name):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or x < 1:
        raise ValueError(f"{name} must be a positive integer, got {x!r}")
    return int(x)


def _check_ids_2d(ids, vocab_size, name, shape=None):
    arr = np.asarray(ids)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty (batch, seq_length) array of ids, got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name} holds id {lo if lo < 0 else hi}, outside the vocabulary [0, {vocab_size})")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check_hidden_2d(h, batch_size, hidden_size, dtype):
    """A fresh (B, H) C-contiguous copy of hprev in ``dtype``."""
    arr = np.asarray(h)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"hprev must be a float array, got dtype {arr.dtype}")
    if arr.shape != (batch_size, hidden_size):
        raise ValueError(f"hprev must have shape ({batch_size}, {hidden_size}), got {arr.shape}")
    return np.array(arr, dtype=dtype, order="C")


def _check_memory(params, memory):
    memory = check_params(memory)
    for name, p, m in zip(Params._fields, params, memory):
        if p.shape != m.shape or p.dtype != m.dtype:
            raise ValueError(f"memory.{name} has shape {m.shape} {m.dtype}, expected {p.shape} {p.dtype}")
    return memory


def _workspace(params, T, B, workspace, threads):
    if workspace is None:
        return BatchWorkspace(params.vocab_size, params.hidden_size, T, B, params.dtype,
                              1 if threads is None else threads)
    if not isinstance(workspace, BatchWorkspace):
        raise ValueError("workspace must be a fastrnn.batch.BatchWorkspace")
    if not workspace.fits(params):
        raise ValueError("workspace does not fit these parameters (vocab_size, hidden_size, dtype)")
    if (workspace.batch_size, workspace.seq_length) != (B, T):
        raise ValueError(f"workspace is for batch {workspace.batch_size} x seq_length {workspace.seq_length}, "
                         f"got {B} x {T}")
    _check_threads(workspace, threads)
    return workspace


def _check_threads(workspace, threads):
    if threads is not None and _positive_int(threads, "threads") != workspace.threads:
        raise ValueError(f"threads={threads} contradicts the workspace's {workspace.threads} "
                         f"(make a BatchWorkspace with threads={threads})")


def _adagrad(learning_rate):
    return optim.Optimizer("adagrad", float(check_positive(learning_rate, "learning_rate")), eps=ADAGRAD_EPS)


# --- public functions ----------------------------------------------------------------

def _step(params, memory, inputs, targets, hprev, learning_rate, clip, workspace, threads, update):
    """Validated single step; returns (loss, workspace, h_last) with h_last a fresh (B, H) array."""
    params = check_params(params)
    dtype = params.dtype
    inputs = _check_ids_2d(inputs, params.vocab_size, "inputs")
    targets = _check_ids_2d(targets, params.vocab_size, "targets", inputs.shape)
    B, T = inputs.shape
    h = _check_hidden_2d(hprev, B, params.hidden_size, dtype)
    if update:
        memory = _check_memory(params, memory)
        adagrad = _adagrad(learning_rate)
    limit = rnn._clip_value(clip, dtype)
    ws = _workspace(params, T, B, workspace, threads)
    if B == 1:
        if update:
            loss, h_last = rnn.train_step(params, memory, inputs[0], targets[0], h[0], learning_rate, clip, ws.seed)
        else:
            loss, grads, h_last = rnn.loss_and_grads(params, inputs[0], targets[0], h[0], clip, ws.seed)
            for dst, src in zip(ws.grads, grads):
                dst[...] = src
        return loss, ws, h_last.reshape(1, -1)
    model, mem = ws.load(params, memory if update else None)
    state = (h.reshape(1, B, params.hidden_size),)
    with step_threads(ws.engine, ws.threads):
        loss, grads = chunks.chunked_loss_and_grads(model, ws.engine, inputs, targets, state)
        if update:
            optim.apply(adagrad, model.flat, grads.flat, [mem.flat], 1, limit, threads=ws.threads)
        else:
            optim_kernels.clip_inplace(grads.flat, limit)
    if update:
        ws.store(params, memory)
    return float(loss) / B, ws, h


def batch_loss_and_grads(params, inputs, targets, hprev, workspace=None, clip=CLIP, threads=None):
    """Loss, batch gradient and last hidden states of B streams (no update).

    params: :class:`Params` (float32 or float64). inputs, targets: (B, T)
    integer ids, stream b reads row b. hprev: (B, H). Returns ``(loss, grads,
    h_last)``: the cross-entropy summed over the B * T characters and divided by
    B (float), a :class:`Params` of fresh arrays holding the per-stream
    gradients summed over the streams, divided by B and clipped to [-clip, clip]
    (``clip=None``: unclipped), and h_last (B, H).

    ``threads``: the threads of the workspace made when none is given (default
    1); with a workspace, None or the workspace's own.
    """
    loss, ws, h = _step(params, None, inputs, targets, hprev, None, clip, workspace, threads, False)
    return loss, Params(*(g.copy() for g in ws.grads)), h


def batch_train_step(params, memory, inputs, targets, hprev, learning_rate, workspace=None, clip=CLIP,
                     threads=None):
    """One batched training step (loss, batch gradient, clip, Adagrad); returns ``(loss, h_last)``.

    ``params`` and ``memory`` (a :class:`Params` of Adagrad memories) are
    updated in place; ``workspace.grads`` holds the clipped batch gradient
    afterwards. Arguments and loss as in :func:`batch_loss_and_grads`.
    """
    loss, _, h = _step(params, memory, inputs, targets, hprev, learning_rate, clip, workspace, threads, True)
    return loss, h


def batch_train_steps(params, memory, data, starts, resets, hprev, learning_rate, workspace, clip=CLIP,
                      threads=None):
    """Run k batched training steps; returns their losses (k,) float64.

    Step s trains stream b on ``data[starts[s, b] : starts[s, b] + T]`` -> one
    character later, T the workspace's ``seq_length``. ``resets`` (k, B) or
    (k,) bool: where true, stream b's hidden state (every stream's, for (k,))
    is zeroed before the step. ``hprev`` (B, H), C-contiguous, of the
    parameters' dtype, carries the hidden states in and out (updated in place).
    ``data``: 1-D C-contiguous int64 ids. Each loss is as in
    :func:`batch_loss_and_grads`; results equal repeated
    :func:`batch_train_step` calls bit for bit.
    """
    params = check_params(params)
    memory = _check_memory(params, memory)
    dtype = params.dtype
    if not isinstance(workspace, BatchWorkspace) or not workspace.fits(params):
        raise ValueError("workspace must be a fastrnn.batch.BatchWorkspace for these parameters")
    _check_threads(workspace, threads)
    B, T = workspace.batch_size, workspace.seq_length
    if not (isinstance(data, np.ndarray) and data.ndim == 1 and data.dtype == np.int64
            and data.flags.c_contiguous):
        raise ValueError("data must be a 1-D C-contiguous int64 id array")
    starts = np.asarray(starts)
    if starts.ndim != 2 or starts.shape[1] != B or starts.dtype.kind not in "iu":
        raise ValueError(f"starts must be a (k, {B}) integer array, got shape {starts.shape} {starts.dtype}")
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    k = starts.shape[0]
    resets = np.asarray(resets)
    if resets.dtype != np.bool_ or resets.shape not in ((k,), (k, B)):
        raise ValueError(f"resets must be a bool array of shape ({k},) or ({k}, {B}), got {resets.shape} "
                         f"{resets.dtype}")
    resets = np.ascontiguousarray(np.broadcast_to(resets.reshape(k, -1), (k, B)))
    if k and (starts.min() < 0 or starts.max() + T + 1 > data.size):
        raise ValueError(f"every start must leave {T + 1} ids of data (0 <= start <= {data.size - T - 1})")
    if k:
        touched = data[starts.reshape(-1, 1) + np.arange(T + 1)]
        if touched.min() < 0 or touched.max() >= params.vocab_size:
            raise ValueError(f"data holds ids outside the vocabulary [0, {params.vocab_size})")
    if not (isinstance(hprev, np.ndarray) and hprev.shape == (B, params.hidden_size) and hprev.dtype == dtype
            and hprev.flags.c_contiguous):
        raise ValueError(f"hprev must be a C-contiguous ({B}, {params.hidden_size}) {dtype} array")
    adagrad = _adagrad(learning_rate)
    rnn._clip_value(clip, dtype)  # checked
    ws = workspace
    if B == 1:
        return rnn.train_steps(params, memory, data, np.ascontiguousarray(starts[:, 0]),
                               np.ascontiguousarray(resets[:, 0]), hprev[0], learning_rate, ws.seed, clip)
    model, mem = ws.load(params, memory)
    state = (hprev.reshape(1, B, params.hidden_size),)
    whole = resets.all(axis=1)
    if np.array_equal(whole, resets.any(axis=1)):  # every step resets all streams or none: one call
        losses = train_steps(model, adagrad, [mem], data, starts, whole, state, ws.engine, 1, clip,
                             threads=ws.threads)
    else:
        losses = np.zeros(k, np.float64)
        for s in range(k):
            hprev[resets[s]] = 0
            losses[s:s + 1] = train_steps(model, adagrad, [mem], data, starts[s:s + 1], np.zeros(1, bool),
                                          state, ws.engine, 1, clip, threads=ws.threads)
    ws.store(params, memory)
    return losses
