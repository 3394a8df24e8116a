"""The reference twin: min-char-rnn's arithmetic kept as it is, in pure numpy.

float64, one-hot column vectors, one ``np.dot`` per step, the seed's clip and
Adagrad. It exists to be compared against (tests) and measured against
(benchmarks), so it stays slow and obvious. Every public function here has the
same name, arguments and meaning as the fast path in :mod:`fastrnn.rnn`.
"""
from __future__ import annotations

import numpy as np

from ._validate import (
    check_count, check_hidden, check_ids, check_params, check_positive, check_sequence_pair,
)
from .params import Params

CLIP = 5.0
ADAGRAD_EPS = 1e-8


def _column(a):
    return np.asarray(a, dtype=np.float64).reshape(-1, 1)


def loss_and_grads(params, inputs, targets, hprev, clip=CLIP):
    """Loss, gradients and last hidden state of one sequence (the seed's ``lossFun``).

    params: :class:`Params`; inputs, targets: integer ids, length T >= 1;
    hprev: (H,) or (H, 1). Returns ``(loss, grads, h_last)`` with ``loss`` the
    cross-entropy summed over the T steps (nats), ``grads`` a :class:`Params` of
    gradients clipped element-wise to [-clip, clip] (``clip=None``: unclipped),
    biases 1-D, and ``h_last`` of shape (H,). All float64.
    """
    params = check_params(params)
    inputs, targets = check_sequence_pair(inputs, targets, params.vocab_size)
    hprev = check_hidden(hprev, params.hidden_size)
    Wxh, Whh, Why = (np.asarray(a, dtype=np.float64) for a in params[:3])
    bh, by = _column(params.bh), _column(params.by)
    vocab_size = Why.shape[0]

    xs, hs, ps = {}, {}, {}
    hs[-1] = _column(hprev)
    loss = 0.0
    for t in range(len(inputs)):
        xs[t] = np.zeros((vocab_size, 1))
        xs[t][inputs[t]] = 1
        hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
        ys = np.dot(Why, hs[t]) + by
        ps[t] = np.exp(ys) / np.sum(np.exp(ys))
        loss += -np.log(ps[t][targets[t], 0])

    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1
        dWhy += np.dot(dy, hs[t].T)
        dby += dy
        dh = np.dot(Why.T, dy) + dhnext
        dhraw = (1 - hs[t] * hs[t]) * dh
        dbh += dhraw
        dWxh += np.dot(dhraw, xs[t].T)
        dWhh += np.dot(dhraw, hs[t - 1].T)
        dhnext = np.dot(Whh.T, dhraw)
    if clip is not None:
        for dparam in (dWxh, dWhh, dWhy, dbh, dby):
            np.clip(dparam, -clip, clip, out=dparam)
    grads = Params(dWxh, dWhh, dWhy, dbh.ravel(), dby.ravel())
    return float(loss), grads, hs[len(inputs) - 1].ravel()


def sequence_loss(params, inputs, targets, hprev):
    """Forward pass only: ``(loss, h_last)`` of one sequence, as in :func:`loss_and_grads`."""
    params = check_params(params)
    inputs, targets = check_sequence_pair(inputs, targets, params.vocab_size)
    h = _column(check_hidden(hprev, params.hidden_size))
    Wxh, Whh, Why = (np.asarray(a, dtype=np.float64) for a in params[:3])
    bh, by = _column(params.bh), _column(params.by)
    loss = 0.0
    for t in range(len(inputs)):
        x = np.zeros((Why.shape[0], 1))
        x[inputs[t]] = 1
        h = np.tanh(np.dot(Wxh, x) + np.dot(Whh, h) + bh)
        y = np.dot(Why, h) + by
        p = np.exp(y) / np.sum(np.exp(y))
        loss += -np.log(p[targets[t], 0])
    return float(loss), h.ravel()


def adagrad_update(params, grads, memory, learning_rate):
    """The seed's Adagrad, in place on ``params`` and ``memory`` (both :class:`Params`).

    For each array: ``mem += dparam * dparam``;
    ``param += -learning_rate * dparam / np.sqrt(mem + 1e-8)``.
    """
    learning_rate = check_positive(learning_rate, "learning_rate")
    for param, dparam, mem in zip(params, grads, memory):
        # Biases may be (H, 1) columns as in the seed or 1-D: follow the parameter's shape.
        dparam = np.reshape(dparam, param.shape)
        if np.shape(mem) != param.shape:
            raise ValueError(f"memory shapes must match the parameters', got {np.shape(mem)} for {param.shape}")
        mem += dparam * dparam
        param += -learning_rate * dparam / np.sqrt(mem + ADAGRAD_EPS)


def train_step(params, memory, inputs, targets, hprev, learning_rate, clip=CLIP):
    """One training step: loss and clipped gradients, then Adagrad in place.

    Returns ``(loss, h_last)``; ``params`` and ``memory`` are updated in place.
    """
    loss, grads, h_last = loss_and_grads(params, inputs, targets, hprev, clip=clip)
    adagrad_update(params, grads, memory, learning_rate)
    return loss, h_last


def sample(params, hprev, seed_ix, n, seed=None, temperature=1.0, argmax=False):
    """Sample ``n`` ids from the model (the seed's ``sample``), as an int64 array.

    hprev (H,) or (H, 1) is the memory state; seed_ix the id fed at the first
    step. Draw t uses the t-th value of ``numpy.random.default_rng(seed).random()``
    through the inverse CDF of the softmax of ``logits / temperature`` (what
    ``np.random.choice(p=...)`` does); ``argmax=True`` takes the most likely id.
    Unlike the seed, the logits are shifted by their maximum before ``exp``, so
    low temperatures do not overflow.
    """
    params = check_params(params)
    (seed_ix,) = check_ids([seed_ix], params.vocab_size, "seed_ix")
    h = _column(check_hidden(hprev, params.hidden_size))
    n = check_count(n, "n")
    temperature = check_positive(temperature, "temperature")
    rng = np.random.default_rng(seed)
    Wxh, Whh, Why = (np.asarray(a, dtype=np.float64) for a in params[:3])
    bh, by = _column(params.bh), _column(params.by)
    vocab_size = Why.shape[0]
    x = np.zeros((vocab_size, 1))
    x[seed_ix] = 1
    ixes = []
    for t in range(n):
        h = np.tanh(np.dot(Wxh, x) + np.dot(Whh, h) + bh)
        y = (np.dot(Why, h) + by) / temperature
        y -= np.max(y)  # the seed's softmax overflows at low temperatures; shifting changes nothing else
        p = np.exp(y) / np.sum(np.exp(y))
        u = rng.random()
        if argmax:
            ix = int(np.argmax(p))
        else:
            cdf = np.cumsum(p.ravel())
            cdf /= cdf[-1]
            ix = int(np.searchsorted(cdf, u, side="right"))
        x = np.zeros((vocab_size, 1))
        x[ix] = 1
        ixes.append(ix)
    return np.array(ixes, dtype=np.int64)
