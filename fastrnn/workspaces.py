"""The engine's scratch arrays, allocated once per shape: :class:`StackWorkspace` for B streams of one
model, and :class:`ParallelWorkspace` for a step on several threads (chunks of streams, or parts of the
hidden units)."""
from __future__ import annotations

import numpy as np

from . import cell_parts_kernels, microkernel, stack_kernels
from ._aligned import aligned_zeros
from .model import ModelParams, ModelSpec


class StackWorkspace:
    """Scratch arrays for steps of ``batch_size`` streams of up to ``seq_length`` ids of a model, allocated once.

    Per layer: hs ((T+1) * B, H) (and cs for an LSTM), gates and dgx (T * B, G*H),
    dhs (T * B, H) (dL/d(outputs)), tmp (B, G*H), dh, dc (B, H), for dropout xd (the outputs as the
    layer above reads them) and mask (T * B, H), and Whh packed for :mod:`fastrnn.microkernel` by
    part: forward_panels (:func:`~fastrnn.cell_parts_kernels.pack_forward`, rewritten by each forward pass,
    part p's panels from ``first_forward_panel[p]``) and backward_panels
    (:func:`~fastrnn.cell_parts_kernels.pack_backward`, by each backward pass, from ``first_backward_panel[p]``);
    a GRU also hn (T * B, H) and dgh (T * B, 3H). Shared: probs (T * B, V), WxhT / dWxhT (V, G*H) and
    the step's ids (B, T).

    ``parts`` > 1: each layer's recurrence runs with its H units cut into that
    many parts (at most H; bounds ``unit_bounds``, [0, H] for one part) at once,
    on Numba's threads (the ``*_parts`` kernels of :mod:`fastrnn.cell_parts_kernels`),
    and the products over all T * B rows cut into as many row ranges
    (``row_bounds``; the weight gradients' shares in partials (parts,
    max(G*H, V) * H), then summed), all with BLAS at one thread.

    ``backward=False``: the arrays of a forward pass of one step only (hs, cs, gates, tmp, hn,
    forward_panels), as a sampler or a server steps streams one id at a time. ``forward_panels``: each
    layer's panels, shared with another workspace of the same model, dtype and parts, in place of new ones.
    """

    def __init__(self, spec: ModelSpec, seq_length, batch_size, dtype=np.float64, parts=1, backward=True,
                 forward_panels=None):
        T, B = int(seq_length), int(batch_size)
        if T < 1 or B < 1:
            raise ValueError(f"seq_length and batch_size must be positive, got {T} and {B}")
        dtype = np.dtype(dtype)
        self.spec, self.seq_length, self.batch_size, self.dtype = spec, T, B, dtype
        H, V, G = spec.hidden_size, spec.vocab_size, spec.gates
        self.parts = max(1, min(int(parts), H))
        self.unit_bounds = cell_parts_kernels.unit_bounds(H, self.parts)
        columns = microkernel.HOST_TILES[dtype.type].columns
        self.first_forward_panel = cell_parts_kernels.panel_bounds(self.unit_bounds, G, columns)
        self.first_backward_panel = cell_parts_kernels.panel_bounds(self.unit_bounds, 1, columns)
        z = lambda *shape: aligned_zeros(shape, dtype)  # noqa: E731
        self.layers = []
        for layer in range(spec.num_layers):
            a = dict(hs=z((T + 1) * B, H), gates=z(T * B, G * H), tmp=z(B, G * H),
                     forward_panels=(z(self.first_forward_panel[-1], H, columns) if forward_panels is None
                                     else forward_panels[layer]))
            if spec.cell == "lstm":
                a["cs"] = z((T + 1) * B, H)
            if spec.cell == "gru":
                a["hn"] = z(T * B, H)
            if backward:
                a.update(dgx=z(T * B, G * H), dhs=z(T * B, H), dh=z(B, H), dc=z(B, H), xd=z(T * B, H),
                         mask=z(T * B, H), backward_panels=z(self.first_backward_panel[-1], G * H, columns))
                a["dgh"] = z(T * B, G * H) if spec.cell == "gru" else a["dgx"]
            self.layers.append(a)
        if self.parts > 1:  # the products over all T * B rows, cut into as many row parts
            self.row_bounds = stack_kernels.row_bounds(T * B, self.parts)
            self.partials = z(self.parts, max(G * H, V) * H) if backward else None
        if backward:
            self.probs = z(T * B, V)
            self.WxhT, self.dWxhT = z(V, G * H), z(V, G * H)
            self.inputs = np.zeros((B, T), np.int64)
            self.targets = np.zeros((B, T), np.int64)
            self.grads = ModelParams(spec, dtype, is_gradient=True)

    def fits(self, params: ModelParams, batch_size, length) -> bool:
        return (params.spec == self.spec and params.dtype == self.dtype and batch_size == self.batch_size
                and length == self.seq_length)


