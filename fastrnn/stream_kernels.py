"""One stream of a 1-layer tanh rnn (the seed's model at batch 1): a training step with Adagrad and clipping
by value, and a block of steps, in one compiled call; scoring and sampling one character at a time.

A step of one stream is microseconds of arithmetic, so the calls of the engine's Python loop would cost
more than the step; here the engine's own kernels are composed in Numba instead: the input projection a
row lookup of ``Wxh.T`` (:func:`fastrnn.stack_kernels.embed_ids`), the recurrence on
:func:`fastrnn.cell_kernels.rnn_forward_one` / :func:`~fastrnn.cell_kernels.rnn_backward_one`, the head
and the weight gradients as products over the T rows (:mod:`fastrnn.stack_kernels`), then the clip and
Adagrad (:func:`fastrnn.optim_kernels.adagrad_update`). Scoring and sampling step one character at a
time (:func:`hidden_step`: the column lookup ``Wxh[:, ix]``, the mat-vec, libm's tanh as numpy's). The twins
are :func:`fastrnn.reference.loss_and_grads`, the seed's Adagrad, ``sequence_loss`` and ``sample``.

Arrays (one dtype, float32 or float64; ids int64): the weights ``Wxh (H, V), Whh (H, H), Why (V, H),
bh (H,), by (V,)``, Adagrad's memories and the gradients in the same shapes; the workspace ``hs (T+1,
H)`` (h_0 in row 0 on entry, h_t in row t on return), ``gates, dgates, dhs (T, H)``, ``dh (1, H)``,
``probs (T, V)``, ``WxhT, dWxhT (V, H)`` and ``inputs, targets (1, T)``, as a
:class:`~fastrnn.workspaces.StackWorkspace` of one stream holds them.
"""
from __future__ import annotations

import numpy as np

from . import cell_kernels, stack_kernels
from ._numba import fast
from .kernels import keep_top, output_logits, pick_id, softmax_inplace, temper_inplace
from .optim_kernels import adagrad_update, clip_inplace


@fast
def loss_and_grads(dWxh, dWhh, dWhy, dbh, dby, hs, gates, dgates, dhs, dh, probs, WxhT, dWxhT, inputs, targets,
                   Wxh, Whh, Why, bh, by):
    """Forward and backward of one sequence: the gradients (unclipped) overwrite dWxh..dby; returns the summed
    cross-entropy (float64, nats). T is ``inputs.shape[1]``: the workspace may be cut to a shorter sequence."""
    T = inputs.shape[1]
    one = hs.dtype.type(1)
    stack_kernels.transpose_into(WxhT, Wxh)
    stack_kernels.embed_ids(gates[:T], WxhT, inputs, bh)
    cell_kernels.rnn_forward_one(hs[:T + 1], gates[:T], Whh)
    loss = stack_kernels.head_forward(probs[:T], hs[1:T + 1], targets, Why, by)
    stack_kernels.head_backward(dhs[:T], dWhy, dby, probs[:T], hs[1:T + 1], targets, Why, one)
    cell_kernels.rnn_backward_one(dgates[:T], dh, dhs[:T], hs[:T + 1], Whh)
    stack_kernels.recurrent_grads(dWhh, dgates[:T], hs[:T])
    stack_kernels.sum_rows(dbh, dgates[:T], 0)
    stack_kernels.embedding_grads(dWxh, dWxhT, dgates[:T], inputs)
    return loss


@fast
def clip_grads(dWxh, dWhh, dWhy, dbh, dby, clip):
    """Each gradient clipped to [-clip, clip] in place."""
    clip_inplace(dWxh, clip)
    clip_inplace(dWhh, clip)
    clip_inplace(dWhy, clip)
    clip_inplace(dbh, clip)
    clip_inplace(dby, clip)


@fast
def _update(param, grad, memory, learning_rate, clip, eps):
    adagrad_update(param.reshape(param.size), grad.reshape(grad.size), memory.reshape(memory.size),
                   learning_rate, eps, clip, eps / eps)  # eps / eps: a norm scale of exactly 1 in the dtype


