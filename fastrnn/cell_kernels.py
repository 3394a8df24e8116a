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
from numba import prange

from . import gate_math
from ._numba import fast, fast_inline, parallel
from .microkernel import matmul_packed


@fast_inline
def _blocks4(row, H):
    """The four (H,) gate blocks of a (4H,) row, as separate views.

    Indexing one row as ``row[k]``, ``row[H + k]``, ... hides from LLVM that the
    blocks never overlap (H is only known at run time), so it keeps the gate loop
    scalar; four views are four pointers it checks once and then vectorises
    (about 4x faster for the LSTM's gates, the same arithmetic)."""
    return row[:H], row[H:2 * H], row[2 * H:3 * H], row[3 * H:4 * H]


@fast_inline
def _blocks3(row, H):
    """The three (H,) gate blocks of a (3H,) row, as separate views (see :func:`_blocks4`)."""
    return row[:H], row[H:2 * H], row[2 * H:3 * H]


# --- the work of one row over a range of units (shared by the whole-layer and the split kernels) ---
# Inlined into every kernel that calls them (``fast_inline``).

@fast_inline
def _rnn_row(x, u, h_new):
    """h_new (n,) = tanh(x + u) for one row's n units (x: x_proj, u: Whh h)."""
    for k in range(h_new.shape[0]):
        h_new[k] = gate_math.tanh(x[k] + u[k])


@fast_inline
def _rnn_row_backward(d, h, up, carry):
    """d (n,) = (1 - h^2) (up + carry): dL/d(pre-activation) of one row's n units."""
    one = h.dtype.type(1)
    for k in range(d.shape[0]):
        d[k] = (one - h[k] * h[k]) * (up[k] + carry[k])


@fast_inline
def _lstm_row(gi, gf, gg, go, ui, uf, ug, uo, c_prev, c_new, h_new):
    """One row's n units: gate blocks gi.. (x_proj in, activations out) plus ui.. (Whh h); c_new, h_new out."""
    dt = h_new.dtype.type
    for k in range(h_new.shape[0]):
        i = dt(gate_math.sigmoid(gi[k] + ui[k]))
        f = dt(gate_math.sigmoid(gf[k] + uf[k]))
        g = dt(gate_math.tanh(gg[k] + ug[k]))
        o = dt(gate_math.sigmoid(go[k] + uo[k]))
        c = f * c_prev[k] + i * g
        gi[k], gf[k], gg[k], go[k] = i, f, g, o
        c_new[k] = c
        h_new[k] = o * dt(gate_math.tanh(c))


@fast_inline
def _lstm_row_backward(di, df, dg, do, gi, gf, gg, go, c_now, c_prev, up, dhb, dcb):
    """One row's n units: d* (dL/d pre-activations) from the activations g*, the cell states, dL/dh from
    above (up) and the carries dhb (read), dcb (dL/dc, read and replaced by its share for c_prev)."""
    dt = c_now.dtype.type
    one = dt(1)
    for k in range(c_now.shape[0]):
        i, f, g, o = gi[k], gf[k], gg[k], go[k]
        tc = dt(gate_math.tanh(c_now[k]))  # as _lstm_row computed it
        dht = up[k] + dhb[k]
        dct = dcb[k] + dht * o * (one - tc * tc)
        di[k] = dct * g * i * (one - i)
        df[k] = dct * c_prev[k] * f * (one - f)
        dg[k] = dct * i * (one - g * g)
        do[k] = dht * tc * o * (one - o)
        dcb[k] = dct * f


@fast_inline
def _gru_row(gr, gz, gn, ur, uz, un, bhn, a, h_prev, h_new):
    """One row's n units: gate blocks gr.. (x_proj in, activations out) plus ur.. (Whh h);
    a receives W_hn h + b_hn, h_new the new state."""
    dt = h_new.dtype.type
    one = dt(1)
    for k in range(h_new.shape[0]):
        rr = dt(gate_math.sigmoid(gr[k] + ur[k]))
        z = dt(gate_math.sigmoid(gz[k] + uz[k]))
        ak = un[k] + bhn[k]
        n = dt(gate_math.tanh(gn[k] + rr * ak))
        gr[k], gz[k], gn[k] = rr, z, n
        a[k] = ak
        h_new[k] = (one - z) * n + z * h_prev[k]


