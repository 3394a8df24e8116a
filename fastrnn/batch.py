"""Minibatched training: B streams per step, spread over threads (validate, allocate, call the kernels).

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
With B = 1 every result is bit-identical to :func:`fastrnn.train_step`.

Threads. By default the streams are cut into ``threads`` contiguous chunks
(the workspace's partition); each chunk runs forward and backward on its own
gradient buffers, on Numba's threads, with BLAS held to one thread; the chunks'
gradients are then reduced in a fixed order. With few streams per thread and a
large H (:func:`wide_split_pays`) the workspace is split by columns instead:
all streams stay together, each thread owns a block of hidden units in the
recurrence and a block of (time, stream) rows elsewhere. Results depend on the
partition only, not on the number of threads running it: the same workspace
gives bit-identical results at any thread count, and workspaces cut for
different thread counts agree to rounding (float64: ~1e-15 relative on one step).
"""
from __future__ import annotations

import contextlib

import numba
import numpy as np

from . import batch_kernels, kernels
from ._aligned import aligned_zeros
from ._threads import blas_controller, parallel_lock
from ._validate import check_params
from .optim import Optimizer, apply
from .params import Params
from .params import ADAGRAD_EPS, CLIP
from .rnn import _clip_value, _scalar

__all__ = ["BatchWorkspace", "batch_loss_and_grads", "batch_train_step", "batch_train_steps"]


SPLITS = ("auto", "streams", "columns")


def wide_split_pays(hidden_size, batch_size, threads):
    """The ``auto`` rule: split by columns when each thread would get few streams of a large model.

    Measured on 2 cores at H = 512, B = 32: two stream chunks of 16 run thin
    (16, H) @ (H, H) products that each read all of Whh every time step; split
    by columns, each thread reads only its half, which in float32 (512 KiB)
    stays in its core's 1 MiB L2: 2 threads went from 1.64x to 1.85x one
    thread. In float64 (a 1 MiB half) the two splits run at the same speed. At
    H = 100, or with 64 streams per thread, stream chunks are as fast or faster.
    """
    return (threads >= 2 and hidden_size >= 256 and hidden_size % threads == 0
            and 2 <= batch_size <= 32 * threads)