@fast
def train_step(Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby, dWxh, dWhh, dWhy, dbh, dby,
               hs, gates, dgates, dhs, dh, probs, WxhT, dWxhT, inputs, targets, learning_rate, clip, eps):
    """:func:`loss_and_grads`, then the clip and Adagrad in place on the weights and memories (the clipped
    gradients stay in dWxh..dby); returns the summed loss (float64)."""
    loss = loss_and_grads(dWxh, dWhh, dWhy, dbh, dby, hs, gates, dgates, dhs, dh, probs, WxhT, dWxhT, inputs,
                          targets, Wxh, Whh, Why, bh, by)
    _update(Wxh, dWxh, mWxh, learning_rate, clip, eps)
    _update(Whh, dWhh, mWhh, learning_rate, clip, eps)
    _update(Why, dWhy, mWhy, learning_rate, clip, eps)
    _update(bh, dbh, mbh, learning_rate, clip, eps)
    _update(by, dby, mby, learning_rate, clip, eps)
    return loss


@fast
def train_steps(losses, Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby, dWxh, dWhh, dWhy, dbh, dby,
                hs, gates, dgates, dhs, dh, probs, WxhT, dWxhT, inputs, targets, hprev, data, starts, resets,
                learning_rates, clip, eps):
    """k consecutive :func:`train_step` calls: step s trains on ``data[starts[s] : starts[s] + T]`` -> one id
    later (T = ``inputs.shape[1]``), at ``learning_rates[s]``, after zeroing the state where ``resets[s]``.
    hprev (H,) carries the state in and out; losses (k,) float64 receives each step's summed loss."""
    T = inputs.shape[1]
    for s in range(starts.shape[0]):
        if resets[s]:
            hprev[:] = 0
        hs[0] = hprev
        p = starts[s]
        for t in range(T):
            inputs[0, t] = data[p + t]
            targets[0, t] = data[p + t + 1]
        losses[s] = train_step(Wxh, Whh, Why, bh, by, mWxh, mWhh, mWhy, mbh, mby, dWxh, dWhh, dWhy, dbh, dby,
                               hs, gates, dgates, dhs, dh, probs, WxhT, dWxhT, inputs, targets, learning_rates[s],
                               clip, eps)
        hprev[:] = hs[T]


# --- forward only, one character at a time: scoring and sampling -------------------------

@fast
def hidden_step(h_out, h_in, ix, Wxh, Whh, bh):
    """h_out (H,) = tanh(Wxh[:, ix] + Whh @ h_in + bh); h_in (H,) must not alias h_out."""
    H = Whh.shape[0]
    for i in range(H):
        h_out[i] = Wxh[i, ix]
    cell_kernels.matvec_add(h_out, Whh, h_in)
    for i in range(H):
        h_out[i] = np.tanh(h_out[i] + bh[i])


@fast
def sequence_loss(log_probs, h, h_next, logits, inputs, targets, Wxh, Whh, Why, bh, by):
    """Summed cross-entropy (float64) of a sequence of any length, without storing hidden states.

    log_probs: (0,) float64, or (T,) float64 to receive each ``log p(targets[t] | inputs[:t+1])``.
    h (H,): hprev on entry, h_last on return; h_next (H,), logits (V,): workspaces.
    """
    T = inputs.shape[0]
    keep = log_probs.shape[0] > 0
    loss = 0.0
    for t in range(T):
        hidden_step(h_next, h, inputs[t], Wxh, Whh, bh)
        h[:] = h_next
        output_logits(logits, h, Why, by)
        target_logit = logits[targets[t]]
        m, log_sum = softmax_inplace(logits)
        log_p = (target_logit - m) - log_sum
        loss -= log_p
        if keep:
            log_probs[t] = log_p
    return loss


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


@fast
def step_rows(logits, h, h_next, ids, Wxh, Whh, Why, bh, by):
    """One step of B streams, each as :func:`sample_ids` steps one: h (B, H) updated in place (h_next (B, H):
    workspace), ids (B,) the inputs, logits (B, V) receives each stream's output logits."""
    for b in range(ids.shape[0]):
        hidden_step(h_next[b], h[b], ids[b], Wxh, Whh, bh)
        h[b] = h_next[b]
        output_logits(logits[b], h[b], Why, by)
