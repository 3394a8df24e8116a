"""The reference twin: min-char-rnn's arithmetic kept as it is, in pure numpy.

float64, one-hot column vectors, one ``np.dot`` per step, the seed's clip and
Adagrad. It exists to be compared against (tests) and measured against
(benchmarks), so it stays slow and obvious. Every public function here has the
same name, arguments and meaning as the fast path in :mod:`fastrnn.rnn`.
"""
from __future__ import annotations

import numpy as np

from ._validate import (
    check_count, check_hidden, check_ids, check_params, check_positive, check_sequence_pair, check_top,
    inverse_temperature,
)
from .params import ADAGRAD_EPS, CLIP, Params


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


def keep_top(p, top_k=None, top_p=None):
    """A copy of the probabilities ``p`` (V,) with those outside the top-k, then the top-p set, zeroed.

    Ids ranked by probability, ties to the lower id; top-p keeps an id while
    the mass ranked before it (a running sum in p's dtype) is below ``top_p``
    times the mass of the top-k (compared in float64). None: off. The kernel
    is :func:`fastrnn.kernels.keep_top`.
    """
    top_k, top_p = check_top(top_k, top_p)
    p = np.array(p).reshape(-1)
    order = np.argsort(-p, kind="stable")
    k = p.size if top_k == 0 or top_k > p.size else top_k
    if top_p < 1:
        mass = np.cumsum(p[order[:k]])
        before = np.concatenate([np.zeros(1, p.dtype), mass[:-1]]).astype(np.float64)
        k = int(np.count_nonzero(before < top_p * np.float64(mass[-1])))
    p[order[k:]] = 0
    return p


def _draw(p, u, top_k, top_p):
    """Inverse-CDF draw from the probabilities ``p`` (V,) cut to the top-k / top-p set (searchsorted right)."""
    if top_k or top_p < 1:
        p = keep_top(p, top_k, top_p)
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return min(int(np.searchsorted(cdf, u, side="right")), p.size - 1)


def sample(params, hprev, seed_ix, n, seed=None, temperature=1.0, argmax=False, top_k=None, top_p=None):
    """Sample ``n`` ids from the model (the seed's ``sample``), as an int64 array.

    hprev (H,) or (H, 1) is the memory state; seed_ix the id fed at the first
    step. Draw t uses the t-th value of ``numpy.random.default_rng(seed).random()``
    through the inverse CDF of the softmax of ``logits / temperature`` (what
    ``np.random.choice(p=...)`` does); ``argmax=True`` takes the most likely id.
    Unlike the seed, the logits are shifted by their maximum before ``exp``, so
    low temperatures do not overflow. ``top_k`` / ``top_p``: draw only among
    the most likely ids (:func:`keep_top`).
    """
    params = check_params(params)
    (seed_ix,) = check_ids([seed_ix], params.vocab_size, "seed_ix")
    h = _column(check_hidden(hprev, params.hidden_size))
    n = check_count(n, "n")
    temperature = check_positive(temperature, "temperature")
    top_k, top_p = check_top(top_k, top_p)
    rng = np.random.default_rng(seed)
    Wxh, Whh, Why = (np.asarray(a, dtype=np.float64) for a in params[:3])
    bh, by = _column(params.bh), _column(params.by)
    vocab_size = Why.shape[0]
    x = np.zeros((vocab_size, 1))
    x[seed_ix] = 1
    ixes = []
    for t in range(n):
        h = np.tanh(np.dot(Wxh, x) + np.dot(Whh, h) + bh)
        y = np.dot(Why, h) + by
        with np.errstate(over="ignore"):  # shifted first, the max is 0 and the rest <= 0 (or -inf): no NaN
            y = (y - np.max(y)) / temperature  # the seed's softmax overflows at low temperatures
        p = np.exp(y) / np.sum(np.exp(y))
        u = rng.random()
        if argmax:
            ix = int(np.argmax(p))
        elif top_k or top_p < 1:
            ix = _draw(p.ravel(), u, top_k, top_p)
        else:
            cdf = np.cumsum(p.ravel())
            cdf /= cdf[-1]
            ix = int(np.searchsorted(cdf, u, side="right"))
        x = np.zeros((vocab_size, 1))
        x[ix] = 1
        ixes.append(ix)
    return np.array(ixes, dtype=np.int64)


# --- every cell and depth: the stack's twin, built from the cells' twins --------------
# Loops time outermost and layers inside, one step of every layer at a time (the order the
# equations read), where the kernels run one layer over the whole sequence, then the next.

def _stack_state(state, spec, B, dtype):
    """The initial state as a list (per layer) of tuples of (B, H) arrays."""
    L, H = spec.num_layers, spec.hidden_size
    if state is None:
        state = tuple(np.zeros((L, B, H), dtype) for _ in spec.state_names)
    return [tuple(np.array(s[layer], dtype=dtype) for s in state) for layer in range(L)]


