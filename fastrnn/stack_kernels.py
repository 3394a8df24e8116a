"""Numba kernels of the stack around the cells: input projections, the output head, weight gradients.

Everything here is off the sequential path: matrix-matrix products over all
T * B (time-major) rows at once, plus the per-row softmax. The cells
(:mod:`fastrnn.cell_kernels`) do the recurrence in between. Float arrays
share one dtype; ids are int64 (B, T) with row ``t * B + b`` reading ``ids[b, t]``.

Dropout (training only) multiplies every layer's outputs by a mask of 0 and
``1 / (1 - p)``, a pure function of the run's key, the step number, the layer,
the time step, the stream's index in the whole batch and the unit
(:func:`dropout_forward`; its numpy twin is :func:`fastrnn.reference.dropout_masks`),
so a resume, another thread count or another process count draws the same masks.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._numba import exact, fast, fast_inline, parallel
from .kernels import add_into, rows_cross_entropy

# splitmix64 (Steele, Lea and Flood 2014): the mask's hash. Constants as uint64 so that Numba keeps
# every operation in unsigned 64-bit integers (mixed with int64 it would go through float64).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


@exact
def splitmix64(x):
    """The splitmix64 finaliser of ``x + golden`` (uint64 in, uint64 out, wrapping)."""
    z = x + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@exact
def dropout_forward(out, mask, h, B, key, first_counter, stream0, total_streams, threshold, scale):
    """out = h * mask for h (T * B, H) time-major rows; mask (T * B, H) receives 0 or ``scale`` (1 / (1 - p)).

    Unit k of stream b at time t is dropped where the top 53 bits of
    ``splitmix64(key ^ c)`` are below ``threshold`` (floor(p * 2^53)), the
    counter c = ``first_counter + (t * total_streams + stream0 + b) * H + k``
    (uint64, wrapping): ``first_counter`` encodes the step and the layer,
    ``stream0`` is stream 0's index among the ``total_streams`` of the whole
    batch (all uint64 but B).
    """
    rows, H = h.shape
    T = rows // B
    key, first_counter, stream0 = np.uint64(key), np.uint64(first_counter), np.uint64(stream0)
    total_streams, threshold = np.uint64(total_streams), np.uint64(threshold)  # int64 would mix through float64
    zero = h.dtype.type(0)
    h_units = np.uint64(H)
    for t in range(T):
        for b in range(B):
            r = t * B + b
            c0 = first_counter + (np.uint64(t) * total_streams + stream0 + np.uint64(b)) * h_units
            m, o, x = mask[r], out[r], h[r]
            for k in range(H):
                keep = (splitmix64(key ^ (c0 + np.uint64(k))) >> _S11) >= threshold
                m[k] = scale if keep else zero
                o[k] = x[k] * m[k]


@fast
def multiply_into(a, b):
    """a (n, m) *= b (n, m), element-wise."""
    for r in range(a.shape[0]):
        x, y = a[r], b[r]
        for k in range(x.shape[0]):
            x[k] *= y[k]


@fast
def transpose_into(out, a):
    """out (n, m) = a.T for a (m, n), in 32 x 32 tiles, each written a row of ``out`` at a time."""
    m, n = a.shape
    for i0 in range(0, m, 32):
        i1 = min(i0 + 32, m)
        for j0 in range(0, n, 32):
            j1 = min(j0 + 32, n)
            for j in range(j0, j1):
                row = out[j]
                for i in range(i0, i1):
                    row[i] = a[i, j]


@fast
def embed_ids(x_proj, WxhT, ids, bh):
    """x_proj (T * B, GH) row t * B + b = Wxh[:, ids[b, t]] + bh, read from WxhT (V, GH) = Wxh.T."""
    B, T = ids.shape
    for t in range(T):
        for b in range(B):
            row, w = x_proj[t * B + b], WxhT[ids[b, t]]
            for k in range(row.shape[0]):
                row[k] = w[k] + bh[k]


@fast
def project_inputs(x_proj, X, Wxh, bh):
    """x_proj (T * B, GH) = X (T * B, H) @ Wxh.T (H, GH) + bh: the input of a layer above the first."""
    np.dot(X, Wxh.T, x_proj)
    for r in range(x_proj.shape[0]):
        add_into(x_proj[r], bh)


@fast
def add_rows(rows, bias):
    """rows (M, N) += bias (N,), row by row."""
    for r in range(rows.shape[0]):
        add_into(rows[r], bias)


@fast
def head_forward(probs, Htop, targets, Why, by):
    """Output layer and softmax of every row; returns the summed cross-entropy (float64, nats).

    probs (T * B, V) receives the softmax of ``Htop (T * B, H) @ Why.T + by``; targets (B, T).
    """
    np.dot(Htop, Why.T, probs)
    return rows_cross_entropy(probs, targets, by)


@fast_inline
def _logit_grads(dby, probs, targets, scale):
    """probs (T * B, V) becomes dy = (probs - onehot(targets)) * scale in place; dby (V,) = its rows' sum."""
    B, T = targets.shape
    one = probs.dtype.type(1)
    for t in range(T):
        for b in range(B):
            row = probs[t * B + b]
            row[targets[b, t]] -= one
            for v in range(row.shape[0]):
                row[v] *= scale
    dby[:] = 0
    for r in range(probs.shape[0]):
        add_into(dby, probs[r])


