"""One stream of a 1-layer tanh rnn trained with Adagrad and clipping by value (the seed's case at batch 1):
a step, and a block of steps, in one compiled call.

A step of one stream is microseconds of arithmetic, so the calls of the engine's Python loop would cost
more than the step; here the engine's own kernels are composed in Numba instead: the input projection a
row lookup of ``Wxh.T`` (:func:`fastrnn.stack_kernels.embed_ids`), the recurrence on
:func:`fastrnn.cell_kernels.rnn_forward_one` / :func:`~fastrnn.cell_kernels.rnn_backward_one`, the head
and the weight gradients as products over the T rows (:mod:`fastrnn.stack_kernels`), then the clip and
Adagrad (:func:`fastrnn.optim_kernels.adagrad_update`). The twin is
:func:`fastrnn.reference.loss_and_grads` and the seed's Adagrad.

Arrays (one dtype, float32 or float64; ids int64): the weights ``Wxh (H, V), Whh (H, H), Why (V, H),
bh (H,), by (V,)``, Adagrad's memories and the gradients in the same shapes; the workspace ``hs (T+1,
H)`` (h_0 in row 0 on entry, h_t in row t on return), ``gates, dgates, dhs (T, H)``, ``dh (1, H)``,
``probs (T, V)``, ``WxhT, dWxhT (V, H)`` and ``inputs, targets (1, T)``, as a
:class:`~fastrnn.workspaces.StackWorkspace` of one stream holds them.
"""
from __future__ import annotations

from . import cell_kernels, stack_kernels
from ._numba import fast
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