_U64 = 0xFFFFFFFFFFFFFFFF


def _splitmix64(x):
    """splitmix64 of a uint64 array (wrapping), as :func:`fastrnn.stack_kernels.splitmix64`."""
    x = np.asarray(x, np.uint64)
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_masks(seed, step, p, num_layers, seq_length, total_streams, hidden_size, streams, dtype):
    """The dropout masks of training step ``step`` (1-based) of a run seeded ``seed``: (L, T, len(streams), H).

    Entry [l, t, i, k] (stream ``streams[i]`` of the ``total_streams`` in the
    batch) is 0 where the top 53 bits of splitmix64(splitmix64(seed) ^ c) are
    below floor(p * 2^53), else 1 / (1 - p) in ``dtype``, with the counter
    c = ((step * L + l) * T + t) * total_streams * H + stream * H + k modulo 2^64.
    """
    L, T, S, H = num_layers, seq_length, total_streams, hidden_size
    key = _splitmix64(np.array([seed], np.uint64))[0]
    threshold = np.uint64(int(p * 2.0 ** 53))
    l, t, b, k = np.ix_(np.arange(L, dtype=np.uint64), np.arange(T, dtype=np.uint64),
                        np.asarray(streams, np.uint64), np.arange(H, dtype=np.uint64))
    first = np.uint64((step * L * T * S * H) & _U64)
    counter = first + (l * np.uint64(T) + t) * np.uint64(S * H) + b * np.uint64(H) + k
    keep = (_splitmix64(key ^ counter) >> np.uint64(11)) >= threshold
    scale = np.dtype(dtype).type(1.0 / (1.0 - p))
    return np.where(keep, scale, np.dtype(dtype).type(0))


def stack_loss_and_grads(params, inputs, targets, state=None, clip=CLIP, masks=None):
    """Loss, gradients and last state of B streams under a :class:`~fastrnn.model.ModelParams`.

    inputs, targets: (B, T) int ids. state: None (zeros) or a tuple, one (L, B, H)
    array per state name (``(h,)`` or ``(h, c)``). ``masks``: None, or dropout
    masks (L, T, B, H) (:func:`dropout_masks`) by which every layer's outputs
    are multiplied before the layer above (or the head) reads them. Returns
    ``(loss, grads, state_last)``: the cross-entropy summed over the B * T
    characters divided by B, the gradient of that loss clipped to [-clip, clip]
    (``clip=None``: unclipped) as a ModelParams, and the last state as a tuple
    of (L, B, H).
    """
    from .model import ModelParams
    from .reference_cells import STEPS

    spec, dtype = params.spec, params.dtype
    step, step_backward = STEPS[spec.cell]
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    B, T = inputs.shape
    L, H = spec.num_layers, spec.hidden_size
    Why, by = params["Why"], params["by"]
    layers = [params.layer(layer) for layer in range(L)]
    states = _stack_state(state, spec, B, dtype)
    caches = [[None] * T for _ in range(L)]
    outputs = [[None] * T for _ in range(L)]
    probs = [None] * T
    loss = 0.0
    for t in range(T):
        x = None
        for layer, (Wxh, Whh, bh, *bhn) in enumerate(layers):
            x_proj = (Wxh[:, inputs[:, t]].T if layer == 0 else x @ Wxh.T) + bh
            states[layer], caches[layer][t] = step(x_proj, states[layer], Whh, *bhn)
            x = outputs[layer][t] = states[layer][0] if masks is None else states[layer][0] * masks[layer, t]
        logits = x @ Why.T + by
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        probs[t] = e / e.sum(axis=1, keepdims=True)
        loss += float(np.sum(np.log(e.sum(axis=1)) - logits[np.arange(B), targets[:, t]]))
    state_last = tuple(np.stack([states[layer][i] for layer in range(L)]) for i in range(len(spec.state_names)))

    grads = ModelParams(spec, dtype, is_gradient=True)
    g = grads.arrays
    d_state = [tuple(np.zeros((B, H), dtype) for _ in spec.state_names) for _ in range(L)]
    for t in reversed(range(T)):
        dy = probs[t].copy()
        dy[np.arange(B), targets[:, t]] -= 1
        dy /= B
        g["Why"] += dy.T @ outputs[L - 1][t]
        g["by"] += dy.sum(axis=0)
        dx = dy @ Why  # dL/d(output of the top layer at step t, after its dropout)
        for layer in reversed(range(L)):
            names = spec.layer_names(layer)
            Wxh, Whh = layers[layer][0], layers[layer][1]
            if masks is not None:
                dx = dx * masks[layer, t]
            d_new = (d_state[layer][0] + dx,) + d_state[layer][1:]
            d_x, d_hh, d_state[layer] = step_backward(d_new, caches[layer][t], Whh)
            g[names[1]] += d_hh.T @ caches[layer][t][0]
            g[names[2]] += d_x.sum(axis=0)
            if spec.cell == "gru":
                g[names[3]] += d_hh[:, 2 * H:].sum(axis=0)
            if layer == 0:
                for b in range(B):
                    g[names[0]][:, inputs[b, t]] += d_x[b]
            else:
                g[names[0]] += d_x.T @ outputs[layer - 1][t]
                dx = d_x @ Wxh
    if clip is not None:
        for a in grads:
            np.clip(a, -clip, clip, out=a)
    return loss / B, grads, state_last


