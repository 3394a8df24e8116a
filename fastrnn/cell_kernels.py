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


@fast
def _blocks4(row, H):
    """The four (H,) gate blocks of a (4H,) row, as separate views.

    Indexing one row as ``row[k]``, ``row[H + k]``, ... hides from LLVM that the
    blocks never overlap (H is only known at run time), so it keeps the gate loop
    scalar; four views are four pointers it checks once and then vectorises
    (about 4x faster for the LSTM's gates, the same arithmetic)."""
    return row[:H], row[H:2 * H], row[2 * H:3 * H], row[3 * H:4 * H]


@fast
def _blocks3(row, H):
    """The three (H,) gate blocks of a (3H,) row, as separate views (see :func:`_blocks4`)."""
    return row[:H], row[H:2 * H], row[2 * H:3 * H]


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
            gi, gf, gg, go = _blocks4(gates[r], H)
            ui, uf, ug, uo = _blocks4(tmp[b], H)
            c_prev, c_new, h_new = cs[r], cs[r + B], hs[r + B]
            for k in range(H):
                i = dt(gate_math.sigmoid(gi[k] + ui[k]))
                f = dt(gate_math.sigmoid(gf[k] + uf[k]))
                g = dt(gate_math.tanh(gg[k] + ug[k]))
                o = dt(gate_math.sigmoid(go[k] + uo[k]))
                c = f * c_prev[k] + i * g
                gi[k], gf[k], gg[k], go[k] = i, f, g, o
                c_new[k] = c
                h_new[k] = o * dt(gate_math.tanh(c))


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
            gi, gf, gg, go = _blocks4(gates[r], H)
            di, df, dg, do = _blocks4(dgates[r], H)
            c_now, c_prev, up, dhb, dcb = cs[r + B], cs[r], dhs[r], dh[b], dc[b]
            for k in range(H):
                i, f, g, o = gi[k], gf[k], gg[k], go[k]
                tc = dt(gate_math.tanh(c_now[k]))  # as lstm_forward computed it
                dht = up[k] + dhb[k]
                dct = dcb[k] + dht * o * (one - tc * tc)
                di[k] = dct * g * i * (one - i)
                df[k] = dct * c_prev[k] * f * (one - f)
                dg[k] = dct * i * (one - g * g)
                do[k] = dht * tc * o * (one - o)
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
            gr, gz, gn = _blocks3(gates[r], H)
            ur, uz, un = _blocks3(tmp[b], H)
            a, h_prev, h_new = hn[r], hs[r], hs[r + B]
            for k in range(H):
                rr = dt(gate_math.sigmoid(gr[k] + ur[k]))
                z = dt(gate_math.sigmoid(gz[k] + uz[k]))
                ak = un[k] + bhn[k]
                n = dt(gate_math.tanh(gn[k] + rr * ak))
                gr[k], gz[k], gn[k] = rr, z, n
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
            gr, gz, gn = _blocks3(gates[r], H)
            dxr, dxz, dxn = _blocks3(dgx[r], H)
            dgr, dgz, dgn = _blocks3(dgh[r], H)
            a, h_prev, up, dhb = hn[r], hs[r], dhs[r], dh[b]
            for k in range(H):
                rr, z, n = gr[k], gz[k], gn[k]
                dht = up[k] + dhb[k]
                dn = dht * (one - z) * (one - n * n)
                dz = dht * (h_prev[k] - n) * z * (one - z)
                dr = dn * a[k] * rr * (one - rr)
                dxr[k], dxz[k], dxn[k] = dr, dz, dn
                dgr[k], dgz[k], dgn[k] = dr, dz, dn * rr
                dhb[k] = dht * z
        np.dot(dgh[t * B:(t + 1) * B], Whh, tmp)
        for b in range(B):
            dhb, tb = dh[b], tmp[b]
            for k in range(H):
                dhb[k] += tb[k]
