"""Numba kernels of the recurrent cells: one layer, B streams, T steps, forward beside backward.

A cell owns only its recurrence. The input projection of every step is already
computed (``x_proj`` = ``x @ Wxh.T + bh``, (T * B, G * H), by
:mod:`fastrnn.stack_kernels`: a row lookup at layer 0, one GEMM above it), so
per time step a cell does one (B, H) @ (H, G * H) product with ``Whh.T`` and its
element-wise gate arithmetic. Backward takes dL/dh_t from above (the output
head or the next layer) and returns the gradient of every pre-activation, from
which the stack builds the weight gradients with GEMMs over all rows at once;
its product per time step is (B, G * H) @ Whh (G * H, H).

Both products run on :func:`fastrnn.microkernel.matmul_packed`, over Whh packed
once per pass into column panels (:func:`fastrnn.cell_parts_kernels.pack_forward`,
``pack_backward``; by part for the split kernels of that module): the k order of
every sum is fixed, so the products give the same bits however the units are cut
into parts.

Rows are time-major: row ``t * B + b`` is stream b at step t, so the B rows of
one step are one contiguous (B, .) block. ``hs`` ((T+1) * B, H) holds h_0 (the
initial state) in rows 0..B-1 and h_{t+1} in rows (t+1) * B + b; an LSTM's
``cs`` likewise. Gate blocks follow PyTorch: LSTM [i, f, g, o]; GRU [r, z, n]
with ``n = tanh(x_n + r * (W_hn h + b_hn))``; rnn a single tanh block.

The gates' sigmoid and tanh are :mod:`fastrnn.gate_math`'s (vectorisable,
within 3 ulp of the true values, float32 computed in float32), so a step's
element-wise work runs in SIMD.

Every ``*_backward`` leaves in ``dh`` (B, H) the gradient of the initial
state h_0 (and, for an LSTM, in ``dc`` that of c_0). The twins are in
:mod:`fastrnn.reference_cells`. Float arrays share one dtype (float32 or float64).
"""

from __future__ import annotations

from . import gate_math
from ._numba import fast, fast_inline
from .microkernel import matmul_packed


@fast_inline
def blocks4(row, H):
    """The four (H,) gate blocks of a (4H,) row, as separate views.

    Indexing one row as ``row[k]``, ``row[H + k]``, ... hides from LLVM that the
    blocks never overlap (H is only known at run time), so it keeps the gate loop
    scalar; four views are four pointers it checks once and then vectorises
    (the same arithmetic)."""
    return row[:H], row[H:2 * H], row[2 * H:3 * H], row[3 * H:4 * H]


@fast_inline
def blocks3(row, H):
    """The three (H,) gate blocks of a (3H,) row, as separate views (see :func:`blocks4`)."""
    return row[:H], row[H:2 * H], row[2 * H:3 * H]


# --- the work of one row over a range of units (shared by the whole-layer and the split kernels) ---
# Inlined into every kernel that calls them (``fast_inline``).

@fast_inline
def rnn_row(x, u, h_new):
    """h_new (n,) = tanh(x + u) for one row's n units (x: x_proj, u: Whh h)."""
    for k in range(h_new.shape[0]):
        h_new[k] = gate_math.tanh(x[k] + u[k])


@fast_inline
def rnn_row_backward(d, h, up, carry):
    """d (n,) = (1 - h^2) (up + carry): dL/d(pre-activation) of one row's n units."""
    one = h.dtype.type(1)
    for k in range(d.shape[0]):
        d[k] = (one - h[k] * h[k]) * (up[k] + carry[k])


@fast_inline
def lstm_row(gi, gf, gg, go, ui, uf, ug, uo, c_prev, c_new, h_new):
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
def lstm_row_backward(di, df, dg, do, gi, gf, gg, go, c_now, c_prev, up, dhb, dcb):
    """One row's n units: d* (dL/d pre-activations) from the activations g*, the cell states, dL/dh from
    above (up) and the carries dhb (read), dcb (dL/dc, read and replaced by its share for c_prev)."""
    dt = c_now.dtype.type
    one = dt(1)
    for k in range(c_now.shape[0]):
        i, f, g, o = gi[k], gf[k], gg[k], go[k]
        tc = dt(gate_math.tanh(c_now[k]))  # as lstm_row computed it
        dht = up[k] + dhb[k]
        dct = dcb[k] + dht * o * (one - tc * tc)
        di[k] = dct * g * i * (one - i)
        df[k] = dct * c_prev[k] * f * (one - f)
        dg[k] = dct * i * (one - g * g)
        do[k] = dht * tc * o * (one - o)
        dcb[k] = dct * f