#: Hidden size from which a step on several threads cuts each layer's units, not its streams (split
#: "units"): from here on the recurrence's products run faster with each thread on its own slice of Whh
#: (see ParallelWorkspace).
UNIT_SPLIT_MIN_HIDDEN = 256


class ParallelWorkspace:
    """A training step's B streams on ``threads`` threads, split by streams or by hidden units.

    ``split="streams"``: the B streams cut into ``n = min(threads, B)``
    contiguous chunks, one thread each. Chunk c holds streams
    ``bounds[c]:bounds[c + 1]`` (``bounds[c] = c * B // n``, as
    :class:`fastrnn.batch.BatchWorkspace` cuts them) in a :class:`StackWorkspace`
    of its own; :func:`fastrnn.chunks.chunked_loss_and_grads` runs the chunks' forward and backward at once
    on n of Numba's threads (:mod:`fastrnn.chunk_kernels`, reading the weights the first chunk's arrays
    hold transposed and packed) with BLAS held to one
    thread, then sums their gradients in chunk order into ``grads``. With one
    chunk ``grads`` is the chunk's own and the step is that of one
    :class:`StackWorkspace`, bit for bit. Results depend on n (rounding only:
    the sums of the weight gradients are split at the chunk bounds), not on how
    busy the machine is; a chunk's gradient is the gradient of its streams'
    loss divided by the whole B, so the chunks' sum is the batch's gradient
    (and an allreduce of the chunks' gradients across processes is the same sum).

    ``split="units"``: one chunk of all B streams, a :class:`StackWorkspace` with
    ``parts=threads``: each recurrence's units are cut into ``threads`` parts
    run at once (every thread multiplies the whole batch's state by its own
    slice of Whh, which stays in its core's cache from step to step), and the
    products over all T * B rows run as ``threads`` row
    blocks at once, BLAS at one thread, a weight gradient's blocks summed in
    block order: results depend on ``threads`` by rounding only, as for chunks.

    ``split=None`` takes "units" for ``threads`` > 1 and H >= ``UNIT_SPLIT_MIN_HIDDEN``, else "streams".
    """

    def __init__(self, spec: ModelSpec, seq_length, batch_size, dtype=np.float64, threads=1, split=None):
        T, B, threads = int(seq_length), int(batch_size), int(threads)
        if threads < 1:
            raise ValueError(f"threads must be positive, got {threads}")
        if split is None:
            split = "units" if threads > 1 and spec.hidden_size >= UNIT_SPLIT_MIN_HIDDEN else "streams"
        if split not in ("streams", "units"):
            raise ValueError(f"split must be 'streams' or 'units', got {split!r}")
        self.split = split
        n = 1 if split == "units" else min(threads, max(B, 1))
        self.bounds = [c * B // n for c in range(n + 1)]
        parts = threads if split == "units" else 1
        first = StackWorkspace(spec, T, self.bounds[1], dtype, parts)
        shared = [a["forward_panels"] for a in first.layers]  # the chunks' step reads the first chunk's packing
        self.chunks = [first] + [StackWorkspace(spec, T, hi - lo, dtype, parts, forward_panels=shared)
                                 for lo, hi in zip(self.bounds[1:], self.bounds[2:])]
        self.spec, self.seq_length, self.batch_size, self.dtype = spec, T, B, np.dtype(dtype)
        self.threads = threads
        self.grads = self.chunks[0].grads if n == 1 else ModelParams(spec, dtype, is_gradient=True)

    @classmethod
    def of(cls, workspace: StackWorkspace) -> "ParallelWorkspace":
        """One chunk: ``workspace`` itself (its arrays shared, not copied)."""
        self = cls.__new__(cls)
        self.spec, self.seq_length, self.batch_size, self.dtype = (workspace.spec, workspace.seq_length,
                                                                    workspace.batch_size, workspace.dtype)
        self.threads, self.bounds, self.chunks = workspace.parts, [0, workspace.batch_size], [workspace]
        self.split = "units" if workspace.parts > 1 else "streams"
        self.grads = workspace.grads
        return self

    @property
    def n_chunks(self) -> int:
        return len(self.chunks)

    def fits(self, params: ModelParams, batch_size, length) -> bool:
        return (params.spec == self.spec and params.dtype == self.dtype and batch_size == self.batch_size
                and length == self.seq_length)

    def sum_grads(self):
        """``grads`` = the chunks' gradients summed in chunk order (nothing to do for one chunk)."""
        if self.n_chunks == 1:
            return self.grads
        out = self.grads.flat
        np.add(self.chunks[0].grads.flat, self.chunks[1].grads.flat, out=out)
        for ws in self.chunks[2:]:
            np.add(out, ws.grads.flat, out=out)
        return self.grads