def stack_sample(params, state, first_id, n, seed=None, temperature=1.0, argmax=False, top_k=None, top_p=None):
    """``n`` ids sampled from any model (the twin of :func:`fastrnn.inference.sample`), int64.

    ``state``: None (zeros) or a tuple of (L, 1, H) arrays; first_id the id fed
    first. One step of every layer at a time (the cells' twins), in the
    parameters' dtype; draw t takes the t-th ``default_rng(seed).random()``
    value through the inverse CDF of ``softmax(logits / temperature)`` cut to
    the top-k / top-p set (:func:`keep_top`), or the argmax.
    """
    from .reference_cells import STEPS

    spec, dtype = params.spec, params.dtype
    step = STEPS[spec.cell][0]
    (x,) = check_ids([first_id], spec.vocab_size, "first_id")
    n = check_count(n, "n")
    inv_t = inverse_temperature(temperature, dtype)
    top_k, top_p = check_top(top_k, top_p)
    rng = np.random.default_rng(seed)
    states = _stack_state(state, spec, 1, dtype)
    layers = [params.layer(layer) for layer in range(spec.num_layers)]
    out = np.empty(n, np.int64)
    for t in range(n):
        below = None
        for layer, (Wxh, Whh, bh, *bhn) in enumerate(layers):
            x_proj = (Wxh[:, [x]].T if layer == 0 else below @ Wxh.T) + bh
            states[layer], _ = step(x_proj, states[layer], Whh, *bhn)
            below = states[layer][0]
        logits = (below @ params["Why"].T + params["by"])[0]
        u = rng.random()
        if argmax:
            x = int(np.argmax(logits))
        else:
            with np.errstate(over="ignore"):  # shifted first: the max is 0, the rest <= 0 or -inf
                z = (logits - logits.max()) * inv_t
            e = np.exp(z)
            x = _draw(e / e.sum(), u, top_k, top_p)
        out[t] = x
    return out


def stack_sequence_loss(params, inputs, targets, state=None):
    """Forward only: ``(loss, state_last)`` of B streams, as in :func:`stack_loss_and_grads`."""
    loss, _, state_last = stack_loss_and_grads(params, inputs, targets, state, clip=None)
    return loss, state_last


# --- optimizers over flat arrays (twins of fastrnn.optim_kernels) -------------------------

def _clipped(grad, clip, scale):
    dtype = grad.dtype.type
    limit = np.finfo(grad.dtype).max if clip is None else dtype(clip)
    grad[:] = np.clip(grad, -limit, limit) * dtype(scale)
    return grad


def flat_adagrad_update(param, grad, memory, learning_rate, eps=ADAGRAD_EPS, clip=CLIP, scale=1.0):
    """The seed's Adagrad over flat arrays, after clipping (value, then ``scale``); all in place."""
    t = param.dtype.type
    g = _clipped(grad, clip, scale)
    memory += g * g
    param += -t(learning_rate) * g / np.sqrt(memory + t(eps))


def flat_rmsprop_update(param, grad, square_avg, learning_rate, alpha, eps, clip=CLIP, scale=1.0):
    """torch.optim.RMSprop over flat arrays, after clipping; all in place."""
    t = param.dtype.type
    g = _clipped(grad, clip, scale)
    square_avg[:] = t(alpha) * square_avg + t(1.0 - alpha) * (g * g)
    param += -t(learning_rate) * g / (np.sqrt(square_avg) + t(eps))


def flat_adam_update(param, grad, exp_avg, exp_avg_sq, step, learning_rate, beta1, beta2, eps, clip=CLIP,
                     scale=1.0):
    """torch.optim.Adam over flat arrays (``step`` 1-based), after clipping; all in place."""
    t = param.dtype.type
    g = _clipped(grad, clip, scale)
    exp_avg[:] = exp_avg + t(1.0 - beta1) * (g - exp_avg)
    exp_avg_sq[:] = t(beta2) * exp_avg_sq + t(1.0 - beta2) * (g * g)
    bias_correction1, bias_correction2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
    param += t(-learning_rate / bias_correction1) * exp_avg / (
        np.sqrt(exp_avg_sq) / t(np.sqrt(bias_correction2)) + t(eps))