@fast_inline
def _gru_row_backward(dxr, dxz, dxn, dgr, dgz, dgn, gr, gz, gn, a, h_prev, up, dhb):
    """One row's n units: dL/d(x_proj) (dx*) and dL/d(Whh h + [0, 0, b_hn]) (dg*) from the activations,
    a = W_hn h + b_hn, h_prev, dL/dh from above (up) and the carry dhb (read, replaced by its direct share)."""
    one = h_prev.dtype.type(1)
    for k in range(h_prev.shape[0]):
        rr, z, n = gr[k], gz[k], gn[k]
        dht = up[k] + dhb[k]
        dn = dht * (one - z) * (one - n * n)
        dz = dht * (h_prev[k] - n) * z * (one - z)
        dr = dn * a[k] * rr * (one - rr)
        dxr[k], dxz[k], dxn[k] = dr, dz, dn
        dgr[k], dgz[k], dgn[k] = dr, dz, dn * rr
        dhb[k] = dht * z


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
            _rnn_row(gates[r], tmp[b], hs[r + B])


@fast
def rnn_backward(dgates, dh, dhs, hs, Whh):
    """dgates (T * B, H) receives dL/d(pre-activation); dhs (T * B, H): dL/dh_{t+1} from above;
    dh (B, H): workspace, dL/dh_0 on return. hs as left by :func:`rnn_forward`."""
    B, H = dh.shape
    T = dgates.shape[0] // B
    dh[:] = 0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            r = t * B + b
            _rnn_row_backward(dgates[r], hs[r + B], dhs[r], dh[b])
        np.dot(dgates[t * B:(t + 1) * B], Whh, dh)


# --- LSTM: [i, f, g, o]; c' = f c + i g; h' = o tanh(c') -----------------------

@fast
def lstm_forward(hs, cs, gates, tmp, Whh_panels):
    """hs, cs ((T+1) * B, H): h_0, c_0 in rows 0..B-1 on entry. gates (T * B, 4H): x_proj on entry,
    the activations [i, f, g, o] after. tmp (B, 4H): workspace. Whh_panels: Whh (4H, H)'s transpose packed
    for the micro-kernel (:func:`fastrnn.microkernel.pack_panels_of_transpose`), so each step's
    ``h @ Whh.T`` is :func:`fastrnn.microkernel.matmul_packed` (k summed in a fixed order)."""
    B = tmp.shape[0]
    H = hs.shape[1]
    T = gates.shape[0] // B
    for t in range(T):
        matmul_packed(hs[t * B:(t + 1) * B], Whh_panels, 4 * H, tmp, False)
        for b in range(B):
            r = t * B + b
            gi, gf, gg, go = _blocks4(gates[r], H)
            ui, uf, ug, uo = _blocks4(tmp[b], H)
            _lstm_row(gi, gf, gg, go, ui, uf, ug, uo, cs[r], cs[r + B], hs[r + B])


@fast
def lstm_backward(dgates, dh, dc, dhs, hs, cs, gates, Whh):
    """dgates (T * B, 4H) receives dL/d(pre-activations) [i, f, g, o]; dhs (T * B, H): dL/dh_{t+1} from
    above; dh, dc (B, H): workspaces, dL/dh_0 and dL/dc_0 on return. hs, cs, gates as left by
    :func:`lstm_forward`."""
    B = dh.shape[0]
    H = hs.shape[1]
    T = dgates.shape[0] // B
    dh[:] = 0
    dc[:] = 0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            r = t * B + b
            gi, gf, gg, go = _blocks4(gates[r], H)
            di, df, dg, do = _blocks4(dgates[r], H)
            _lstm_row_backward(di, df, dg, do, gi, gf, gg, go, cs[r + B], cs[r], dhs[r], dh[b], dc[b])
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
    for t in range(T):
        np.dot(hs[t * B:(t + 1) * B], Whh.T, tmp)
        for b in range(B):
            r = t * B + b
            gr, gz, gn = _blocks3(gates[r], H)
            ur, uz, un = _blocks3(tmp[b], H)
            _gru_row(gr, gz, gn, ur, uz, un, bhn, hn[r], hs[r], hs[r + B])


