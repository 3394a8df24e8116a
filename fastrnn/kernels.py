"""Numba kernels of the vanilla tanh RNN, over integer character ids.

Pure functions over arrays: no I/O, no globals, no allocation inside the time
loop (every workspace comes from the caller). Argument order everywhere:
outputs first, then saved values and inputs, then weights, then scalars.
Shapes: T sequence length, H hidden size, V vocabulary size; float arrays are
all float32 or all float64 (one compile per dtype), ids are int64.

How they differ from the seed (:mod:`fastrnn.reference` is the twin):
- ``Wxh @ one_hot(ix)`` is the column lookup ``Wxh[:, ix]``; ``dWxh`` is a
  scatter-add into the columns that occur.
- Only ``Whh @ h`` (forward) and ``Whh.T @ dhraw`` (backward) stay in the
  sequential time loop. The output layer, its gradients, ``Why.T @ dy`` and
  ``dWhh`` do not feed the recurrence and are done once per sequence, after
  (forward) or before/after (backward) the recurrent loop.
- The hoisted products are matrix-matrix work done by BLAS (``np.dot`` with
  ``out=``: (T, H) @ (H, V) and friends). The two sequential matrix-vector
  products are hand-blocked loops over four rows of ``Whh`` at a time, which
  vectorise under ``reassoc`` and stream ``Whh`` row by row in both directions
  (no transposed copy).
- Softmax subtracts the row maximum (no overflow for large logits) and uses
  :func:`exp_sub_inplace`, an exp that vectorises (<= 1 ulp from numpy's in
  float64).
- The tanh is libm's: deep in saturation 1 - h^2 turns a 1-ulp difference in h
  into ~1e-8 relative in the gradients, so only a tanh that rounds exactly like
  numpy's lets this path match the reference at 1e-10.
"""
from __future__ import annotations

import numpy as np

from ._numba import exact, fast
from .optim_kernels import adagrad_update, clip_inplace


# --- building blocks (inlined into the kernels below by LLVM) ---------------

@fast
def recurrent_matvec_add(out, W, x):
    """out (H,) += W (H, H) @ x (H,), four rows at a time so each x[j] load feeds four FMAs."""
    H = W.shape[0]
    H4 = H - H % 4
    for i in range(0, H4, 4):
        w0, w1, w2, w3 = W[i], W[i + 1], W[i + 2], W[i + 3]
        a0, a1, a2, a3 = out[i], out[i + 1], out[i + 2], out[i + 3]
        for j in range(H):
            xj = x[j]
            a0 += w0[j] * xj
            a1 += w1[j] * xj
            a2 += w2[j] * xj
            a3 += w3[j] * xj
        out[i], out[i + 1], out[i + 2], out[i + 3] = a0, a1, a2, a3
    for i in range(H4, H):
        w = W[i]
        acc = out[i]
        for j in range(H):
            acc += w[j] * x[j]
        out[i] = acc


@fast
def recurrent_matvec_t(out, W, g):
    """out (H,) = W.T (H, H) @ g (H,), as row updates over four rows of W at a time.

    Reads W row by row (contiguous), so no transposed copy is needed.
    """
    H = W.shape[0]
    H4 = H - H % 4
    out[:] = 0
    for i in range(0, H4, 4):
        w0, w1, w2, w3 = W[i], W[i + 1], W[i + 2], W[i + 3]
        g0, g1, g2, g3 = g[i], g[i + 1], g[i + 2], g[i + 3]
        for j in range(H):
            out[j] += g0 * w0[j] + g1 * w1[j] + g2 * w2[j] + g3 * w3[j]
    for i in range(H4, H):
        w = W[i]
        gi = g[i]
        for j in range(H):
            out[j] += gi * w[j]