class BatchWorkspace:
    """Scratch arrays for batched steps of ``batch_size`` streams of ``seq_length`` ids, allocated once.

    ``split="streams"``: the streams are cut into ``n_chunks = min(threads,
    batch_size)`` contiguous chunks (``bounds``); each chunk has its own
    states, probabilities and gradient buffers, so chunks can run in parallel.
    Memory: about n_chunks * (2 * T * Bmax * H + T * Bmax * V + 2 * H * V + H * H)
    floats, Bmax = ceil(batch_size / n_chunks).
    ``split="columns"`` (needs threads >= 2 dividing hidden_size): all streams
    stay together and ``n_chunks = threads`` parts share each step, by columns
    of Whh in the recurrence and by blocks of (time, stream) rows elsewhere
    (:func:`fastrnn.batch_kernels.wide_step`).
    ``split="auto"`` picks by :func:`wide_split_pays`. Either way ``grads`` (a
    :class:`Params`, views of part 0's buffers) holds the last step's batch
    gradient, and results depend on the split and ``n_chunks``, not on how many
    threads run them.
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
        if split == "columns" and (threads < 2 or H % threads or T * B < threads):
            raise ValueError(f"split='columns' needs threads >= 2 dividing hidden_size ({H}) and at least "
                             f"{threads} characters a step, got threads={threads}")
        wide = split == "columns" or (split == "auto" and wide_split_pays(H, B, threads) and T * B >= threads)
        n = threads if wide else min(threads, B)
        self.vocab_size, self.hidden_size, self.seq_length, self.batch_size = V, H, T, B
        self.dtype, self.threads, self.n_chunks = dtype, threads, n
        self.split = "columns" if wide else "streams"
        z = lambda *shape: aligned_zeros(shape, dtype)  # noqa: E731
        self.chunk_grads = Params(z(n, H, V), z(n, H, H), z(n, V, H), z(n, H), z(n, V))
        self.grads = Params(*(g[0] for g in self.chunk_grads))
        self.dxb = z(n, V, H)
        self.WhyT, self.xb = z(H, V), z(V, H)
        self.chunk_losses = np.zeros(n, np.float64)
        if wide:
            Hc = H // n
            self.bounds = np.array([c * T * B // n for c in range(n + 1)], np.int64)  # row blocks
            self.hs, self.probs, self.dhs = z((T + 1) * B, H), z(T * B, V), z(T * B, H)
            self.tmp, self.WcolT, self.Wcol = z(n, B, Hc), z(n, H, Hc), z(n, H, Hc)
        else:
            self.bounds = np.array([c * B // n for c in range(n + 1)], np.int64)  # stream chunks
            Bmax = int(np.max(np.diff(self.bounds)))
            self.hs = z(n, (T + 1) * Bmax, H)
            self.probs = z(n, T * Bmax, V)
            self.dhs = z(n, T * Bmax, H)
            self.dhnext = z(n, Bmax, H)
            self.WhhT = z(H, H)
        self.inputs = np.zeros((B, T), np.int64)
        self.targets = np.zeros((B, T), np.int64)

    def fits(self, params: Params) -> bool:
        return (params.vocab_size, params.hidden_size, params.dtype) == (self.vocab_size, self.hidden_size,
                                                                         self.dtype)

    def kernel_workspace(self):
        """The arrays every step kernel takes after its outputs, in kernel order."""
        if self.split == "columns":
            return (*self.chunk_grads, self.hs, self.probs, self.dhs, self.tmp, self.dxb, self.WcolT, self.Wcol,
                    self.WhyT, self.xb, self.bounds)
        return (*self.chunk_grads, self.hs, self.probs, self.dhs, self.dhnext, self.dxb,
                self.WhhT, self.WhyT, self.xb)


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
    return workspace


# --- threads ------------------------------------------------------------------------

@contextlib.contextmanager
def _thread_settings(n_threads, parallel_kernel=False):
    """Numba's thread count set to ``n_threads`` (restored after) and BLAS held to one thread.

    ``parallel_kernel``: a ``prange`` kernel will run even at one thread, so
    Numba's count is set then too.
    """
    if n_threads == 1 and not parallel_kernel:
        # Launch Numba's thread pool even so: batch_train_sequences also links the
        # parallel kernel, and loaded from the cache into a process whose pool was
        # never launched it jumped to a null pointer (seen for float32). A launched
        # pool that runs no region costs nothing.
        numba.get_num_threads()
        with blas_controller().limit(limits=1, user_api="blas"):
            yield
        return
    with parallel_lock:
        previous = numba.get_num_threads()
        numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            with blas_controller().limit(limits=1, user_api="blas"):
                yield
        finally:
            numba.set_num_threads(previous)


def _run_threads(workspace, threads):
    threads = workspace.n_chunks if threads is None else _positive_int(threads, "threads")
    return min(threads, workspace.n_chunks)


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
        lr = _scalar(learning_rate, dtype, "learning_rate")
    else:
        memory, lr = params, dtype.type(0)  # not touched when update is False
    clip = _clip_value(clip, dtype)
    ws = _workspace(params, T, B, workspace, threads)
    n_threads = _run_threads(ws, threads)
    wide = ws.split == "columns"
    with _thread_settings(n_threads, parallel_kernel=wide):
        if wide:
            loss = batch_kernels.wide_step(ws.chunk_losses, *ws.kernel_workspace(), h, inputs, targets,
                                           *params, *memory, lr, clip, dtype.type(ADAGRAD_EPS), update)
        else:
            kernel = batch_kernels.batch_step_parallel if n_threads > 1 else batch_kernels.batch_step_serial
            loss = kernel(ws.chunk_losses, *ws.kernel_workspace(), h, inputs, targets, ws.bounds,
                          *params, *memory, lr, clip, dtype.type(ADAGRAD_EPS), update)
    return float(loss), ws, h


def batch_loss_and_grads(params, inputs, targets, hprev, workspace=None, clip=CLIP, threads=None):
    """Loss, batch gradient and last hidden states of B streams (no update).

    params: :class:`Params` (float32 or float64). inputs, targets: (B, T)
    integer ids, stream b reads row b. hprev: (B, H). Returns ``(loss, grads,
    h_last)``: the cross-entropy summed over the B * T characters and divided by
    B (float), a :class:`Params` of fresh arrays holding the per-stream
    gradients summed over the streams, divided by B and clipped to [-clip, clip]
    (``clip=None``: unclipped), and h_last (B, H).

    ``threads``: how many threads run the workspace's chunks (default: as many
    as it has chunks). Without a workspace one is made with ``threads`` chunks.
    """
    loss, ws, h = _step(params, None, inputs, targets, hprev, None, clip, workspace, threads, False)
    return loss, ws.grads.copy(), h


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
    """Run k batched training steps in one kernel call; returns their losses (k,) float64.

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
    lr = _scalar(learning_rate, dtype, "learning_rate")
    clip = _clip_value(clip, dtype)
    n_threads = _run_threads(workspace, threads)
    losses = np.zeros(k, np.float64)
    ws = workspace
    if ws.split == "columns":
        with _thread_settings(n_threads, parallel_kernel=True):
            batch_kernels.wide_train_sequences(
                losses, *ws.kernel_workspace(), ws.chunk_losses, ws.inputs, ws.targets, hprev, data, starts,
                resets, *params, *memory, lr, clip, dtype.type(ADAGRAD_EPS))
        return losses
    if B == 1:
        # One stream: the batch-1 kernel loop, bit-identical to the batched kernels at B = 1
        # (the gradient / 1 is exact) but without their per-step weight transposes and
        # separate reduction pass. tmp_hh / tmp_vh are unused by the fused step.
        g = ws.grads
        kernels.train_sequences(losses, *params, *memory, *g, ws.hs[0], ws.probs[0], ws.dhs[0], ws.dhnext[0, 0],
                                g.Whh, g.Why, hprev[0], data, np.ascontiguousarray(starts[:, 0]),
                                np.ascontiguousarray(resets[:, 0]), lr, clip, dtype.type(ADAGRAD_EPS))
        return losses
    with _thread_settings(n_threads):
        batch_kernels.batch_train_sequences(
            losses, *ws.kernel_workspace(), ws.chunk_losses, ws.inputs, ws.targets, hprev, data, starts, resets,
            ws.bounds, *params, *memory, lr, clip, dtype.type(ADAGRAD_EPS), n_threads > 1)
    return losses


