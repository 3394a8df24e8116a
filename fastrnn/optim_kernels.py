"""Optimizer updates over flat parameter buffers: one exact kernel each (no fastmath).

Every kernel first clips the gradient element-wise to [-clip, clip] and
multiplies it by ``scale`` (the global-norm factor, 1 when not clipping by
norm; both steps are exact no-ops when off), writes that gradient back into
``grad``, then applies its update in place, in the operation order of its
numpy twin in :mod:`fastrnn.reference`, so float64 results are bit-identical.
The formulas are torch.optim's (see :mod:`fastrnn.optim`). param, grad and the
state arrays are 1-D C-contiguous of one dtype; scalars are of that dtype,
the derived ones (``1 - alpha``, ``-lr / (1 - beta1^t)`` ...) computed by the
caller in float64 and then rounded, as torch.optim computes them in Python.
"""
from __future__ import annotations

import numpy as np

from numba import prange

from ._numba import exact, parallel


@exact
def clip_scale(x, clip, scale):
    lo = -clip
    if x < lo:
        x = lo
    elif x > clip:
        x = clip
    return x * scale


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
def adagrad_update(param, grad, memory, learning_rate, eps, clip, scale):
    """The seed's Adagrad: ``memory += g * g; param += -lr * g / sqrt(memory + eps)``."""
    neg_lr = -learning_rate
    for k in range(param.shape[0]):
        g = clip_scale(grad[k], clip, scale)
        grad[k] = g
        memory[k] += g * g
        param[k] += neg_lr * g / np.sqrt(memory[k] + eps)


@exact
def rmsprop_update(param, grad, square_avg, learning_rate, alpha, one_minus_alpha, eps, clip, scale):
    """torch.optim.RMSprop: ``v = alpha * v + (1 - alpha) * g * g; param += -lr * g / (sqrt(v) + eps)``."""
    neg_lr = -learning_rate
    for k in range(param.shape[0]):
        g = clip_scale(grad[k], clip, scale)
        grad[k] = g
        v = alpha * square_avg[k] + one_minus_alpha * (g * g)
        square_avg[k] = v
        param[k] += neg_lr * g / (np.sqrt(v) + eps)


@exact
def adam_update(param, grad, exp_avg, exp_avg_sq, neg_step_size, one_minus_beta1, beta2, one_minus_beta2,
                bias_correction2_sqrt, eps, clip, scale):
    """torch.optim.Adam: ``m += (1 - beta1) * (g - m); v = beta2 * v + (1 - beta2) * g * g;
    param += -step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``, step_size = lr / (1 - beta1^t)."""
    for k in range(param.shape[0]):
        g = clip_scale(grad[k], clip, scale)
        grad[k] = g
        m = exp_avg[k] + one_minus_beta1 * (g - exp_avg[k])
        v = beta2 * exp_avg_sq[k] + one_minus_beta2 * (g * g)
        exp_avg[k] = m
        exp_avg_sq[k] = v
        param[k] += neg_step_size * m / (np.sqrt(v) / bias_correction2_sqrt + eps)


# --- the updates in pieces: contiguous ranges ``bounds[p]:bounds[p + 1]`` at once on Numba's threads; the
# updates are element-wise, so the pieces give the bits of one call.

@parallel
def adagrad_pieces(bounds, param, grad, memory, learning_rate, eps, clip, scale):
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        adagrad_update(param[lo:hi], grad[lo:hi], memory[lo:hi], learning_rate, eps, clip, scale)


@parallel
def rmsprop_pieces(bounds, param, grad, square_avg, learning_rate, alpha, one_minus_alpha, eps, clip, scale):
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        rmsprop_update(param[lo:hi], grad[lo:hi], square_avg[lo:hi], learning_rate, alpha, one_minus_alpha, eps,
                       clip, scale)


@parallel
def adam_pieces(bounds, param, grad, exp_avg, exp_avg_sq, neg_step_size, one_minus_beta1, beta2, one_minus_beta2,
                bias_correction2_sqrt, eps, clip, scale):
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        adam_update(param[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi], neg_step_size, one_minus_beta1,
                    beta2, one_minus_beta2, bias_correction2_sqrt, eps, clip, scale)


@exact
def sum_of_squares(grad, clip):
    """sum(clip(grad)^2) in float64, one element after the other: the global norm's square."""
    total = 0.0
    lo = -clip
    for k in range(grad.shape[0]):
        x = grad[k]
        if x < lo:
            x = lo
        elif x > clip:
            x = clip
        total += np.float64(x) * np.float64(x)
    return total
