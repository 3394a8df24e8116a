"""Numba kernels of the minibatched tanh RNN: B streams trained together in one step.

The twin of one batched step is :func:`fastrnn.reference.loss_and_grads` run on
each stream separately, the unclipped gradients summed and divided by B, then
clipped and applied with Adagrad; the tests check exactly that.

Layout. The B streams of a step are cut into ``n`` contiguous *chunks* of
streams (``bounds[c] : bounds[c + 1]``); a chunk is the unit of parallel work.
Chunk c of Bc streams keeps its states in ``hs[c]`` as rows ``t * Bc + j``
(time-major, stream j of the chunk), so the Bc states of one time step are one
contiguous (Bc, H) block and all T * Bc states are one (T * Bc, H) matrix:
- forward: per step one (Bc, H) @ (H, H) GEMM into the next block (the
  recurrence), then ``tanh(. + Wxh[:, ix] + bh)``; the output layer for all rows
  at once, (T * Bc, H) @ (H, V), then a softmax per row (max subtracted);
- backward: dWhy, dby and dh from the outputs as three GEMMs over all rows;
  per step ``dhraw = (1 - h^2) * (dh + dhnext)`` and ``dhnext = dhraw @ Whh``
  (the only sequential product); then dWhh = dhraw_all.T @ hs_prev_all as one
  (H, T * Bc) @ (T * Bc, H) GEMM, dbh and the dWxh scatter-add.
A chunk of one stream runs the batch-1 kernels of :mod:`fastrnn.kernels`
unchanged, so a batch of one is bit-identical to :func:`fastrnn.train_step`.
Larger chunks use :func:`fastrnn.kernels.tanh_add_inplace` (a tanh that
vectorises, <= 2 ulp from libm's) instead of ``np.tanh``, which was ~15 % of a step at H = 512.

Each chunk writes its own gradient buffers (``cWxh[c]`` ...). The step then
reduces them element by element in chunk order, scales by 1/B, clips and (if
asked) applies Adagrad, with IEEE-exact arithmetic. Results therefore depend on
the chunking, never on how many threads run the chunks: the serial and the
``prange`` variant of a step are bit-identical for the same chunks.

Argument order: outputs and workspaces first, then inputs, then weights, then
scalars. Float arrays are all float32 or all float64; ids are int64.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._numba import exact, fast, parallel
from .kernels import (add_into, rnn_backward_impl, rnn_forward, rows_cross_entropy, softmax_inplace,
                      tanh_add_inplace)

REDUCE_BLOCK = 16384  # elements per work item of the parallel gradient reduction
PARALLEL_REDUCE_MIN_BLOCKS = 8  # fewer work items than this: reduce on one thread


# --- one chunk of streams: forward and backward ---------------------------------

@fast
def chunk_forward(hs, probs, inputs, targets, WhhT, WhyT, xb, by):
    """Forward pass of a chunk of Bc >= 2 streams; returns the loss summed over its T * Bc rows (float64).

    hs ((T+1) * Bc, H): rows 0..Bc-1 hold hprev on entry; row t * Bc + j
    receives h_t of stream j. probs (T * Bc, V) receives the softmax of each row.
    inputs, targets (Bc, T) int64. WhhT (H, H) = Whh.T and WhyT (H, V) = Why.T
    as C-contiguous copies (that orientation is the faster GEMM for small Bc);
    xb (V, H) = Wxh.T + bh, the input term of each id, read as a contiguous row.
    """
    Bc, T = inputs.shape
    for t in range(T):  # the recurrence: only the (Bc, H) @ (H, H) product is sequential
        h_out = hs[(t + 1) * Bc:(t + 2) * Bc]
        np.dot(hs[t * Bc:(t + 1) * Bc], WhhT, h_out)
        for j in range(Bc):
            tanh_add_inplace(h_out[j], xb[inputs[j, t]])
    # Output layer for all T * Bc rows at once: (T * Bc, H) @ (H, V).
    np.dot(hs[Bc:], WhyT, probs)
    return rows_cross_entropy(probs, targets, by)


@fast
def chunk_backward(dWxh, dWhh, dWhy, dbh, dby, dhs, dhnext, dxb, hs, probs, inputs, targets, Whh, Why):
    """Backprop through time for a chunk of Bc >= 2 streams; *overwrites* dWxh..dby with its summed gradients.

    dhs (T * Bc, H), dhnext (Bc, H), dxb (V, H): workspaces. hs, probs: as left
    by :func:`chunk_forward` (probs becomes dy = p - onehot(target) in place).
    """
    Bc, T = inputs.shape
    H = Whh.shape[0]
    one = hs.dtype.type(1)
    for t in range(T):
        for j in range(Bc):
            probs[t * Bc + j, targets[j, t]] -= one
    dy = probs
    # Output layer, off the sequential path: dWhy = dy.T @ hs[Bc:], dby, dh = dy @ Why.
    np.dot(dy.T, hs[Bc:], dWhy)
    dby[:] = 0
    for r in range(T * Bc):
        add_into(dby, dy[r])
    np.dot(dy, Why, dhs)
    # The recurrence: dhraw_t = (1 - h_t^2) * (dh_t + dhnext); dhnext = dhraw_t @ Whh.
    for t in range(T - 1, -1, -1):
        h = hs[(t + 1) * Bc:(t + 2) * Bc]
        d = dhs[t * Bc:(t + 1) * Bc]
        for j in range(Bc):
            hj, dj = h[j], d[j]
            if t == T - 1:
                for i in range(H):
                    dj[i] = (one - hj[i] * hj[i]) * dj[i]
            else:
                nj = dhnext[j]
                for i in range(H):
                    dj[i] = (one - hj[i] * hj[i]) * (dj[i] + nj[i])
        if t > 0:
            np.dot(d, Whh, dhnext)
    # Off the sequential path again: dWhh = dhraw_all.T @ hs_prev_all, dbh, dWxh.
    np.dot(dhs.T, hs[:T * Bc], dWhh)
    dxb[:] = 0  # dWxh.T, so the scatter-add reads and writes contiguous rows
    dbh[:] = 0
    for t in range(T):
        for j in range(Bc):
            d = dhs[t * Bc + j]
            add_into(dxb[inputs[j, t]], d)
            add_into(dbh, d)
    V = dWxh.shape[1]
    for i in range(H):
        for v in range(V):
            dWxh[i, v] = dxb[v, i]


@fast
def chunk_loss_and_grads(dWxh, dWhh, dWhy, dbh, dby, hs, probs, dhs, dhnext, dxb, hprev, h_last,
                         inputs, targets, Wxh, Whh, Why, bh, by, WhhT, WhyT, xb):
    """Forward and backward of one chunk; returns its summed loss (float64).

    hprev (Bc, H) is read, h_last (Bc, H) receives the final states (may alias
    hprev). Gradients are overwritten, summed over the chunk's streams. Workspace
    arrays are at least as large as the chunk needs; only their leading rows
    are used. A chunk of one stream runs the batch-1 kernels.
    """
    Bc, T = inputs.shape
    if Bc == 1:
        h1, p1, d1 = hs[:T + 1], probs[:T], dhs[:T]
        h1[0] = hprev[0]
        loss = rnn_forward(h1, p1, inputs[0], targets[0], Wxh, Whh, Why, bh, by)
        rnn_backward_impl(dWxh, dWhh, dWhy, dbh, dby, d1, dhnext[0], dWhh, dWhy, h1, p1, inputs[0], targets[0],
                          Whh, Why, False)  # the two tmp buffers are unused when not accumulating
        h_last[0] = h1[T]
        return loss
    h, p, d = hs[:(T + 1) * Bc], probs[:T * Bc], dhs[:T * Bc]
    h[:Bc] = hprev
    loss = chunk_forward(h, p, inputs, targets, WhhT, WhyT, xb, by)
    chunk_backward(dWxh, dWhh, dWhy, dbh, dby, d, dhnext[:Bc], dxb, h, p, inputs, targets, Whh, Why)
    h_last[:] = h[T * Bc:]
    return loss


# --- reduction over chunks, clip, Adagrad (exact arithmetic) ------------------------

@exact
def reduce_clip_update(chunk_grads, param, memory, lo, hi, inv_batch, learning_rate, clip, eps, update):
    """Elements lo..hi-1 of one parameter: g = (sum of the chunks' gradients, in chunk order) * inv_batch,
    clipped to [-clip, clip], written to chunk_grads[0]; then Adagrad on param and memory if ``update``.

    chunk_grads (n, size); param, memory (size,): flat views. The Adagrad step
    is the seed's expression in the seed's order.
    """
    n = chunk_grads.shape[0]
    g0 = chunk_grads[0]
    for c in range(1, n):  # chunk by chunk, so each pass is a contiguous, vectorised add
        gc = chunk_grads[c]
        for k in range(lo, hi):
            g0[k] += gc[k]
    neg_lr = -learning_rate
    lo_clip = -clip
    for k in range(lo, hi):
        g = g0[k] * inv_batch
        if g < lo_clip:
            g = lo_clip
        elif g > clip:
            g = clip
        g0[k] = g
        if update:
            memory[k] += g * g
            param[k] += neg_lr * g / np.sqrt(memory[k] + eps)


@fast
def prepare_weights(WhhT, WhyT, xb, Wxh, Whh, Why, bh):
    """The step's read-only weight copies shared by all chunks: WhhT = Whh.T, WhyT = Why.T, xb = Wxh.T + bh."""
    transpose_into(WhhT, Whh)
    transpose_into(WhyT, Why)
    transpose_into(xb, Wxh)
    for v in range(xb.shape[0]):
        add_into(xb[v], bh)


@fast
def transpose_into(out, a):
    """out (n, m) = a.T for a (m, n), in 32 x 32 tiles, each written a row of ``out`` at a time (measured at
    2048 x 512: 5x faster than 16 x 16 tiles read a row of ``a`` at a time, 10x than a strided copy)."""
    m, n = a.shape
    for i0 in range(0, m, 32):
        i1 = min(i0 + 32, m)
        for j0 in range(0, n, 32):
            j1 = min(j0 + 32, n)
            for j in range(j0, j1):
                row = out[j]
                for i in range(i0, i1):
                    row[i] = a[i, j]


# --- one batched step: chunks, then reduction (serial and parallel variants) ---------
# The two variants share their body; keep them identical.

@exact
def batch_step_serial(chunk_losses, cWxh, cWhh, cWhy, cbh, cby, hs, probs, dhs, dhnext, dxb, WhhT, WhyT, xb,
                      hprev, inputs, targets, bounds,
                      Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
                      learning_rate, clip, eps, update):
    """One batched step over the chunks ``bounds`` (n+1,), one after the other; returns the loss / B (float64).

    cWxh (n, H, V) ... cby (n, V): per-chunk gradients; chunk 0's receive the
    batch gradient (summed over the B streams, divided by B, clipped). hs
    (n, (T+1) * Bmax, H), probs (n, T * Bmax, V), dhs (n, T * Bmax, H), dhnext
    (n, Bmax, H), dxb (n, V, H): per-chunk workspaces; WhhT (H, H), WhyT (H, V),
    xb (V, H): shared. hprev (B, H) holds the states on entry and the final
    states on return. inputs, targets (B, T) int64. With ``update`` the
    parameters and Adagrad memories mWxh..mby are updated in place.
    """
    prepare_weights(WhhT, WhyT, xb, Wxh, Whh, Why, bh)
    n = bounds.shape[0] - 1
    for c in range(n):
        b0, b1 = bounds[c], bounds[c + 1]
        chunk_losses[c] = chunk_loss_and_grads(
            cWxh[c], cWhh[c], cWhy[c], cbh[c], cby[c], hs[c], probs[c], dhs[c], dhnext[c], dxb[c],
            hprev[b0:b1], hprev[b0:b1], inputs[b0:b1], targets[b0:b1], Wxh, Whh, Why, bh, by, WhhT, WhyT, xb)
    B = hprev.shape[0]
    inv_batch = Whh.dtype.type(1) / Whh.dtype.type(B)
    chunk_grads = (cWxh.reshape(n, -1), cWhh.reshape(n, -1), cWhy.reshape(n, -1), cbh, cby)
    params = (Wxh.reshape(-1), Whh.reshape(-1), Why.reshape(-1), bh, by)
    memory = (mWxh.reshape(-1), mWhh.reshape(-1), mWhy.reshape(-1), mbh, mby)
    for q in range(5):
        size = params[q].shape[0]
        for blk in range((size + REDUCE_BLOCK - 1) // REDUCE_BLOCK):
            lo = blk * REDUCE_BLOCK
            reduce_clip_update(chunk_grads[q], params[q], memory[q], lo, min(lo + REDUCE_BLOCK, size),
                               inv_batch, learning_rate, clip, eps, update)
    loss = 0.0
    for c in range(n):
        loss += chunk_losses[c]
    return loss / B


@parallel
def batch_step_parallel(chunk_losses, cWxh, cWhh, cWhy, cbh, cby, hs, probs, dhs, dhnext, dxb, WhhT, WhyT, xb,
                        hprev, inputs, targets, bounds,
                        Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
                        learning_rate, clip, eps, update):
    """:func:`batch_step_serial` with the chunks, and the reduction's blocks, spread over Numba's threads.

    Bit-identical to the serial variant for the same chunks: each chunk writes
    only its own buffers, and every reduced element sums the chunks in order.
    The caller holds BLAS to one thread.
    """
    H = Whh.shape[0]
    for r in prange((H + 63) // 64):  # WhhT (the largest copy) in row bands, in parallel
        transpose_into(WhhT[:, r * 64:min(r * 64 + 64, H)], Whh[r * 64:min(r * 64 + 64, H)])
    transpose_into(WhyT, Why)
    transpose_into(xb, Wxh)
    for v in range(xb.shape[0]):
        add_into(xb[v], bh)
    n = bounds.shape[0] - 1
    for c in prange(n):
        b0, b1 = bounds[c], bounds[c + 1]
        chunk_losses[c] = chunk_loss_and_grads(
            cWxh[c], cWhh[c], cWhy[c], cbh[c], cby[c], hs[c], probs[c], dhs[c], dhnext[c], dxb[c],
            hprev[b0:b1], hprev[b0:b1], inputs[b0:b1], targets[b0:b1], Wxh, Whh, Why, bh, by, WhhT, WhyT, xb)
    reduce_update_parallel(cWxh, cWhh, cWhy, cbh, cby, Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
                           hprev.shape[0], learning_rate, clip, eps, update)
    loss = 0.0
    for c in range(n):
        loss += chunk_losses[c]
    return loss / hprev.shape[0]


@parallel
def reduce_update_parallel(cWxh, cWhh, cWhy, cbh, cby, Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
                           B, learning_rate, clip, eps, update):
    """The n parts' gradients (cWxh (n, H, V) ...) reduced in part order, / B, clipped, Adagrad if ``update``.

    The parallel twin of the reduction in :func:`batch_step_serial`: blocks of
    ``REDUCE_BLOCK`` elements of all five parameters are the work items; chunk
    0's buffers receive the batch gradient.
    """
    n = cWxh.shape[0]
    inv_batch = Whh.dtype.type(1) / Whh.dtype.type(B)
    chunk_grads = (cWxh.reshape(n, -1), cWhh.reshape(n, -1), cWhy.reshape(n, -1), cbh, cby)
    params = (Wxh.reshape(-1), Whh.reshape(-1), Why.reshape(-1), bh, by)
    memory = (mWxh.reshape(-1), mWhh.reshape(-1), mWhy.reshape(-1), mbh, mby)
    # All five parameters' blocks as one list of work items: one parallel region, not five.
    first_block = np.zeros(6, np.int64)
    for q in range(5):
        first_block[q + 1] = first_block[q] + (params[q].shape[0] + REDUCE_BLOCK - 1) // REDUCE_BLOCK
    n_items = first_block[5]
    if n_items >= PARALLEL_REDUCE_MIN_BLOCKS:
        for w in prange(n_items):
            q = 0
            while w >= first_block[q + 1]:
                q += 1
            lo = (w - first_block[q]) * REDUCE_BLOCK
            reduce_clip_update(chunk_grads[q], params[q], memory[q], lo, min(lo + REDUCE_BLOCK, params[q].shape[0]),
                               inv_batch, learning_rate, clip, eps, update)
    else:  # small models: waking the threads costs more than the work
        for q in range(5):
            reduce_clip_update(chunk_grads[q], params[q], memory[q], 0, params[q].shape[0],
                               inv_batch, learning_rate, clip, eps, update)


# --- one batched step, split by columns for the recurrence ("wide") -----------------------
# For few streams per thread and a large H, cutting the streams into chunks leaves
# each thread a thin (B / n, H) @ (H, H) product per time step that streams all of
# Whh. Instead all B streams stay together: the sequential products are split by
# columns of Whh (thread c owns hidden units c * Hc ... (c + 1) * Hc - 1 and reads
# only its Hc columns of Whh, which can then stay in its core's cache: float32 at
# H = 512), and everything hoisted out of the recurrence is split by rows (blocks
# of the T * B (time, stream) rows).

@fast
def wide_prepare_weights(WcolT, Wcol, c, Whh):
    """Part c's column block of Whh, in both orientations: WcolT[c] = Whh.T[:, cols] and Wcol[c] = Whh[:, cols]
    (both (H, Hc), C-contiguous), cols = c * Hc ... (c + 1) * Hc - 1."""
    H, Hc = Whh.shape[0], WcolT.shape[2]
    transpose_into(WcolT[c], Whh[c * Hc:(c + 1) * Hc])
    for k in range(H):
        w, out = Whh[k], Wcol[c, k]
        for i in range(Hc):
            out[i] = w[c * Hc + i]


@fast
def wide_rows_forward(probs, part_losses, c, r0, r1, hs, inputs, targets, WhyT, by, Why, dhs, dWhy, dby):
    """Rows r0..r1-1 (row r: time r // B, stream r % B): output layer, softmax, loss, then dy, dWhy, dby and
    dh = dy @ Why for those rows. part_losses[c] receives their summed loss; dWhy (V, H), dby (V,) are part c's."""
    B = inputs.shape[0]
    one = hs.dtype.type(1)
    p_rows = probs[r0:r1]
    np.dot(hs[B + r0:B + r1], WhyT, p_rows)
    loss = 0.0
    for r in range(r0, r1):
        t, j = r // B, r % B
        p = probs[r]
        for v in range(p.shape[0]):
            p[v] += by[v]
        target = targets[j, t]
        target_logit = p[target]
        m, log_sum = softmax_inplace(p)
        loss += log_sum - (target_logit - m)
        p[target] -= one  # p is now dy
    part_losses[c] = loss
    np.dot(p_rows.T, hs[B + r0:B + r1], dWhy)
    dby[:] = 0
    for r in range(r0, r1):
        add_into(dby, probs[r])
    np.dot(p_rows, Why, dhs[r0:r1])


@fast
def wide_rows_backward(dWhh, dbh, dxb, dWxh, r0, r1, dhs, hs, inputs):
    """Rows r0..r1-1 of the finished dhraw: part c's dWhh = dhraw.T @ hs_prev, dbh and dWxh (via dxb = dWxh.T)."""
    B = inputs.shape[0]
    np.dot(dhs[r0:r1].T, hs[r0:r1], dWhh)
    dxb[:] = 0
    dbh[:] = 0
    for r in range(r0, r1):
        d = dhs[r]
        add_into(dxb[inputs[r % B, r // B]], d)
        add_into(dbh, d)
    transpose_into(dWxh, dxb)


@fast
def wide_hidden_columns(h_next, tmp, xb, ids, c0):
    """h_next[:, c0:c0+Hc] = tanh(tmp + xb[ids][:, c0:c0+Hc]); h_next (B, H), tmp (B, Hc), ids (B,)."""
    Hc = tmp.shape[1]
    for j in range(h_next.shape[0]):
        row = h_next[j, c0:c0 + Hc]
        row[:] = tmp[j]
        tanh_add_inplace(row, xb[ids[j], c0:c0 + Hc])


@fast
def wide_dhraw_columns(d, h, dhnext, c0, first):
    """d[:, c0:c0+Hc] = (1 - h^2) * (d + dhnext) on part c's columns (just (1 - h^2) * d when ``first``);
    d, h (B, H), dhnext (B, Hc)."""
    one = d.dtype.type(1)
    Hc = dhnext.shape[1]
    for j in range(d.shape[0]):
        dj, hj, nj = d[j], h[j], dhnext[j]
        for i in range(Hc):
            k = c0 + i
            if first:
                dj[k] = (one - hj[k] * hj[k]) * dj[k]
            else:
                dj[k] = (one - hj[k] * hj[k]) * (dj[k] + nj[i])


@parallel
def wide_step(part_losses, cWxh, cWhh, cWhy, cbh, cby, hs, probs, dhs, tmp, dxb, WcolT, Wcol, WhyT, xb,
              row_bounds, hprev, inputs, targets,
              Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
              learning_rate, clip, eps, update):
    """One batched step with n parts (``WcolT.shape[0]``), split by columns in the recurrence and by rows
    elsewhere; returns the loss / B (float64). Same meaning as :func:`batch_step_serial`.

    hs ((T+1) * B, H): row t * B + b holds h_t of stream b (rows 0..B-1: hprev);
    probs (T * B, V), dhs (T * B, H): the (time, stream) rows. tmp (n, B, Hc),
    Hc = H / n: each part's product block. dxb (n, V, H) and cWxh (n, H, V) ...
    cby (n, V): per-part buffers (part 0's receive the batch gradient). WcolT,
    Wcol (n, H, Hc), WhyT (H, V), xb (V, H): weight copies made here.
    row_bounds (n+1,): the row blocks. Every part writes only its own columns or
    rows and buffers, and the reduction sums parts in order, so the result does
    not depend on how many threads run the parts.
    """
    n = WcolT.shape[0]
    Hc = WcolT.shape[2]
    B, T = inputs.shape
    for c in prange(n):
        wide_prepare_weights(WcolT, Wcol, c, Whh)
    transpose_into(WhyT, Why)
    transpose_into(xb, Wxh)
    for v in range(xb.shape[0]):
        add_into(xb[v], bh)
    hs[:B] = hprev
    for t in range(T):  # the recurrence: each part computes its columns of h_{t+1}
        h_prev, h_next, ids = hs[t * B:(t + 1) * B], hs[(t + 1) * B:(t + 2) * B], inputs[:, t]
        for c in prange(n):
            np.dot(h_prev, WcolT[c], tmp[c])
            wide_hidden_columns(h_next, tmp[c], xb, ids, c * Hc)
    for c in prange(n):
        wide_rows_forward(probs, part_losses, c, row_bounds[c], row_bounds[c + 1], hs, inputs, targets, WhyT, by,
                          Why, dhs, cWhy[c], cby[c])
    # Backward recurrence: dhraw_t = (1 - h_t^2) * (dh_t + dhnext); dhnext = dhraw_t @ Whh, by columns.
    last = dhs[(T - 1) * B:T * B]
    for c in prange(n):
        wide_dhraw_columns(last, hs[T * B:(T + 1) * B], tmp[c], c * Hc, True)
    for t in range(T - 1, 0, -1):
        d_t, d_prev, h = dhs[t * B:(t + 1) * B], dhs[(t - 1) * B:t * B], hs[t * B:(t + 1) * B]
        for c in prange(n):
            np.dot(d_t, Wcol[c], tmp[c])
            wide_dhraw_columns(d_prev, h, tmp[c], c * Hc, False)
    for c in prange(n):
        wide_rows_backward(cWhh[c], cbh[c], dxb[c], cWxh[c], row_bounds[c], row_bounds[c + 1], dhs, hs, inputs)
    hprev[:] = hs[T * B:]
    reduce_update_parallel(cWxh, cWhh, cWhy, cbh, cby, Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
                           B, learning_rate, clip, eps, update)
    loss = 0.0
    for c in range(n):
        loss += part_losses[c]
    return loss / B


@exact
def batch_train_sequences(losses, cWxh, cWhh, cWhy, cbh, cby, hs, probs, dhs, dhnext, dxb, WhhT, WhyT, xb,
                          chunk_losses, inputs, targets, hprev, data, starts, resets, bounds,
                          Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
                          learning_rate, clip, eps, use_threads):
    """k batched training steps in one call (the trainer's loop); losses (k,) float64 receives each step's loss.

    Step s trains stream b on ``data[starts[s, b] : starts[s, b] + T]`` -> one
    character later (T = inputs.shape[1]); where ``resets[s, b]`` stream b's
    hidden state is zeroed first. inputs, targets (B, T): id workspaces.
    hprev (B, H) carries the states in and out. ``use_threads``: run the
    parallel variant (same results).
    """
    for s in range(starts.shape[0]):
        gather_step(inputs, targets, hprev, data, starts[s], resets[s])
        if use_threads:
            losses[s] = batch_step_parallel(
                chunk_losses, cWxh, cWhh, cWhy, cbh, cby, hs, probs, dhs, dhnext, dxb, WhhT, WhyT, xb,
                hprev, inputs, targets, bounds, Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
                learning_rate, clip, eps, True)
        else:
            losses[s] = batch_step_serial(
                chunk_losses, cWxh, cWhh, cWhy, cbh, cby, hs, probs, dhs, dhnext, dxb, WhhT, WhyT, xb,
                hprev, inputs, targets, bounds, Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
                learning_rate, clip, eps, True)


@exact
def gather_step(inputs, targets, hprev, data, starts, resets):
    """inputs, targets (B, T) = the ids of ``data`` at ``starts`` (B,) and one later; zero hprev[b] where resets[b]."""
    B, T = inputs.shape
    for b in range(B):
        if resets[b]:
            hprev[b] = 0
        p = starts[b]
        for t in range(T):
            inputs[b, t] = data[p + t]
            targets[b, t] = data[p + t + 1]


@exact
def wide_train_sequences(losses, cWxh, cWhh, cWhy, cbh, cby, hs, probs, dhs, tmp, dxb, WcolT, Wcol, WhyT, xb,
                         row_bounds, part_losses, inputs, targets, hprev, data, starts, resets,
                         Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby, learning_rate, clip, eps):
    """:func:`batch_train_sequences` for a workspace split by columns: k :func:`wide_step` steps in one call."""
    for s in range(starts.shape[0]):
        gather_step(inputs, targets, hprev, data, starts[s], resets[s])
        losses[s] = wide_step(part_losses, cWxh, cWhh, cWhy, cbh, cby, hs, probs, dhs, tmp, dxb, WcolT, Wcol,
                              WhyT, xb, row_bounds, hprev, inputs, targets, Wxh, Whh, Why, bh, by,
                              mWxh, mWhh, mWhy, mbh, mby, learning_rate, clip, eps, True)


# --- the gradient of some streams, without the update (data-parallel training) ---------------
# A rank of a data-parallel run computes the summed gradient of its share of the
# streams, the ranks' sums are added (an allreduce), and every rank then scales,
# clips and applies the update. Chunk by chunk these are the kernels of the fused
# step above, so one rank's sum over its chunks is, element for element, what the
# fused step's reduction holds after adding those chunks.

@exact
def sum_chunks_into(out, chunk_grads):
    """out (size,) = chunk_grads[0] + chunk_grads[1] + ... (n, size), added in chunk order (as the fused step)."""
    n = chunk_grads.shape[0]
    out[:] = chunk_grads[0]
    for c in range(1, n):
        gc = chunk_grads[c]
        for k in range(out.shape[0]):
            out[k] += gc[k]


@exact
def batch_grads_serial(chunk_losses, cWxh, cWhh, cWhy, cbh, cby, hs, probs, dhs, dhnext, dxb, WhhT, WhyT, xb,
                       hprev, inputs, targets, bounds, Wxh, Whh, Why, bh, by, gWxh, gWhh, gWhy, gbh, gby):
    """Forward and backward of the chunks ``bounds`` one after the other; returns the loss summed over the
    B * T rows (float64, not divided by B).

    gWxh (H, V) ... gby (V,) receive the gradients summed over the B streams,
    neither scaled nor clipped; the other arrays are those of
    :func:`batch_step_serial`; hprev (B, H) holds the states on entry and the
    final states on return.
    """
    prepare_weights(WhhT, WhyT, xb, Wxh, Whh, Why, bh)
    n = bounds.shape[0] - 1
    for c in range(n):
        b0, b1 = bounds[c], bounds[c + 1]
        chunk_losses[c] = chunk_loss_and_grads(
            cWxh[c], cWhh[c], cWhy[c], cbh[c], cby[c], hs[c], probs[c], dhs[c], dhnext[c], dxb[c],
            hprev[b0:b1], hprev[b0:b1], inputs[b0:b1], targets[b0:b1], Wxh, Whh, Why, bh, by, WhhT, WhyT, xb)
    _sum_all_chunks(n, cWxh, cWhh, cWhy, cbh, cby, gWxh, gWhh, gWhy, gbh, gby)
    loss = 0.0
    for c in range(n):
        loss += chunk_losses[c]
    return loss


@parallel
def batch_grads_parallel(chunk_losses, cWxh, cWhh, cWhy, cbh, cby, hs, probs, dhs, dhnext, dxb, WhhT, WhyT, xb,
                         hprev, inputs, targets, bounds, Wxh, Whh, Why, bh, by, gWxh, gWhh, gWhy, gbh, gby):
    """:func:`batch_grads_serial` with the chunks spread over Numba's threads (bit-identical results)."""
    prepare_weights(WhhT, WhyT, xb, Wxh, Whh, Why, bh)
    n = bounds.shape[0] - 1
    for c in prange(n):
        b0, b1 = bounds[c], bounds[c + 1]
        chunk_losses[c] = chunk_loss_and_grads(
            cWxh[c], cWhh[c], cWhy[c], cbh[c], cby[c], hs[c], probs[c], dhs[c], dhnext[c], dxb[c],
            hprev[b0:b1], hprev[b0:b1], inputs[b0:b1], targets[b0:b1], Wxh, Whh, Why, bh, by, WhhT, WhyT, xb)
    _sum_all_chunks(n, cWxh, cWhh, cWhy, cbh, cby, gWxh, gWhh, gWhy, gbh, gby)
    loss = 0.0
    for c in range(n):
        loss += chunk_losses[c]
    return loss


@exact
def _sum_all_chunks(n, cWxh, cWhh, cWhy, cbh, cby, gWxh, gWhh, gWhy, gbh, gby):
    sum_chunks_into(gWxh.reshape(-1), cWxh.reshape(n, -1))
    sum_chunks_into(gWhh.reshape(-1), cWhh.reshape(n, -1))
    sum_chunks_into(gWhy.reshape(-1), cWhy.reshape(n, -1))
    sum_chunks_into(gbh, cbh)
    sum_chunks_into(gby, cby)
