"""Numba kernels of the recurrent cells: one layer, B streams, T steps, forward beside backward.

A cell owns only its recurrence. The input projection of every step is already
computed (``x_proj`` = ``x @ Wxh.T + bh``, (T * B, G * H), by
:mod:`fastrnn.stack_kernels`: a row lookup at layer 0, one GEMM above it), so
per time step a cell does one (B, H) @ (H, G * H) product with ``Whh.T`` and its
element-wise gate arithmetic. Backward takes dL/dh_t from above (the output
head or the next layer) and returns the gradient of every pre-activation, from
which the stack builds the weight gradients with GEMMs over all rows at once.

Rows are time-major: row ``t * B + b`` is stream b at step t, so the B rows of
one step are one contiguous (B, .) block. ``hs`` ((T+1) * B, H) holds h_0 (the
initial state) in rows 0..B-1 and h_{t+1} in rows (t+1) * B + b; an LSTM's
``cs`` likewise. Gate blocks follow PyTorch: LSTM [i, f, g, o]; GRU [r, z, n]
with ``n = tanh(x_n + r * (W_hn h + b_hn))``; rnn a single tanh block.

The gates' sigmoid and tanh are :mod:`fastrnn.gate_math`'s (vectorisable,
within 3 ulp of the true values), so a step's element-wise work runs in SIMD.

Every ``*_backward`` leaves in ``dh`` (B, H) the gradient of the initial
state h_0 (and, for an LSTM, in ``dc`` that of c_0). The twins are in
:mod:`fastrnn.reference_cells`. Float arrays share one dtype (float32 or float64).
"""
from __future__ import annotations

import numpy as np

from . import gate_math
from ._numba import fast


# --- tanh RNN: h' = tanh(x_proj + Whh h) ---------------------------------------

@fast
def rnn_forward(hs, gates, tmp, Whh):
    """hs ((T+1) * B, H): h_0 in rows 0..B-1 on entry, receives h_{t+1}. gates (T * B, H): x_proj (read).
    tmp (B, H): workspace. Whh (H, H)."""
    B, H = tmp.shape
    T = gates.shape[0] // B
    for t in range(T):
        np.dot(hs[t * B:(t + 1) * B], Whh.T, tmp)
        for b in range(B):
            r = t * B + b
            x, u, h_new = gates[r], tmp[b], hs[r + B]
            for k in range(H):
                h_new[k] = gate_math.tanh(x[k] + u[k])


@fast
def rnn_backward(dgates, dh, dhs, hs, Whh):
    """dgates (T * B, H) receives dL/d(pre-activation); dhs (T * B, H): dL/dh_{t+1} from above;
    dh (B, H): workspace, dL/dh_0 on return. hs as left by :func:`rnn_forward`."""
    B, H = dh.shape
    T = dgates.shape[0] // B
    one = hs.dtype.type(1)
    dh[:] = 0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            r = t * B + b
            h, d, up, carry = hs[r + B], dgates[r], dhs[r], dh[b]
            for k in range(H):
                d[k] = (one - h[k] * h[k]) * (up[k] + carry[k])
        np.dot(dgates[t * B:(t + 1) * B], Whh, dh)


# --- LSTM: [i, f, g, o]; c' = f c + i g; h' = o tanh(c') -----------------------

@fast
def lstm_forward(hs, cs, gates, tmp, Whh):
    """hs, cs ((T+1) * B, H): h_0, c_0 in rows 0..B-1 on entry. gates (T * B, 4H): x_proj on entry,
    the activations [i, f, g, o] after. tmp (B, 4H): workspace. Whh (4H, H)."""
    B = tmp.shape[0]
    H = hs.shape[1]
    T = gates.shape[0] // B
    dt = hs.dtype.type
    for t in range(T):
        np.dot(hs[t * B:(t + 1) * B], Whh.T, tmp)
        for b in range(B):
            r = t * B + b
            g, u, c_prev, c_new, h_new = gates[r], tmp[b], cs[r], cs[r + B], hs[r + B]
            for k in range(H):
                i = dt(gate_math.sigmoid(g[k] + u[k]))
                f = dt(gate_math.sigmoid(g[H + k] + u[H + k]))
                gg = dt(gate_math.tanh(g[2 * H + k] + u[2 * H + k]))
                o = dt(gate_math.sigmoid(g[3 * H + k] + u[3 * H + k]))
                c = f * c_prev[k] + i * gg
                g[k], g[H + k], g[2 * H + k], g[3 * H + k] = i, f, gg, o
                c_new[k] = c
                h_new[k] = o * dt(gate_math.tanh(c_new[k]))