def data_parallel_steps(params, memory, grads, data, starts, resets, hprev, learning_rate, workspace, total_batch,
                        sum_grads, clip=CLIP, threads=None):
    """k seed-case steps (tanh RNN, Adagrad, clip by value) of this process's share of a data-parallel batch.

    ``params``, ``memory``, ``grads``: :class:`~fastrnn.model.ModelParams` of a
    1-layer rnn (flat buffers; ``grads`` is scratch). ``workspace``: a
    :class:`BatchWorkspace` split by streams for this share of ``Bl`` streams;
    ``hprev`` (Bl, H) C-contiguous carries their states in and out; ``data``,
    ``starts`` (k, Bl), ``resets`` (k,) as in :func:`batch_train_steps`.

    Per step the share's gradient, summed over its streams (chunk by chunk,
    as the fused step adds its chunks), is written to ``grads.flat``;
    ``sum_grads(grads.flat)`` adds the other shares' in place (an allreduce);
    then every process scales by 1 / ``total_batch``, clips and applies Adagrad
    with the fused step's expressions, so when the shares are the chunks of a
    one-process run and the sum adds them in the same order, the update is
    that run's bit for bit. Returns the share's losses (k,) float64, summed
    over its Bl * T characters (not divided: the caller adds the shares').
    """
    ws = workspace
    if not isinstance(ws, BatchWorkspace) or ws.split != "streams":
        raise ValueError("workspace must be a fastrnn.batch.BatchWorkspace split by streams")
    seed_params, seed_grads = params.as_seed(), grads.as_seed()
    if not ws.fits(seed_params):
        raise ValueError("workspace does not fit these parameters (vocab_size, hidden_size, dtype)")
    dtype = params.dtype
    B, T = ws.batch_size, ws.seq_length
    if not (isinstance(hprev, np.ndarray) and hprev.shape == (B, params.hidden_size) and hprev.dtype == dtype
            and hprev.flags.c_contiguous):
        raise ValueError(f"hprev must be a C-contiguous ({B}, {params.hidden_size}) {dtype} array")
    starts = np.asarray(starts, np.int64)
    if starts.ndim != 2 or starts.shape[1] != B:
        raise ValueError(f"starts must be a (k, {B}) integer array, got shape {starts.shape}")
    k = starts.shape[0]
    windows = data[starts.reshape(-1, 1) + np.arange(T + 1)] if k else data[:0].reshape(0, T + 1)
    if windows.size and (windows.min() < 0 or windows.max() >= params.vocab_size):
        raise ValueError(f"data holds ids outside the vocabulary [0, {params.vocab_size})")
    adagrad = Optimizer("adagrad", float(learning_rate), eps=ADAGRAD_EPS)
    inv_batch = dtype.type(1) / dtype.type(total_batch)
    n_threads = _run_threads(ws, threads)
    kernel = batch_kernels.batch_grads_parallel if n_threads > 1 else batch_kernels.batch_grads_serial
    losses = np.zeros(k, np.float64)
    for s in range(k):
        window = windows[s * B:(s + 1) * B]
        ws.inputs[:] = window[:, :T]
        ws.targets[:] = window[:, 1:]
        if resets[s]:
            hprev[:] = 0
        with _thread_settings(n_threads):  # not held across the sum (its lock is the whole process's)
            losses[s] = kernel(ws.chunk_losses, *ws.kernel_workspace(), hprev, ws.inputs, ws.targets, ws.bounds,
                               *seed_params, *seed_grads)
        sum_grads(grads.flat)
        grads.flat *= inv_batch
        apply(adagrad, params.flat, grads.flat, [memory.flat], 1, clip)
    return losses
