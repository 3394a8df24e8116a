"""Training steps on the engine: a step's thread settings, blocks of steps with the optimizer (the trainer's
loop), and one process's share of a data-parallel step.

A step is :func:`fastrnn.chunks.chunked_loss_and_grads` over a
:class:`~fastrnn.workspaces.ParallelWorkspace` (chunks of streams, or parts of the hidden units, on
threads), then :func:`fastrnn.optim.apply`. One stream of the seed's model runs whole blocks of steps in
one compiled call instead (:mod:`fastrnn.stream_kernels`): its steps are too short for a Python loop.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import optim, stream_kernels
from ._threads import blas_threads, numba_threads
from .chunks import chunked_loss_and_grads
from .engine import Dropout
from .model import ModelSpec
from .params import CLIP
from .workspaces import ParallelWorkspace, StackWorkspace


@contextlib.contextmanager
def step_threads(ws: ParallelWorkspace, threads):
    """The thread counts while steps of ``ws`` run: BLAS at ``threads`` for one chunk of streams (its products
    are the step's only parallelism), else at one (chunks and parts run on threads of their own); Numba's
    at least the chunks or the parts."""
    blas = threads if ws.split == "streams" and ws.n_chunks == 1 else 1
    with blas_threads(blas), numba_threads(max(ws.n_chunks, ws.chunks[0].parts)):
        yield


def _step_windows(params, data, starts, state, workspace):
    """The (k * B, T + 1) windows of ``starts`` (k, B), after checking the arguments of a block of steps."""
    ws = workspace
    B, T = ws.batch_size, ws.seq_length
    spec = params.spec
    if not (isinstance(ws, (StackWorkspace, ParallelWorkspace)) and ws.fits(params, B, T)):
        raise ValueError("workspace must be a StackWorkspace or ParallelWorkspace for these parameters")
    starts = np.asarray(starts, np.int64)
    if starts.ndim != 2 or starts.shape[1] != B:
        raise ValueError(f"starts must be a (k, {B}) integer array, got shape {starts.shape}")
    if starts.size and (starts.min() < 0 or starts.max() + T + 1 > data.size):
        raise ValueError(f"every start must leave {T + 1} ids of data")
    touched = data[starts.reshape(-1, 1) + np.arange(T + 1)] if starts.size else data[:0].reshape(0, T + 1)
    if touched.size and (touched.min() < 0 or touched.max() >= spec.vocab_size):
        raise ValueError(f"data holds ids outside the vocabulary [0, {spec.vocab_size})")
    shape = (spec.num_layers, B, spec.hidden_size)
    if len(state) != len(spec.state_names) or any(h.shape != shape or h.dtype != params.dtype for h in state):
        raise ValueError(f"state must be {len(spec.state_names)} {params.dtype} array(s) of shape {shape}")
    return touched


def train_steps(params, optimizer, opt_state, data, starts, resets, state, workspace, first_step, clip=CLIP,
                clip_norm=None, threads=1, learning_rates=None, dropout=0.0, seed=0):
    """k training steps of any model (the trainer's loop); returns their losses (k,) float64.

    Step s trains stream b on ``data[starts[s, b] : starts[s, b] + T]`` -> one
    character later (T the workspace's ``seq_length``), from the state
    ``state`` (tuple of (L, B, H), carried in and out in place) after zeroing
    every stream's state where ``resets[s]``; then clips and applies
    ``optimizer`` (:func:`fastrnn.optim.apply`, step number ``first_step + s``)
    to ``params`` and ``opt_state`` in place. ``data``: 1-D int64 ids.
    ``workspace``: a :class:`ParallelWorkspace` (its stream chunks run on as
    many threads, BLAS at one thread each) or a :class:`StackWorkspace` (one
    chunk; its products run on ``threads`` BLAS threads). ``learning_rates``:
    each step's rate (k,) (a schedule's), else ``optimizer.learning_rate``.
    ``dropout``: the probability p of :class:`Dropout` (0: off), its masks drawn
    from ``seed`` (the run's) and each step's number.
    """
    B = workspace.batch_size
    losses = data_parallel_steps(params, optimizer, opt_state, data, starts, resets, state, workspace, first_step,
                                 B, None, clip, clip_norm, threads, learning_rates, dropout, seed)
    return losses / B


def compiled_steps(spec: ModelSpec, optimizer, batch_size, clip_norm=None, dropout=0.0) -> bool:
    """Whether :func:`train_steps` runs its blocks of steps in one compiled call each
    (:mod:`fastrnn.stream_kernels`), on one thread: one stream of a 1-layer rnn, Adagrad, clipping by value
    only, no dropout (the seed's case at batch 1)."""
    return (spec.is_seed and optimizer.name == "adagrad" and batch_size == 1 and clip_norm is None
            and not dropout > 0)


def _stream_steps(params, optimizer, memory, ws, windows, resets, state, rates, clip, losses):
    """The steps of :func:`train_steps` on one stream, in one call of :func:`fastrnn.stream_kernels.train_steps`."""
    dtype = params.dtype
    a, chunk = ws.chunks[0].layers[0], ws.chunks[0]
    T = ws.seq_length
    starts = np.arange(windows.shape[0], dtype=np.int64) * (T + 1)
    stream_kernels.train_steps(losses, *params.as_seed(), *memory.as_seed(), *ws.grads.as_seed(), a["hs"],
                               a["gates"], a["dgx"], a["dhs"], a["dh"], chunk.probs, chunk.WxhT, chunk.dWxhT,
                               chunk.inputs, chunk.targets, state[0][0, 0], np.ascontiguousarray(windows).reshape(-1),
                               starts, np.ascontiguousarray(resets, dtype=np.bool_),
                               np.asarray(rates, dtype=dtype), optim.clip_value(clip, dtype), dtype.type(optimizer.eps))


def data_parallel_steps(params, optimizer, opt_state, data, starts, resets, state, workspace, first_step,
                        total_batch, sum_grads, clip=CLIP, clip_norm=None, threads=1, learning_rates=None,
                        dropout=0.0, seed=0, first_stream=0):
    """:func:`train_steps` for this process's share of the B = ``total_batch`` streams of a data-parallel step.

    The workspace, ``starts`` (k, Bl) and ``state`` (tuple of (L, Bl, H)) are
    those of the share's Bl streams. Per step the share's gradient of
    (its summed loss) / ``total_batch`` is computed (over the workspace's
    chunks), ``sum_grads(grads.flat)`` adds the other shares' in place (an
    allreduce; None: this share is the whole batch), then every process clips
    and applies the same update. Returns the share's losses (k,) float64,
    summed over its Bl * T characters (not divided). ``dropout``, ``seed``: as
    for :func:`train_steps`; ``first_stream``: the share's first stream among
    the ``total_batch`` (its masks are those streams' masks).
    """
    ws = workspace
    T = ws.seq_length
    touched = _step_windows(params, data, starts, state, ws)
    B = ws.batch_size
    k = touched.shape[0] // B
    if learning_rates is not None and len(learning_rates) != k:
        raise ValueError(f"learning_rates must hold one rate per step ({k}), got {len(learning_rates)}")
    if isinstance(ws, StackWorkspace):
        ws = ParallelWorkspace.of(ws)
    losses = np.zeros(k, np.float64)
    if (sum_grads is None and compiled_steps(params.spec, optimizer, B, clip_norm, dropout)
            and ws.chunks[0].parts == 1):
        rates = [optimizer.learning_rate] * k if learning_rates is None else learning_rates
        with step_threads(ws, threads):
            _stream_steps(params, optimizer, opt_state[0], ws, touched, resets, state, rates, clip, losses)
        return losses
    with step_threads(ws, threads):
        for s in range(k):
            window = touched[s * B:(s + 1) * B]  # (B, T + 1)
            if resets[s]:
                for h in state:
                    h[:] = 0
            drop = Dropout(dropout, seed, first_step + s, total_batch, first_stream) if dropout > 0 else None
            losses[s], grads = chunked_loss_and_grads(params, ws, window[:, :T], window[:, 1:], state, total_batch,
                                                      drop)
            if sum_grads is not None:
                sum_grads(grads.flat)
            optim.apply(optimizer, params.flat, grads.flat, [m.flat for m in opt_state], first_step + s, clip,
                        clip_norm, None if learning_rates is None else learning_rates[s], threads=threads)
    return losses