@exact
def exp_sub_inplace(row, shift):
    """row (n,) = exp(row - shift), with an exp that vectorises (libm's exp is a scalar call, ~3-4x slower here).

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
def hidden_step(h_out, h_in, ix, Wxh, Whh, bh):
    """h_out (H,) = tanh(Wxh[:, ix] + Whh @ h_in + bh); h_in (H,) must not alias h_out."""
    H = Whh.shape[0]
    for i in range(H):
        h_out[i] = Wxh[i, ix]
    recurrent_matvec_add(h_out, Whh, h_in)
    for i in range(H):  # libm's tanh: see the module's docstring
        h_out[i] = np.tanh(h_out[i] + bh[i])


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


# --- forward / backward ----------------------------------------------------

@fast
def rnn_forward(hs, probs, inputs, targets, Wxh, Whh, Why, bh, by):
    """Forward pass over one sequence; returns the summed cross-entropy (float64, nats).

    hs (T+1, H): row 0 holds hprev on entry, rows 1..T receive h_1..h_T.
    probs (T, V): receives the softmax of each step's logits.
    inputs, targets (T,) int64.
    """
    T = inputs.shape[0]
    for t in range(T):  # the recurrence: only Whh @ h is sequential
        hidden_step(hs[t + 1], hs[t], inputs[t], Wxh, Whh, bh)
    # Output layer for all steps at once, off the sequential path: (T, H) @ (H, V).
    np.dot(hs[1:], Why.T, probs)
    loss = 0.0
    for t in range(T):
        p = probs[t]
        for v in range(p.shape[0]):
            p[v] += by[v]
        target_logit = p[targets[t]]
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


@fast
def rnn_backward(dWxh, dWhh, dWhy, dbh, dby, dhs, dhnext, tmp_hh, tmp_vh, hs, probs, inputs, targets, Whh, Why):
    """Backprop through time; *adds* the gradients into dWxh..dby (zeroed by the caller).

    dhs (T, H), dhnext (H,), tmp_hh (H, H), tmp_vh (V, H): workspaces.
    hs (T+1, H), probs (T, V): saved by :func:`rnn_forward` (``probs`` is
    turned into dy = p - onehot(target) in place).
    """
    rnn_backward_impl(dWxh, dWhh, dWhy, dbh, dby, dhs, dhnext, tmp_hh, tmp_vh, hs, probs, inputs, targets,
                      Whh, Why, True)


@fast
def rnn_backward_impl(dWxh, dWhh, dWhy, dbh, dby, dhs, dhnext, tmp_hh, tmp_vh, hs, probs, inputs, targets,
                      Whh, Why, accumulate):
    """:func:`rnn_backward`; with ``accumulate=False`` the gradients are overwritten instead.

    Overwriting lets the fused step write the two big products straight into
    dWhh and dWhy, skipping a zeroing pass and an addition pass over each.
    """
    if not accumulate:
        dWxh[:] = 0
        dbh[:] = 0
        dby[:] = 0
    T, H = dhs.shape
    one = hs.dtype.type(1)
    for t in range(T):
        probs[t, targets[t]] -= one
    dy = probs
    # Output layer, off the sequential path, as three matrix products:
    # dWhy += dy.T @ hs[1:], dby += sum_t dy, dhs = dy @ Why (dh from the outputs).
    if accumulate:
        np.dot(dy.T, hs[1:], tmp_vh)
        add_into(dWhy, tmp_vh)
    else:
        np.dot(dy.T, hs[1:], dWhy)
    for t in range(T):
        add_into(dby, dy[t])
    np.dot(dy, Why, dhs)
    # The recurrence: dhraw_t = (1 - h_t^2) * (dh_t + dhnext); dhnext = Whh.T @ dhraw_t.
    dhnext[:] = 0
    for t in range(T - 1, -1, -1):
        h = hs[t + 1]
        d = dhs[t]
        for i in range(H):
            d[i] = (one - h[i] * h[i]) * (d[i] + dhnext[i])
        recurrent_matvec_t(dhnext, Whh, d)
    # Off the sequential path again: dWhh += dhraw.T @ hs[:-1], dbh, dWxh scatter-add.
    if accumulate:
        np.dot(dhs.T, hs[:-1], tmp_hh)
        add_into(dWhh, tmp_hh)
    else:
        np.dot(dhs.T, hs[:-1], dWhh)
    for t in range(T):
        ix = inputs[t]
        d = dhs[t]
        for i in range(H):
            dbh[i] += d[i]
            dWxh[i, ix] += d[i]


# --- clip and Adagrad (exact arithmetic) -----------------------------------

@exact
def _clip_adagrad(param, grad, memory, learning_rate, clip, eps):
    """:func:`fastrnn.optim_kernels.adagrad_update` on arrays of any shape (C-contiguous), no norm scale."""
    adagrad_update(param.reshape(param.size), grad.reshape(grad.size), memory.reshape(memory.size),
                   learning_rate, eps, clip, eps / eps)  # eps / eps: exactly 1 in the arrays' dtype


# --- fused kernels -----------------------------------------------------------

@exact
def loss_and_grads(dWxh, dWhh, dWhy, dbh, dby, hs, probs, dhs, dhnext, tmp_hh, tmp_vh,
                   inputs, targets, Wxh, Whh, Why, bh, by, clip):
    """One sequence's forward, BPTT and clip in one call; returns the summed loss (float64).

    dWxh..dby (any contents on entry) receive the gradients clipped to
    [-clip, clip]; hs[0] holds hprev on entry and hs[T] is h_last on return.
    The arithmetic is :func:`train_step`'s without the update.
    """
    loss = rnn_forward(hs, probs, inputs, targets, Wxh, Whh, Why, bh, by)
    rnn_backward_impl(dWxh, dWhh, dWhy, dbh, dby, dhs, dhnext, tmp_hh, tmp_vh, hs, probs, inputs, targets,
                      Whh, Why, False)
    clip_inplace(dWxh, clip)
    clip_inplace(dWhh, clip)
    clip_inplace(dWhy, clip)
    clip_inplace(dbh, clip)
    clip_inplace(dby, clip)
    return loss


@exact
def train_step(Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
               dWxh, dWhh, dWhy, dbh, dby, hs, probs, dhs, dhnext, tmp_hh, tmp_vh,
               inputs, targets, learning_rate, clip, eps):
    """One training step on one sequence: forward, BPTT, clip, Adagrad, all in place.

    Weights Wxh..by and Adagrad memories mWxh..mby are updated in place;
    dWxh..dby receive the clipped gradients; hs[0] holds hprev on entry and
    hs[T] is h_last on return. Returns the summed loss (float64).
    """
    loss = rnn_forward(hs, probs, inputs, targets, Wxh, Whh, Why, bh, by)
    rnn_backward_impl(dWxh, dWhh, dWhy, dbh, dby, dhs, dhnext, tmp_hh, tmp_vh, hs, probs, inputs, targets,
                      Whh, Why, False)
    _clip_adagrad(Wxh, dWxh, mWxh, learning_rate, clip, eps)
    _clip_adagrad(Whh, dWhh, mWhh, learning_rate, clip, eps)
    _clip_adagrad(Why, dWhy, mWhy, learning_rate, clip, eps)
    _clip_adagrad(bh, dbh, mbh, learning_rate, clip, eps)
    _clip_adagrad(by, dby, mby, learning_rate, clip, eps)
    return loss


@exact
def train_sequences(losses, Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
                    dWxh, dWhh, dWhy, dbh, dby, hs, probs, dhs, dhnext, tmp_hh, tmp_vh,
                    hprev, data, starts, resets, learning_rate, clip, eps):
    """Many consecutive :func:`train_step` calls in one kernel call (the trainer's loop).

    Step s trains on inputs ``data[starts[s] : starts[s] + T]`` and targets one
    character later, T = hs.shape[0] - 1; if ``resets[s]`` the hidden state is
    zeroed first. hprev (H,) carries the hidden state in and out; losses (k,)
    float64 receives each step's summed loss. data: int64 ids.
    """
    T = hs.shape[0] - 1
    for s in range(starts.shape[0]):
        if resets[s]:
            hprev[:] = 0
        hs[0] = hprev
        p = starts[s]
        losses[s] = train_step(Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
                               dWxh, dWhh, dWhy, dbh, dby, hs, probs, dhs, dhnext, tmp_hh, tmp_vh,
                               data[p:p + T], data[p + 1:p + T + 1], learning_rate, clip, eps)
        hprev[:] = hs[T]


# --- forward only: validation and sampling ----------------------------------

@fast
def sequence_loss(h, h_next, logits, inputs, targets, Wxh, Whh, Why, bh, by):
    """Summed cross-entropy of a sequence of any length, without storing hidden states.

    h (H,): hprev on entry, h_last on return; h_next (H,), logits (V,): workspaces.
    """
    T = inputs.shape[0]
    loss = 0.0
    for t in range(T):
        hidden_step(h_next, h, inputs[t], Wxh, Whh, bh)
        h[:] = h_next
        output_logits(logits, h, Why, by)
        target_logit = logits[targets[t]]
        m, log_sum = softmax_inplace(logits)
        loss += log_sum - (target_logit - m)
    return loss


@fast
def sequence_log_probs(out, h, h_next, logits, inputs, targets, Wxh, Whh, Why, bh, by):
    """out (T,) float64 receives log p(targets[t] | inputs[:t+1]); h, h_next, logits as in sequence_loss."""
    T = inputs.shape[0]
    for t in range(T):
        hidden_step(h_next, h, inputs[t], Wxh, Whh, bh)
        h[:] = h_next
        output_logits(logits, h, Why, by)
        target_logit = logits[targets[t]]
        m, log_sum = softmax_inplace(logits)
        out[t] = (target_logit - m) - log_sum


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
def sample_ids(out_ids, h, h_next, logits, seed_ix, uniforms, Wxh, Whh, Why, bh, by, inv_temperature, argmax,
               top_k, top_p):
    """Sample len(out_ids) ids; h (H,) is the memory state (updated in place).

    uniforms (n,) float64 in [0, 1): draw t uses uniforms[t]. logits (V,),
    h_next (H,): workspaces. inv_temperature scales the logits; ``top_k``
    (int, <= 0: off) and ``top_p`` (float, >= 1: off) restrict the draw to
    the most likely ids (:func:`keep_top`).
    """
    cut = top_k > 0 or top_p < 1.0
    ix = seed_ix
    for t in range(out_ids.shape[0]):
        hidden_step(h_next, h, ix, Wxh, Whh, bh)
        h[:] = h_next
        output_logits(logits, h, Why, by)
        if argmax:
            ix = np.argmax(logits)
        else:
            temper_inplace(logits, inv_temperature)
            softmax_inplace(logits)
            if cut:
                keep_top(logits, top_k, top_p)
            ix = pick_id(logits, uniforms[t])
        out_ids[t] = ix