@fast
def gru_backward(dgx, dgh, dh, tmp, dhs, hs, gates, hn, Whh):
    """dgx (T * B, 3H) receives dL/d(x_proj) [r, z, n]; dgh (T * B, 3H) dL/d(Whh h + [0, 0, b_hn]) (its n
    block is dgx's times r); dhs (T * B, H): dL/dh_{t+1} from above; dh (B, H): workspace, dL/dh_0 on
    return; tmp (B, H): workspace. hs, gates, hn as left by :func:`gru_forward`."""
    B, H = dh.shape
    T = dgx.shape[0] // B
    dh[:] = 0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            r = t * B + b
            gr, gz, gn = _blocks3(gates[r], H)
            dxr, dxz, dxn = _blocks3(dgx[r], H)
            dgr, dgz, dgn = _blocks3(dgh[r], H)
            _gru_row_backward(dxr, dxz, dxn, dgr, dgz, dgn, gr, gz, gn, hn[r], hs[r], dhs[r], dh[b])
        np.dot(dgh[t * B:(t + 1) * B], Whh, tmp)
        for b in range(B):
            dhb, tb = dh[b], tmp[b]
            for k in range(H):
                dhb[k] += tb[k]


# --- the same recurrences with the units cut into parts, run at once -----------------------------
# A part owns the units [lo, hi) of ``bounds`` (P + 1,): their rows of every gate block of Whh (packed
# together by :func:`pack_parts`, so that each thread reads its own slice of the weights, step after
# step, from its own cache) and their columns of the state. Per time step each part computes its
# units' share of the product from the whole previous state, then their gates; the end of the
# ``prange`` is the barrier before the next step reads the state the parts wrote. Every unit runs the
# row functions of the whole-layer kernels, compiled without fastmath here (see ``_numba.parallel``):
# the two agree to rounding.