@fast
def lstm_backward(dgates, dh, dc, dhs, hs, cs, gates, Whh):
    """dgates (T * B, 4H) receives dL/d(pre-activations) [i, f, g, o]; dhs (T * B, H): dL/dh_{t+1} from
    above; dh, dc (B, H): workspaces, dL/dh_0 and dL/dc_0 on return. hs, cs, gates as left by
    :func:`lstm_forward`."""
    B = dh.shape[0]
    H = hs.shape[1]
    T = dgates.shape[0] // B
    dt = hs.dtype.type
    one = dt(1)
    dh[:] = 0
    dc[:] = 0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            r = t * B + b
            g, d, c_now, c_prev, up, dhb, dcb = gates[r], dgates[r], cs[r + B], cs[r], dhs[r], dh[b], dc[b]
            for k in range(H):
                i, f, gg, o = g[k], g[H + k], g[2 * H + k], g[3 * H + k]
                tc = dt(gate_math.tanh(c_now[k]))  # as lstm_forward computed it
                dht = up[k] + dhb[k]
                dct = dcb[k] + dht * o * (one - tc * tc)
                d[k] = dct * gg * i * (one - i)
                d[H + k] = dct * c_prev[k] * f * (one - f)
                d[2 * H + k] = dct * i * (one - gg * gg)
                d[3 * H + k] = dht * tc * o * (one - o)
                dcb[k] = dct * f
        np.dot(dgates[t * B:(t + 1) * B], Whh, dh)


# --- GRU: [r, z, n]; n = tanh(x_n + r (W_hn h + b_hn)); h' = (1 - z) n + z h ----

@fast
def gru_forward(hs, gates, hn, tmp, Whh, bhn):
    """hs ((T+1) * B, H): h_0 in rows 0..B-1 on entry. gates (T * B, 3H): x_proj on entry, the
    activations [r, z, n] after. hn (T * B, H) receives W_hn h + b_hn. tmp (B, 3H): workspace.
    Whh (3H, H), bhn (H,)."""
    B = tmp.shape[0]
    H = hs.shape[1]
    T = gates.shape[0] // B
    dt = hs.dtype.type
    one = dt(1)
    for t in range(T):
        np.dot(hs[t * B:(t + 1) * B], Whh.T, tmp)
        for b in range(B):
            r = t * B + b
            g, u, a, h_prev, h_new = gates[r], tmp[b], hn[r], hs[r], hs[r + B]
            for k in range(H):
                rr = dt(gate_math.sigmoid(g[k] + u[k]))
                z = dt(gate_math.sigmoid(g[H + k] + u[H + k]))
                ak = u[2 * H + k] + bhn[k]
                n = dt(gate_math.tanh(g[2 * H + k] + rr * ak))
                g[k], g[H + k], g[2 * H + k] = rr, z, n
                a[k] = ak
                h_new[k] = (one - z) * n + z * h_prev[k]


@fast
def gru_backward(dgx, dgh, dh, tmp, dhs, hs, gates, hn, Whh):
    """dgx (T * B, 3H) receives dL/d(x_proj) [r, z, n]; dgh (T * B, 3H) dL/d(Whh h + [0, 0, b_hn]) (its n
    block is dgx's times r); dhs (T * B, H): dL/dh_{t+1} from above; dh (B, H): workspace, dL/dh_0 on
    return; tmp (B, H): workspace. hs, gates, hn as left by :func:`gru_forward`."""
    B, H = dh.shape
    T = dgx.shape[0] // B
    one = hs.dtype.type(1)
    dh[:] = 0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            r = t * B + b
            g, dx, dg, a, h_prev, up, dhb = gates[r], dgx[r], dgh[r], hn[r], hs[r], dhs[r], dh[b]
            for k in range(H):
                rr, z, n = g[k], g[H + k], g[2 * H + k]
                dht = up[k] + dhb[k]
                dn = dht * (one - z) * (one - n * n)
                dz = dht * (h_prev[k] - n) * z * (one - z)
                dr = dn * a[k] * rr * (one - rr)
                dx[k], dx[H + k], dx[2 * H + k] = dr, dz, dn
                dg[k], dg[H + k], dg[2 * H + k] = dr, dz, dn * rr
                dhb[k] = dht * z
        np.dot(dgh[t * B:(t + 1) * B], Whh, tmp)
        for b in range(B):
            dhb, tb = dh[b], tmp[b]
            for k in range(H):
                dhb[k] += tb[k]
