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
- Every matrix product is written as contiguous row dot products, which
  vectorise under ``reassoc``; ``Whh.T @ dhraw`` reads a transposed copy of
  ``Whh`` made once per sequence so it is a row dot product too.
- Softmax subtracts the row maximum (no overflow for large logits).
"""
from __future__ import annotations

import numpy as np

from ._numba import exact, fast


# --- building blocks (inlined into the kernels below by LLVM) ---------------

@fast
def hidden_step(h_out, h_in, ix, Wxh, Whh, bh):
    """h_out (H,) = tanh(Wxh[:, ix] + Whh @ h_in + bh); h_in (H,) must not alias h_out."""
    H = Whh.shape[0]
    for i in range(H):
        w = Whh[i]
        acc = Wxh[i, ix] + bh[i]
        for j in range(H):
            acc += w[j] * h_in[j]
        h_out[i] = np.tanh(acc)


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
def softmax_inplace(p):
    """Replace logits p (V,) by their softmax; return ``(max, log(sum(exp(p - max))))``."""
    V = p.shape[0]
    m = p[0]
    for v in range(1, V):
        if p[v] > m:
            m = p[v]
    s = p[0] - p[0]  # zero of p's dtype
    for v in range(V):
        e = np.exp(p[v] - m)
        p[v] = e
        s += e
    inv = 1 / s
    for v in range(V):
        p[v] *= inv
    return m, np.log(s)


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
    loss = 0.0
    for t in range(T):  # output layer, off the sequential path
        p = probs[t]
        output_logits(p, hs[t + 1], Why, by)
        target_logit = p[targets[t]]
        m, log_sum = softmax_inplace(p)
        loss += log_sum - (target_logit - m)
    return loss


@fast
def rnn_backward(dWxh, dWhh, dWhy, dbh, dby, dhs, dhnext, WhhT, hs, probs, inputs, targets, Whh, Why):
    """Backprop through time; *adds* the gradients into dWxh..dby (zeroed by the caller).

    dhs (T, H), dhnext (H,), WhhT (H, H): workspaces. hs (T+1, H), probs (T, V):
    saved by :func:`rnn_forward` (``probs`` is turned into dy in place).
    """
    T, H = dhs.shape
    V = Why.shape[0]
    one = hs.dtype.type(1)
    for t in range(T):  # dy = p - onehot(target)
        probs[t, targets[t]] -= one
    dy = probs
    # Output layer, off the sequential path: dWhy += dy.T @ hs[1:], dby += sum(dy),
    # dhs = dy @ Why (the part of dh that comes from the outputs).
    for v in range(V):
        row = dWhy[v]
        for t in range(T):
            g = dy[t, v]
            dby[v] += g
            h = hs[t + 1]
            for j in range(H):
                row[j] += g * h[j]
    for t in range(T):
        d = dhs[t]
        d[:] = 0
        for v in range(V):
            g = dy[t, v]
            w = Why[v]
            for j in range(H):
                d[j] += g * w[j]
    # The recurrence: dhraw_t = (1 - h_t^2) * (dh_t + dhnext); dhnext = Whh.T @ dhraw_t.
    for i in range(H):
        for j in range(H):
            WhhT[j, i] = Whh[i, j]
    dhnext[:] = 0
    for t in range(T - 1, -1, -1):
        h = hs[t + 1]
        d = dhs[t]
        for i in range(H):
            d[i] = (one - h[i] * h[i]) * (d[i] + dhnext[i])
        for i in range(H):
            w = WhhT[i]
            acc = w[0] * d[0]
            for j in range(1, H):
                acc += w[j] * d[j]
            dhnext[i] = acc
    # Off the sequential path again: dWhh += dhraw.T @ hs[:-1], dbh, dWxh scatter-add.
    for i in range(H):
        row = dWhh[i]
        for t in range(T):
            g = dhs[t, i]
            h = hs[t]
            for j in range(H):
                row[j] += g * h[j]
    for t in range(T):
        ix = inputs[t]
        d = dhs[t]
        for i in range(H):
            dbh[i] += d[i]
            dWxh[i, ix] += d[i]


# --- clip and Adagrad (exact arithmetic) -----------------------------------

@exact
def clip_inplace(grad, limit):
    """Clip grad (any shape, C-contiguous) element-wise to [-limit, limit], as np.clip does."""
    g = grad.reshape(grad.size)
    lo = -limit
    for k in range(g.size):
        x = g[k]
        if x < lo:
            g[k] = lo
        elif x > limit:
            g[k] = limit


@exact
def adagrad_update(param, grad, memory, learning_rate, eps):
    """In place: memory += grad**2; param += -learning_rate * grad / sqrt(memory + eps).

    Same operation order as the seed's numpy expression, so float64 results are
    bit-identical to it. param, grad, memory: same shape, C-contiguous.
    """
    p = param.reshape(param.size)
    g = grad.reshape(grad.size)
    m = memory.reshape(memory.size)
    neg_lr = -learning_rate
    for k in range(p.size):
        m[k] += g[k] * g[k]
        p[k] += neg_lr * g[k] / np.sqrt(m[k] + eps)


# --- fused kernels -----------------------------------------------------------

@fast
def zero_grads(dWxh, dWhh, dWhy, dbh, dby):
    dWxh[:] = 0
    dWhh[:] = 0
    dWhy[:] = 0
    dbh[:] = 0
    dby[:] = 0


@exact
def train_step(Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby,
               dWxh, dWhh, dWhy, dbh, dby, hs, probs, dhs, dhnext, WhhT,
               inputs, targets, learning_rate, clip, eps):
    """One training step on one sequence: forward, BPTT, clip, Adagrad, all in place.

    Weights Wxh..by and Adagrad memories mWxh..mby are updated in place;
    dWxh..dby receive the clipped gradients; hs[0] holds hprev on entry and
    hs[T] is h_last on return. Returns the summed loss (float64).
    """
    loss = rnn_forward(hs, probs, inputs, targets, Wxh, Whh, Why, bh, by)
    zero_grads(dWxh, dWhh, dWhy, dbh, dby)
    rnn_backward(dWxh, dWhh, dWhy, dbh, dby, dhs, dhnext, WhhT, hs, probs, inputs, targets, Whh, Why)
    clip_inplace(dWxh, clip)
    clip_inplace(dWhh, clip)
    clip_inplace(dWhy, clip)
    clip_inplace(dbh, clip)
    clip_inplace(dby, clip)
    adagrad_update(Wxh, dWxh, mWxh, learning_rate, eps)
    adagrad_update(Whh, dWhh, mWhh, learning_rate, eps)
    adagrad_update(Why, dWhy, mWhy, learning_rate, eps)
    adagrad_update(bh, dbh, mbh, learning_rate, eps)
    adagrad_update(by, dby, mby, learning_rate, eps)
    return loss


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


@fast
def sample_ids(out_ids, h, h_next, logits, seed_ix, uniforms, Wxh, Whh, Why, bh, by, inv_temperature, argmax):
    """Sample len(out_ids) ids; h (H,) is the memory state (updated in place).

    uniforms (n,) float64 in [0, 1): draw t uses uniforms[t]. logits (V,),
    h_next (H,): workspaces. inv_temperature scales the logits.
    """
    ix = seed_ix
    for t in range(out_ids.shape[0]):
        hidden_step(h_next, h, ix, Wxh, Whh, bh)
        h[:] = h_next
        output_logits(logits, h, Why, by)
        if argmax:
            ix = np.argmax(logits)
        else:
            for v in range(logits.shape[0]):
                logits[v] *= inv_temperature
            softmax_inplace(logits)
            ix = pick_id(logits, uniforms[t])
        out_ids[t] = ix
