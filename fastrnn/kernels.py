"""Numba helpers every model's kernels share: the softmax (with its vectorised exp), the cross-entropy of
rows of logits, the output head of one state, and the sampling helpers (temperature, top-k / top-p, the
inverse-CDF draw).

Pure functions over arrays: no I/O, no globals, no allocation. Argument order:
outputs first, then inputs, then weights, then scalars. Float arrays are all
float32 or all float64 (one compile per dtype), ids are int64. The twins are in
:mod:`fastrnn.reference`. Softmax subtracts the row maximum (no overflow for
large logits) and uses :func:`exp_sub_inplace`, an exp that vectorises (<= 1 ulp
from numpy's in float64).
"""
from __future__ import annotations

import numpy as np

from ._numba import exact, fast


# --- building blocks (inlined into the kernels below by LLVM) ---------------

@exact
def exp_sub_inplace(row, shift):
    """row (n,) = exp(row - shift), with an exp that vectorises (libm's exp is a scalar call).

    x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2 (Cody-Waite: ln2 in
    two parts, the high part short enough that n * ln2_hi is exact in float32
    too), exp(r) = 1 + (r + r^2 q(r)) with q the Taylor polynomial to r^13
    (truncation < 1e-17 relative), then scaled by 2^n as two exact powers of two
    built from their bit patterns, so results down to the subnormals (and the
    underflow to 0 below about -745) come out right. Measured against numpy:
    <= 1 ulp in float64, <= 2 ulp in float32, over the whole range. Exact
    arithmetic (no fastmath), so the reduction is not reassociated. exp(-inf) =
    0 and NaN stays NaN; meant for shift = max(row), where row - shift <= 0
    (arguments above about 709 are not handled).
    """
    dt = row.dtype.type
    one, half, cut = dt(1), dt(0.5), dt(-746)
    log2e = dt(1.4426950408889634)
    ln2_hi, ln2_lo = dt(0.693145751953125), dt(1.4286068203094172321e-06)
    c2, c3, c4, c5, c6 = dt(1 / 2), dt(1 / 6), dt(1 / 24), dt(1 / 120), dt(1 / 720)
    c7, c8, c9, c10 = dt(1 / 5040), dt(1 / 40320), dt(1 / 362880), dt(1 / 3628800)
    c11, c12, c13 = dt(1 / 39916800), dt(1 / 479001600), dt(1 / 6227020800)
    for i in range(row.shape[0]):
        x = row[i] - shift
        xc = x if x > cut else cut  # also maps NaN to cut; NaN is restored below
        fn = np.floor(xc * log2e + half)
        r = (xc - fn * ln2_hi) - fn * ln2_lo
        q = c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * (c7 + r * (
            c8 + r * (c9 + r * (c10 + r * (c11 + r * (c12 + r * c13))))))))))
        p = one + (r + (r * r) * q)
        n = np.int64(fn)
        n1 = n >> 1  # 2^n = 2^n1 * 2^(n - n1): each factor a normal float64, exact
        s1 = dt(np.int64((n1 + 1023) << 52).view(np.float64))
        s2 = dt(np.int64((n - n1 + 1023) << 52).view(np.float64))
        e = (p * s1) * s2
        row[i] = e if x == x else x


@fast
def output_logits(logits, h, Why, by):
    """logits (V,) = Why (V, H) @ h (H,) + by (V,)."""
    V, H = Why.shape
    for v in range(V):
        w = Why[v]
        acc = by[v]
        for j in range(H):
            acc += w[j] * h[j]
        logits[v] = acc


@fast
def temper_inplace(logits, inv_temperature):
    """logits (V,) <- (logits - max(logits)) * inv_temperature, in place: softmax of it is softmax(logits / T).

    Shifted first, the maximum becomes 0 and the rest <= 0, so a huge (finite)
    inverse temperature gives 0 and -inf, never inf - inf: a temperature near 0
    picks the most likely ids (ties share the draw), without NaNs.
    """
    m = logits[0]
    for v in range(1, logits.shape[0]):
        if logits[v] > m:
            m = logits[v]
    for v in range(logits.shape[0]):
        logits[v] = (logits[v] - m) * inv_temperature


