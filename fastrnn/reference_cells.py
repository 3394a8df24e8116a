"""The cells' numpy twins: one time step of one layer, forward and backward, written as the equations read.

Pure numpy, float64 or float32 as given. ``x_proj`` (B, G*H) is the step's
input projection ``x @ Wxh.T + bh``; ``state`` is ``(h,)`` or ``(h, c)``, each
(B, H). ``*_step`` returns ``(new_state, cache)``; ``*_step_backward(d_state_new,
cache, Whh)`` takes dL/d(new state) and returns ``(d_x_proj, d_hh, d_state)``:
the gradient of the step's input projection, of its recurrent pre-activation
``h @ Whh.T (+ [0, 0, b_hn] for a GRU)`` (whose row sum is dbhn's share), and of
the state it started from. The kernels are in :mod:`fastrnn.cell_kernels`.
"""
from __future__ import annotations

import numpy as np


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def rnn_step(x_proj, state, Whh, bhn=None):
    (h,) = state
    h_new = np.tanh(x_proj + h @ Whh.T)
    return (h_new,), (h, h_new)


def rnn_step_backward(d_state_new, cache, Whh):
    (dh_new,) = d_state_new
    h, h_new = cache
    d_pre = (1 - h_new * h_new) * dh_new
    return d_pre, d_pre, (d_pre @ Whh,)


def lstm_step(x_proj, state, Whh, bhn=None):
    h, c = state
    H = h.shape[1]
    pre = x_proj + h @ Whh.T
    i, f = _sigmoid(pre[:, :H]), _sigmoid(pre[:, H:2 * H])
    g, o = np.tanh(pre[:, 2 * H:3 * H]), _sigmoid(pre[:, 3 * H:])
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    return (h_new, c_new), (h, c, i, f, g, o, c_new)


def lstm_step_backward(d_state_new, cache, Whh):
    dh_new, dc_new = d_state_new
    h, c, i, f, g, o, c_new = cache
    tc = np.tanh(c_new)
    do = dh_new * tc
    dc = dc_new + dh_new * o * (1 - tc * tc)
    d_pre = np.concatenate([dc * g * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - g * g), do * o * (1 - o)],
                           axis=1)
    return d_pre, d_pre, (d_pre @ Whh, dc * f)


def gru_step(x_proj, state, Whh, bhn):
    (h,) = state
    H = h.shape[1]
    hh = h @ Whh.T
    r = _sigmoid(x_proj[:, :H] + hh[:, :H])
    z = _sigmoid(x_proj[:, H:2 * H] + hh[:, H:2 * H])
    a = hh[:, 2 * H:] + bhn
    n = np.tanh(x_proj[:, 2 * H:] + r * a)
    h_new = (1 - z) * n + z * h
    return (h_new,), (h, r, z, n, a)


def gru_step_backward(d_state_new, cache, Whh):
    (dh_new,) = d_state_new
    h, r, z, n, a = cache
    dn = dh_new * (1 - z) * (1 - n * n)
    dz = dh_new * (h - n) * z * (1 - z)
    dr = dn * a * r * (1 - r)
    d_x = np.concatenate([dr, dz, dn], axis=1)
    d_hh = np.concatenate([dr, dz, dn * r], axis=1)
    return d_x, d_hh, (dh_new * z + d_hh @ Whh,)


STEPS = {"rnn": (rnn_step, rnn_step_backward), "lstm": (lstm_step, lstm_step_backward),
         "gru": (gru_step, gru_step_backward)}