@fast_inline
def gru_row(gr, gz, gn, ur, uz, un, bhn, a, h_prev, h_new):
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
def gru_row_backward(dxr, dxz, dxn, dgr, dgz, dgn, gr, gz, gn, a, h_prev, up, dhb):
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
def rnn_forward(hs, gates, tmp, panels):
    """hs ((T+1) * B, H): h_0 in rows 0..B-1 on entry, receives h_{t+1}. gates (T * B, H): x_proj (read).
    tmp (B, H): workspace. panels: Whh (H, H) packed by ``pack_forward`` on one part."""
    B, H = tmp.shape
    T = gates.shape[0] // B
    for t in range(T):
        matmul_packed(hs[t * B:(t + 1) * B], panels, H, tmp, False)
        for b in range(B):
            r = t * B + b
            rnn_row(gates[r], tmp[b], hs[r + B])


@fast
def rnn_backward(dgates, dh, dhs, hs, panels):
    """dgates (T * B, H) receives dL/d(pre-activation); dhs (T * B, H): dL/dh_{t+1} from above;
    dh (B, H): workspace, dL/dh_0 on return. hs as left by :func:`rnn_forward`. panels: Whh packed by
    ``pack_backward`` on one part."""
    B, H = dh.shape
    T = dgates.shape[0] // B
    dh[:] = 0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            r = t * B + b
            rnn_row_backward(dgates[r], hs[r + B], dhs[r], dh[b])
        matmul_packed(dgates[t * B:(t + 1) * B], panels, H, dh, False)


# --- tanh RNN, one stream: the products as mat-vecs over Whh's rows (no packing) ------------------
# At B = 1 a product is a mat-vec that reads all of Whh once; packing Whh into panels twice a step costs
# more than the micro-kernel saves there, so one stream reads Whh's rows in place, four at a time.

@fast
def matvec_add(out, W, x):
    """out (H,) += W (H, H) @ x (H,), four rows at a time so each x[j] load feeds four FMAs."""
    H = W.shape[0]
    H4 = H - H % 4
    for i in range(0, H4, 4):
        w0, w1, w2, w3 = W[i], W[i + 1], W[i + 2], W[i + 3]
        a0, a1, a2, a3 = out[i], out[i + 1], out[i + 2], out[i + 3]
        for j in range(H):
            xj = x[j]
            a0 += w0[j] * xj
            a1 += w1[j] * xj
            a2 += w2[j] * xj
            a3 += w3[j] * xj
        out[i], out[i + 1], out[i + 2], out[i + 3] = a0, a1, a2, a3
    for i in range(H4, H):
        w = W[i]
        acc = out[i]
        for j in range(H):
            acc += w[j] * x[j]
        out[i] = acc


@fast
def matvec_t(out, W, g):
    """out (H,) = W.T (H, H) @ g (H,), as row updates over four rows of W at a time.

    Reads W row by row (contiguous), so no transposed copy is needed.
    """
    H = W.shape[0]
    H4 = H - H % 4
    out[:] = 0
    for i in range(0, H4, 4):
        w0, w1, w2, w3 = W[i], W[i + 1], W[i + 2], W[i + 3]
        g0, g1, g2, g3 = g[i], g[i + 1], g[i + 2], g[i + 3]
        for j in range(H):
            out[j] += g0 * w0[j] + g1 * w1[j] + g2 * w2[j] + g3 * w3[j]
    for i in range(H4, H):
        w = W[i]
        gi = g[i]
        for j in range(H):
            out[j] += gi * w[j]


@fast
def rnn_forward_one(hs, gates, Whh):
    """:func:`rnn_forward` at B = 1: hs (T+1, H) h_0 in row 0 on entry; gates (T, H) x_proj (read); Whh (H, H)."""
    for t in range(gates.shape[0]):
        h = hs[t + 1]
        h[:] = 0
        matvec_add(h, Whh, hs[t])
        rnn_row(gates[t], h, h)


@fast
def rnn_backward_one(dgates, dh, dhs, hs, Whh):
    """:func:`rnn_backward` at B = 1: dgates, dhs (T, H); dh (1, H) dL/dh_0 on return; Whh (H, H)."""
    carry = dh[0]
    carry[:] = 0
    for t in range(dgates.shape[0] - 1, -1, -1):
        rnn_row_backward(dgates[t], hs[t + 1], dhs[t], carry)
        matvec_t(carry, Whh, dgates[t])