@fast
def softmax_inplace(p):
    """Replace logits p (V,) by their softmax; return ``(max, log(sum(exp(p - max))))``."""
    V = p.shape[0]
    m = p[0]
    for v in range(1, V):
        if p[v] > m:
            m = p[v]
    exp_sub_inplace(p, m)
    s = p[0] - p[0]  # zero of p's dtype
    for v in range(V):
        s += p[v]
    inv = 1 / s
    for v in range(V):
        p[v] *= inv
    return m, np.log(s)


@fast
def rows_cross_entropy(probs, targets, by):
    """Logit rows to softmax rows in place, adding ``by`` first; returns the summed cross-entropy (float64).

    probs (T * B, V) time-major (row t * B + b is stream b at step t), targets (B, T) int64.
    """
    B, T = targets.shape
    loss = 0.0
    for t in range(T):
        for b in range(B):
            p = probs[t * B + b]
            for v in range(p.shape[0]):
                p[v] += by[v]
            target_logit = p[targets[b, t]]
            m, log_sum = softmax_inplace(p)
            loss += log_sum - (target_logit - m)
    return loss


@fast
def add_into(acc, x):
    """acc += x, element-wise (same shape, C-contiguous)."""
    a = acc.reshape(acc.size)
    b = x.reshape(x.size)
    for k in range(a.size):
        a[k] += b[k]


@exact
def pick_id(probs, u):
    """Inverse-CDF draw: the first id whose normalised cumulative probability exceeds u.

    The same rule as numpy's ``choice(p=...)``: cdf = cumsum(p) / cdf[-1], then
    ``searchsorted(cdf, u, side='right')``.
    """
    V = probs.shape[0]
    total = probs[0] - probs[0]
    for v in range(V):
        total += probs[v]
    acc = total - total
    for v in range(V):
        acc += probs[v]
        if u < acc / total:
            return v
    return V - 1


@exact
def keep_top(probs, top_k, top_p):
    """Zero, in place, the probabilities (V,) outside the top-k and then the top-p (nucleus) set.

    Ids are ranked by probability, ties to the lower id (a stable sort). With
    ``top_k`` in [1, V) only the k first stay; with ``top_p`` in (0, 1) only the
    shortest prefix of what is left whose mass reaches ``top_p`` of its total
    (summed in rank order, in probs' dtype; the limit in float64) stays: an id
    stays while the mass ranked before it is below the limit, so the most
    likely id always stays. ``top_k <= 0`` and ``top_p >= 1`` are off.
    """
    V = probs.shape[0]
    order = np.argsort(-probs, kind="mergesort")
    k = V if top_k <= 0 or top_k > V else top_k
    if top_p < 1.0:
        total = probs[0] - probs[0]
        for r in range(k):
            total += probs[order[r]]
        limit = top_p * total
        acc = total - total
        kept = 0
        for r in range(k):
            if acc >= limit:
                break
            acc += probs[order[r]]
            kept += 1
        k = kept
    for r in range(k, V):
        probs[order[r]] = 0


@fast
def draw_rows(out_ids, logits, uniforms, inv_temperature, argmax, top_k, top_p):
    """One draw per row of logits (B, V), overwritten: out_ids (B,) int64; row b's draw uses uniforms[b],
    inv_temperature[b], argmax[b], top_k[b] and top_p[b] as one stream's sampler does (the argmax, or
    :func:`temper_inplace`, :func:`softmax_inplace`, :func:`keep_top` when on, :func:`pick_id`)."""
    for b in range(logits.shape[0]):
        row = logits[b]
        if argmax[b]:
            out_ids[b] = np.argmax(row)
            continue
        temper_inplace(row, inv_temperature[b])
        softmax_inplace(row)
        if top_k[b] > 0 or top_p[b] < 1.0:
            keep_top(row, top_k[b], top_p[b])
        out_ids[b] = pick_id(row, uniforms[b])
