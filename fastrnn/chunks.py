"""A step of B streams over the chunks of a :class:`~fastrnn.workspaces.ParallelWorkspace`: one chunk on the
engine's driver (:func:`fastrnn.engine.forward`, :func:`fastrnn.engine.backward`), two or more at once on
Numba's threads (:func:`fastrnn.chunk_kernels.chunk_steps`, each chunk the same kernels on its streams)."""
from __future__ import annotations

import numpy as np

from . import chunk_kernels, stack_kernels
from .engine import backward, dropout_counters, forward, last_state, pack_recurrent, parts_blas


def chunked_loss_and_grads(params, ws, inputs, targets, state, total_batch=None, dropout=None):
    """``(loss, grads)`` of B streams over the chunks of ``ws`` (a :class:`ParallelWorkspace`), unclipped.

    inputs, targets (B, T) int64 ids (validated by the caller); ``state`` a tuple
    of (L, B, H) arrays, read as the initial state and overwritten with the last.
    ``loss``: the cross-entropy summed over the B * T characters (the chunks'
    sums added in chunk order); ``grads`` (``ws.grads``, reused by the next
    call): the gradient of that loss divided by ``total_batch`` (default B),
    the chunks' gradients summed in chunk order. Two or more chunks run at once on Numba's threads
    (:func:`fastrnn.chunk_kernels.chunk_steps`: each chunk the kernels of a one-chunk step of its streams);
    BLAS threads are the caller's to set. ``dropout``: None, or the
    step's :class:`Dropout` for these B streams (each chunk draws its streams' masks).
    """
    spec = params.spec
    B, T = inputs.shape
    divisor = B if total_batch is None else total_batch
    if ws.n_chunks == 1:
        cw = ws.chunks[0]
        cw.inputs[:] = inputs
        cw.targets[:] = targets
        with parts_blas(cw):
            loss = forward(params, cw, cw.inputs, cw.targets, state, dropout)
            backward(params, cw, cw.inputs, cw.targets, cw.grads, divisor, dropout)
        last_state(cw, spec, B, T, state)
        return loss, ws.grads
    losses = _chunk_steps(params, ws, inputs, targets, state, divisor, dropout)
    total = float(losses[0])
    for x in losses[1:]:
        total += float(x)
    return total, ws.sum_grads()


def _chunk_steps(params, ws, inputs, targets, state, divisor, dropout):
    """The chunks' steps at once (:func:`fastrnn.chunk_kernels.chunk_steps`), on the weights transposed and
    packed once into the first chunk's arrays; returns their losses (n,) float64."""
    spec, dtype = params.spec, params.dtype
    L, T = spec.num_layers, ws.seq_length
    chunks, first = ws.chunks, ws.chunks[0]
    stack_kernels.transpose_into(first.WxhT, params["Wxh"])
    for layer, a in enumerate(first.layers):
        Whh = params.layer(layer)[1]
        pack_recurrent(first, a["forward_panels"], Whh, first.first_forward_panel, True)
        pack_recurrent(first, a["backward_panels"], Whh, first.first_backward_panel, False)
    for cw, lo, hi in zip(chunks, ws.bounds, ws.bounds[1:]):
        cw.inputs[:] = inputs[lo:hi]
        cw.targets[:] = targets[lo:hi]
        for layer, a in enumerate(cw.layers):
            a["hs"][:hi - lo] = state[0][layer, lo:hi]
            if spec.cell == "lstm":
                a["cs"][:hi - lo] = state[1][layer, lo:hi]
    names = [spec.layer_names(layer) for layer in range(L)]  # (Wxh, Whh, bh[, bhn])

    def per_layer(arrays, i):  # each layer's i-th array (Wxh, Whh, bh, bhn; bh stands in for a missing bhn)
        return tuple(arrays[n[i] if i < len(n) else n[2]] for n in names)

    def layers(key):  # a per-layer array of every chunk, chunk-major
        return tuple(a[key] for cw in chunks for a in cw.layers)

    def grads(i):  # per_layer of every chunk's gradients, chunk-major
        return tuple(g for cw in chunks for g in per_layer(cw.grads, i))

    def chunk(get):
        return tuple(get(cw) for cw in chunks)

    if dropout is None:  # None in place of xd and mask compiles the step without dropout
        drop = (np.uint64(0), np.zeros(L, np.uint64), np.zeros(len(chunks), np.uint64), np.uint64(0), np.uint64(0),
                dtype.type(1))
    else:
        key, first_counters, streams, threshold, scale = dropout_counters(dropout, spec, T, dtype)
        stream0 = np.array([dropout.first_stream + lo for lo in ws.bounds[:-1]], np.uint64)
        drop = (key, first_counters, stream0, streams, threshold, scale)
    lstm, gru = spec.cell == "lstm", spec.cell == "gru"
    losses = np.zeros(len(chunks))
    chunk_kernels.chunk_steps(
        losses, chunk(lambda cw: cw.inputs), chunk(lambda cw: cw.targets), layers("hs"),
        layers("cs") if lstm else None, layers("gates"), layers("tmp"), layers("hn") if gru else None,
        layers("dgx"), layers("dgh"), layers("dhs"), layers("dh"), layers("dc"),
        None if dropout is None else layers("xd"), None if dropout is None else layers("mask"),
        chunk(lambda cw: cw.probs), first.WxhT, chunk(lambda cw: cw.dWxhT), per_layer(params, 0), per_layer(params, 2),
        per_layer(params, 3), params["Why"], params["by"],
        tuple(a["forward_panels"] for a in first.layers), tuple(a["backward_panels"] for a in first.layers),
        grads(0), grads(1), grads(2), grads(3), chunk(lambda cw: cw.grads["Why"]), chunk(lambda cw: cw.grads["by"]),
        dtype.type(1) / dtype.type(divisor), *drop)
    for cw, lo, hi in zip(chunks, ws.bounds, ws.bounds[1:]):
        last_state(cw, spec, hi - lo, T, tuple(h[:, lo:hi] for h in state))
    return losses