@fast
def unit_bounds(H, parts):
    """(parts + 1,) int64 bounds cutting H units into ``parts`` (<= H) nearly equal ranges, on multiples of
    16 units (a SIMD register of float32) where H allows."""
    bounds = np.empty(parts + 1, np.int64)
    step = 16 if H >= 16 * parts else 1
    blocks = H // step
    for p in range(parts + 1):
        bounds[p] = (p * blocks // parts) * step
    bounds[parts] = H
    return bounds


@fast
def pack_parts(Wp, Whh, bounds):
    """Wp (G*H, H) = Whh (G*H, H)'s rows regrouped by part: part p's G*n rows start at G*lo, gate block g
    of its units [lo, hi) at G*lo + g*n (n = hi - lo)."""
    H = Whh.shape[1]
    G = Whh.shape[0] // H
    for p in range(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        n = hi - lo
        for g in range(G):
            for j in range(n):
                Wp[G * lo + g * n + j] = Whh[g * H + lo + j]


@parallel
def rnn_forward_parts(hs, gates, tmp, Whh, bounds):
    """:func:`rnn_forward` over the parts of ``bounds``; tmp (B, H): part p's product in its flat slice
    [B lo, B hi). Whh (H, H) (one gate block: already grouped by part)."""
    B, H = tmp.shape
    T = gates.shape[0] // B
    flat = tmp.reshape(tmp.size)
    for t in range(T):
        h = hs[t * B:(t + 1) * B]
        for p in prange(bounds.shape[0] - 1):
            lo, hi = bounds[p], bounds[p + 1]
            u = flat[B * lo:B * hi].reshape((B, hi - lo))
            np.dot(h, Whh[lo:hi].T, u)
            for b in range(B):
                r = t * B + b
                _rnn_row(gates[r][lo:hi], u[b], hs[r + B][lo:hi])


@parallel
def rnn_backward_parts(dgates, dh, tmp, dhs, hs, WhhT, bounds):
    """:func:`rnn_backward` over the parts of ``bounds``; tmp (B, H): workspace (part p's carried dL/dh in
    its flat slice [B lo, B hi)); WhhT (H, H) = Whh.T."""
    B, H = dh.shape
    T = dgates.shape[0] // B
    flat = tmp.reshape(tmp.size)
    flat[:B * H] = 0
    for t in range(T - 1, -1, -1):
        for p in prange(bounds.shape[0] - 1):
            lo, hi = bounds[p], bounds[p + 1]
            carry = flat[B * lo:B * hi].reshape((B, hi - lo))
            if t < T - 1:
                np.dot(dgates[(t + 1) * B:(t + 2) * B], WhhT[lo:hi].T, carry)
            for b in range(B):
                r = t * B + b
                _rnn_row_backward(dgates[r][lo:hi], hs[r + B][lo:hi], dhs[r][lo:hi], carry[b])
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        carry = flat[B * lo:B * hi].reshape((B, hi - lo))
        np.dot(dgates[:B], WhhT[lo:hi].T, carry)
        for b in range(B):
            dh[b, lo:hi] = carry[b]


@parallel
def lstm_forward_parts(hs, cs, gates, tmp, Wp, bounds):
    """:func:`lstm_forward` over the parts of ``bounds``. Wp (4H, H): Whh packed by :func:`pack_parts`;
    tmp (B, 4H): part p's product in its flat slice [4B lo, 4B hi)."""
    B = tmp.shape[0]
    H = hs.shape[1]
    T = gates.shape[0] // B
    flat = tmp.reshape(tmp.size)
    for t in range(T):
        h = hs[t * B:(t + 1) * B]
        for p in prange(bounds.shape[0] - 1):
            lo, hi = bounds[p], bounds[p + 1]
            n = hi - lo
            u = flat[4 * B * lo:4 * B * hi].reshape((B, 4 * n))
            np.dot(h, Wp[4 * lo:4 * hi].T, u)
            for b in range(B):
                r = t * B + b
                gi, gf, gg, go = _blocks4(gates[r], H)
                ui, uf, ug, uo = _blocks4(u[b], n)
                _lstm_row(gi[lo:hi], gf[lo:hi], gg[lo:hi], go[lo:hi], ui, uf, ug, uo, cs[r][lo:hi],
                          cs[r + B][lo:hi], hs[r + B][lo:hi])


@parallel
def lstm_backward_parts(dgates, dh, dc, tmp, dhs, hs, cs, gates, WhhT, bounds):
    """:func:`lstm_backward` over the parts of ``bounds``; tmp (B, 4H): workspace (part p's carried dL/dh
    in its flat slice [B lo, B hi)); WhhT (H, 4H) = Whh.T."""
    B, H = dh.shape
    T = dgates.shape[0] // B
    flat = tmp.reshape(tmp.size)
    flat[:B * H] = 0
    dc[:] = 0
    for t in range(T - 1, -1, -1):
        for p in prange(bounds.shape[0] - 1):
            lo, hi = bounds[p], bounds[p + 1]
            carry = flat[B * lo:B * hi].reshape((B, hi - lo))
            if t < T - 1:
                np.dot(dgates[(t + 1) * B:(t + 2) * B], WhhT[lo:hi].T, carry)
            for b in range(B):
                r = t * B + b
                gi, gf, gg, go = _blocks4(gates[r], H)
                di, df, dg, do = _blocks4(dgates[r], H)
                _lstm_row_backward(di[lo:hi], df[lo:hi], dg[lo:hi], do[lo:hi], gi[lo:hi], gf[lo:hi], gg[lo:hi],
                                   go[lo:hi], cs[r + B][lo:hi], cs[r][lo:hi], dhs[r][lo:hi], carry[b],
                                   dc[b][lo:hi])
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        carry = flat[B * lo:B * hi].reshape((B, hi - lo))
        np.dot(dgates[:B], WhhT[lo:hi].T, carry)
        for b in range(B):
            dh[b, lo:hi] = carry[b]


@parallel
def gru_forward_parts(hs, gates, hn, tmp, Wp, bhn, bounds):
    """:func:`gru_forward` over the parts of ``bounds``. Wp (3H, H): Whh packed by :func:`pack_parts`;
    tmp (B, 3H): part p's product in its flat slice [3B lo, 3B hi)."""
    B = tmp.shape[0]
    H = hs.shape[1]
    T = gates.shape[0] // B
    flat = tmp.reshape(tmp.size)
    for t in range(T):
        h = hs[t * B:(t + 1) * B]
        for p in prange(bounds.shape[0] - 1):
            lo, hi = bounds[p], bounds[p + 1]
            n = hi - lo
            u = flat[3 * B * lo:3 * B * hi].reshape((B, 3 * n))
            np.dot(h, Wp[3 * lo:3 * hi].T, u)
            for b in range(B):
                r = t * B + b
                gr, gz, gn = _blocks3(gates[r], H)
                ur, uz, un = _blocks3(u[b], n)
                _gru_row(gr[lo:hi], gz[lo:hi], gn[lo:hi], ur, uz, un, bhn[lo:hi], hn[r][lo:hi], hs[r][lo:hi],
                         hs[r + B][lo:hi])


@parallel
def gru_backward_parts(dgx, dgh, dh, tmp, dhs, hs, gates, hn, WhhT, bounds):
    """:func:`gru_backward` over the parts of ``bounds``; tmp (B, 3H): workspace (part p's carried dL/dh in
    its flat slice [B lo, B hi), its product in [B H + B lo, B H + B hi)); WhhT (H, 3H) = Whh.T."""
    B, H = dh.shape
    T = dgx.shape[0] // B
    flat = tmp.reshape(tmp.size)
    flat[:B * H] = 0
    for t in range(T - 1, -1, -1):
        for p in prange(bounds.shape[0] - 1):
            lo, hi = bounds[p], bounds[p + 1]
            n = hi - lo
            carry = flat[B * lo:B * hi].reshape((B, n))
            if t < T - 1:
                prod = flat[B * (H + lo):B * (H + hi)].reshape((B, n))
                np.dot(dgh[(t + 1) * B:(t + 2) * B], WhhT[lo:hi].T, prod)
                for b in range(B):
                    cb, pb = carry[b], prod[b]
                    for k in range(n):
                        cb[k] += pb[k]
            for b in range(B):
                r = t * B + b
                gr, gz, gn = _blocks3(gates[r], H)
                dxr, dxz, dxn = _blocks3(dgx[r], H)
                dgr, dgz, dgn = _blocks3(dgh[r], H)
                _gru_row_backward(dxr[lo:hi], dxz[lo:hi], dxn[lo:hi], dgr[lo:hi], dgz[lo:hi], dgn[lo:hi], gr[lo:hi],
                                  gz[lo:hi], gn[lo:hi], hn[r][lo:hi], hs[r][lo:hi], dhs[r][lo:hi], carry[b])
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        n = hi - lo
        carry = flat[B * lo:B * hi].reshape((B, n))
        prod = flat[B * (H + lo):B * (H + hi)].reshape((B, n))
        np.dot(dgh[:B], WhhT[lo:hi].T, prod)
        for b in range(B):
            cb, pb, out = carry[b], prod[b], dh[b]
            for k in range(n):
                out[lo + k] = cb[k] + pb[k]