# --- LSTM: [i, f, g, o]; c' = f c + i g; h' = o tanh(c') -----------------------

@fast
def lstm_forward(hs, cs, gates, tmp, panels):
    """hs, cs ((T+1) * B, H): h_0, c_0 in rows 0..B-1 on entry. gates (T * B, 4H): x_proj on entry,
    the activations [i, f, g, o] after. tmp (B, 4H): workspace. panels: Whh (4H, H) packed by
    ``pack_forward`` on one part."""
    B = tmp.shape[0]
    H = hs.shape[1]
    T = gates.shape[0] // B
    for t in range(T):
        matmul_packed(hs[t * B:(t + 1) * B], panels, 4 * H, tmp, False)
        for b in range(B):
            r = t * B + b
            gi, gf, gg, go = blocks4(gates[r], H)
            ui, uf, ug, uo = blocks4(tmp[b], H)
            lstm_row(gi, gf, gg, go, ui, uf, ug, uo, cs[r], cs[r + B], hs[r + B])


@fast
def lstm_backward(dgates, dh, dc, dhs, hs, cs, gates, panels):
    """dgates (T * B, 4H) receives dL/d(pre-activations) [i, f, g, o]; dhs (T * B, H): dL/dh_{t+1} from
    above; dh, dc (B, H): workspaces, dL/dh_0 and dL/dc_0 on return. hs, cs, gates as left by
    :func:`lstm_forward`. panels: Whh packed by ``pack_backward`` on one part."""
    B = dh.shape[0]
    H = hs.shape[1]
    T = dgates.shape[0] // B
    dh[:] = 0
    dc[:] = 0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            r = t * B + b
            gi, gf, gg, go = blocks4(gates[r], H)
            di, df, dg, do = blocks4(dgates[r], H)
            lstm_row_backward(di, df, dg, do, gi, gf, gg, go, cs[r + B], cs[r], dhs[r], dh[b], dc[b])
        matmul_packed(dgates[t * B:(t + 1) * B], panels, H, dh, False)


# --- GRU: [r, z, n]; n = tanh(x_n + r (W_hn h + b_hn)); h' = (1 - z) n + z h ----

@fast
def gru_forward(hs, gates, hn, tmp, panels, bhn):
    """hs ((T+1) * B, H): h_0 in rows 0..B-1 on entry. gates (T * B, 3H): x_proj on entry, the
    activations [r, z, n] after. hn (T * B, H) receives W_hn h + b_hn. tmp (B, 3H): workspace.
    panels: Whh (3H, H) packed by ``pack_forward`` on one part; bhn (H,)."""
    B = tmp.shape[0]
    H = hs.shape[1]
    T = gates.shape[0] // B
    for t in range(T):
        matmul_packed(hs[t * B:(t + 1) * B], panels, 3 * H, tmp, False)
        for b in range(B):
            r = t * B + b
            gr, gz, gn = blocks3(gates[r], H)
            ur, uz, un = blocks3(tmp[b], H)
            gru_row(gr, gz, gn, ur, uz, un, bhn, hn[r], hs[r], hs[r + B])


@fast
def gru_backward(dgx, dgh, dh, dhs, hs, gates, hn, panels):
    """dgx (T * B, 3H) receives dL/d(x_proj) [r, z, n]; dgh (T * B, 3H) dL/d(Whh h + [0, 0, b_hn]) (its n
    block is dgx's times r); dhs (T * B, H): dL/dh_{t+1} from above; dh (B, H): workspace, dL/dh_0 on
    return. hs, gates, hn as left by :func:`gru_forward`. panels: Whh packed by ``pack_backward`` on
    one part."""
    B, H = dh.shape
    T = dgx.shape[0] // B
    dh[:] = 0
    for t in range(T - 1, -1, -1):
        for b in range(B):
            r = t * B + b
            gr, gz, gn = blocks3(gates[r], H)
            dxr, dxz, dxn = blocks3(dgx[r], H)
            dgr, dgz, dgn = blocks3(dgh[r], H)
            gru_row_backward(dxr, dxz, dxn, dgr, dgz, dgn, gr, gz, gn, hn[r], hs[r], dhs[r], dh[b])
        matmul_packed(dgh[t * B:(t + 1) * B], panels, H, dh, True)  # dh = its direct share + dgh_t @ Whh