@fast
def head_backward(dHtop, dWhy, dby, probs, Htop, targets, Why, scale):
    """Gradients of ``scale`` times the summed loss: dy = (probs - onehot(targets)) * scale (in place in
    probs), dWhy (V, H) = dy.T @ Htop, dby (V,) = sum of the rows of dy, dHtop (T * B, H) = dy @ Why
    (overwritten)."""
    _logit_grads(dby, probs, targets, scale)
    np.dot(probs.T, Htop, dWhy)
    np.dot(probs, Why, dHtop)


@fast
def recurrent_grads(dWhh, dgh, hs_prev):
    """dWhh (GH, H) = dgh.T (GH, T * B) @ hs_prev (T * B, H), hs_prev the states each step started from."""
    np.dot(dgh.T, hs_prev, dWhh)


@fast
def sum_rows(out, a, c0):
    """out (n,) = the sum over rows of a[:, c0:c0 + n] (a (R, m))."""
    out[:] = 0
    n = out.shape[0]
    for r in range(a.shape[0]):
        add_into(out, a[r, c0:c0 + n])  # a contiguous slice: the loop vectorises (indexing a[r] did not)


@fast
def input_grads(dX, dWxh, dgx, X, Wxh):
    """A layer above the first: dWxh (GH, H) = dgx.T @ X and dX (T * B, H) = dgx @ Wxh (overwritten)."""
    np.dot(dgx.T, X, dWxh)
    np.dot(dgx, Wxh, dX)


@fast
def embedding_grads(dWxh, dWxhT, dgx, ids):
    """Layer 0: dWxh (GH, V) = the rows of dgx (T * B, GH) scatter-added by id, through dWxhT (V, GH)."""
    B, T = ids.shape
    dWxhT[:] = 0
    for t in range(T):
        for b in range(B):
            add_into(dWxhT[ids[b, t]], dgx[t * B + b])
    GH, V = dWxh.shape
    for v in range(V):
        row = dWxhT[v]
        for k in range(GH):
            dWxh[k, v] = row[k]



# --- the same products with the T * B rows cut into parts, run at once ---------------------------
# For a workspace whose recurrence is split by units (parts > 1): BLAS stays at one thread and the
# parts, contiguous row ranges ``bounds`` (P + 1,), run on Numba's threads. A weight gradient sums
# over rows, so each part writes its share into ``partials`` (P, >= m * n) and :func:`sum_parts`
# adds them in part order: the result depends on P (rounding only), not on the machine.

@fast
def row_bounds(rows, parts):
    """(parts + 1,) int64 bounds cutting ``rows`` rows into ``parts`` contiguous, nearly equal ranges."""
    bounds = np.empty(parts + 1, np.int64)
    for p in range(parts + 1):
        bounds[p] = p * rows // parts
    return bounds


@parallel
def sum_parts(out, partials):
    """out (m, n) = partials[0] + partials[1] + ... (each part's first m * n entries, row-major), in order."""
    m, n = out.shape
    P = partials.shape[0]
    for i in prange(m):
        row = out[i]
        for k in range(n):
            row[k] = partials[0, i * n + k]
        for p in range(1, P):
            src = partials[p]
            for k in range(n):
                row[k] += src[i * n + k]


@parallel
def gram_parts(out, partials, a, b, bounds):
    """out (m, n) = a.T (m, R) @ b (R, n), each part's rows [lo, hi) in partials[p], then summed."""
    m, n = out.shape
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        np.dot(a[lo:hi].T, b[lo:hi], partials[p, :m * n].reshape((m, n)))
    sum_parts(out, partials)


@parallel
def project_inputs_parts(x_proj, X, Wxh, bh, bounds):
    """:func:`project_inputs` over the row parts of ``bounds``."""
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        np.dot(X[lo:hi], Wxh.T, x_proj[lo:hi])
        for r in range(lo, hi):
            add_into(x_proj[r], bh)


@parallel
def head_forward_parts(probs, Htop, targets, Why, by, bounds):
    """:func:`head_forward` with its product over the row parts of ``bounds``."""
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        np.dot(Htop[lo:hi], Why.T, probs[lo:hi])
    return rows_cross_entropy(probs, targets, by)


@parallel
def head_backward_parts(dHtop, dWhy, dby, probs, Htop, targets, Why, scale, partials, bounds):
    """:func:`head_backward` with its products over the row parts of ``bounds`` (partials: see above)."""
    _logit_grads(dby, probs, targets, scale)
    gram_parts(dWhy, partials, probs, Htop, bounds)
    for part in prange(bounds.shape[0] - 1):
        lo, hi = bounds[part], bounds[part + 1]
        np.dot(probs[lo:hi], Why, dHtop[lo:hi])


@parallel
def input_grads_parts(dX, dWxh, dgx, X, Wxh, partials, bounds):
    """:func:`input_grads` over the row parts of ``bounds`` (partials: see above)."""
    gram_parts(dWxh, partials, dgx, X, bounds)
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        np.dot(dgx[lo:hi], Wxh, dX[lo:hi])
