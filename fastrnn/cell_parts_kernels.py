"""The recurrent cells with the hidden units cut into parts, one part per thread, and the packing of Whh.

A part owns the units [lo, hi) of ``bounds`` (P + 1,): their rows of every gate
block of Whh (packed into panels of their own by :func:`pack_forward`, so that
each thread reads its own slice of the weights, step after step, from its own
cache) and their columns of the state. Per time step each part computes its
units' share of the product from the whole previous state, then their gates;
the end of the ``prange`` is the barrier before the next step reads the state
the parts wrote. Backward, a part computes its units' share of dL/dh from every
unit's dL/d(pre-activations) (:func:`pack_backward`'s panels).

Every unit runs the row functions of :mod:`fastrnn.cell_kernels`, compiled
without fastmath here (see ``_numba.parallel``): the two agree to rounding, and
the products, on the micro-kernel, to the bit. With one part (bounds [0, H]) the
packing gives the panels the whole-layer kernels of :mod:`fastrnn.cell_kernels`
take. Shapes and row layout are that module's.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._numba import exact, fast, parallel
from .cell_kernels import (blocks3, blocks4, gru_row, gru_row_backward, lstm_row, lstm_row_backward, rnn_row,
                           rnn_row_backward)
from .microkernel import matmul_packed, pack_panels


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


def panel_bounds(bounds, columns_per_unit, columns):
    """(P + 1,) int64: part p's panels are ``[out[p], out[p + 1])``, ceil(columns_per_unit * n_p / columns)
    of them (n_p its units; at least one). ``columns_per_unit``: G forward, 1 backward; ``columns``: NR."""
    counts = [max(1, -(-columns_per_unit * int(hi - lo) // columns)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    return np.cumsum([0] + counts).astype(np.int64)


@exact
def pack_forward_part(panels, Whh, lo, hi):
    """panels (P, H, NR) = the transpose of Whh's rows of units [lo, hi) in every gate block, (H, G * n) with
    column ``g * n + j`` = row ``g * H + lo + j`` (n = hi - lo), in P >= ceil(G * n / NR) panels, zero past
    G * n. Whh (G*H, H). Written a row of a panel at a time (NR rows of Whh read at once)."""
    H = Whh.shape[1]
    G = Whh.shape[0] // H
    n = hi - lo
    NR = panels.shape[2]
    rows = np.empty(NR, np.int64)
    for q in range(panels.shape[0]):
        for j in range(NR):
            c = q * NR + j
            rows[j] = (c // n) * H + lo + c % n if c < G * n else -1
        panel = panels[q]
        for k in range(H):
            out = panel[k]
            for j in range(NR):
                r = rows[j]
                out[j] = Whh[r, k] if r >= 0 else 0


@exact
def pack_forward(panels, Whh, bounds, first_panel):
    """panels (P, H, NR): part p's panels (from ``first_panel`` (parts + 1,)) are :func:`pack_forward_part`'s
    of its units [lo, hi) of ``bounds``. One part (bounds [0, H]): the panels of Whh.T. Whh (G*H, H)."""
    for p in range(bounds.shape[0] - 1):
        pack_forward_part(panels[first_panel[p]:first_panel[p + 1]], Whh, bounds[p], bounds[p + 1])


@exact
def pack_backward(panels, Whh, bounds, first_panel):
    """panels (P, G*H, NR): part p's panels (from ``first_panel``) hold Whh[:, lo:hi] (G*H, n) as
    :func:`fastrnn.microkernel.pack_panels` packs it, zero past n. One part: the panels of Whh. Whh (G*H, H)."""
    for p in range(bounds.shape[0] - 1):
        pack_panels(Whh[:, bounds[p]:bounds[p + 1]], panels[first_panel[p]:first_panel[p + 1]])


@parallel
def pack_parts(panels, Whh, bounds, first_panel, forward):
    """:func:`pack_forward` (``forward`` True) or :func:`pack_backward` of the parts at once, each on one of
    Numba's threads: the same values."""
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        own = panels[first_panel[p]:first_panel[p + 1]]
        if forward:
            pack_forward_part(own, Whh, lo, hi)
        else:
            pack_panels(Whh[:, lo:hi], own)


@parallel
def rnn_forward_parts(hs, gates, tmp, panels, bounds, first_panel):
    """``cell_kernels.rnn_forward`` over the parts of ``bounds``; tmp (B, H): part p's product in its flat slice
    [B lo, B hi). panels, first_panel: Whh packed by :func:`pack_forward`."""
    B, H = tmp.shape
    T = gates.shape[0] // B
    flat = tmp.reshape(tmp.size)
    for t in range(T):
        h = hs[t * B:(t + 1) * B]
        for p in prange(bounds.shape[0] - 1):
            lo, hi = bounds[p], bounds[p + 1]
            u = flat[B * lo:B * hi].reshape((B, hi - lo))
            matmul_packed(h, panels[first_panel[p]:first_panel[p + 1]], hi - lo, u, False)
            for b in range(B):
                r = t * B + b
                rnn_row(gates[r][lo:hi], u[b], hs[r + B][lo:hi])


@parallel
def rnn_backward_parts(dgates, dh, tmp, dhs, hs, panels, bounds, first_panel):
    """``cell_kernels.rnn_backward`` over the parts of ``bounds``; tmp (B, H): workspace (part p's carried dL/dh in
    its flat slice [B lo, B hi)). panels, first_panel: Whh packed by :func:`pack_backward`."""
    B, H = dh.shape
    T = dgates.shape[0] // B
    flat = tmp.reshape(tmp.size)
    flat[:B * H] = 0
    for t in range(T - 1, -1, -1):
        for p in prange(bounds.shape[0] - 1):
            lo, hi = bounds[p], bounds[p + 1]
            carry = flat[B * lo:B * hi].reshape((B, hi - lo))
            if t < T - 1:
                matmul_packed(dgates[(t + 1) * B:(t + 2) * B], panels[first_panel[p]:first_panel[p + 1]], hi - lo,
                              carry, False)
            for b in range(B):
                r = t * B + b
                rnn_row_backward(dgates[r][lo:hi], hs[r + B][lo:hi], dhs[r][lo:hi], carry[b])
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        carry = flat[B * lo:B * hi].reshape((B, hi - lo))
        matmul_packed(dgates[:B], panels[first_panel[p]:first_panel[p + 1]], hi - lo, carry, False)
        for b in range(B):
            dh[b, lo:hi] = carry[b]


@parallel
def lstm_forward_parts(hs, cs, gates, tmp, panels, bounds, first_panel):
    """``cell_kernels.lstm_forward`` over the parts of ``bounds``; tmp (B, 4H): part p's product in its flat slice
    [4B lo, 4B hi). panels, first_panel: Whh (4H, H) packed by :func:`pack_forward`."""
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
            matmul_packed(h, panels[first_panel[p]:first_panel[p + 1]], 4 * n, u, False)
            for b in range(B):
                r = t * B + b
                gi, gf, gg, go = blocks4(gates[r], H)
                ui, uf, ug, uo = blocks4(u[b], n)
                lstm_row(gi[lo:hi], gf[lo:hi], gg[lo:hi], go[lo:hi], ui, uf, ug, uo, cs[r][lo:hi],
                         cs[r + B][lo:hi], hs[r + B][lo:hi])


@parallel
def lstm_backward_parts(dgates, dh, dc, tmp, dhs, hs, cs, gates, panels, bounds, first_panel):
    """``cell_kernels.lstm_backward`` over the parts of ``bounds``; tmp (B, 4H): workspace (part p's carried dL/dh
    in its flat slice [B lo, B hi)). panels, first_panel: Whh packed by :func:`pack_backward`."""
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
                matmul_packed(dgates[(t + 1) * B:(t + 2) * B], panels[first_panel[p]:first_panel[p + 1]], hi - lo,
                              carry, False)
            for b in range(B):
                r = t * B + b
                gi, gf, gg, go = blocks4(gates[r], H)
                di, df, dg, do = blocks4(dgates[r], H)
                lstm_row_backward(di[lo:hi], df[lo:hi], dg[lo:hi], do[lo:hi], gi[lo:hi], gf[lo:hi], gg[lo:hi],
                                  go[lo:hi], cs[r + B][lo:hi], cs[r][lo:hi], dhs[r][lo:hi], carry[b],
                                  dc[b][lo:hi])
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        carry = flat[B * lo:B * hi].reshape((B, hi - lo))
        matmul_packed(dgates[:B], panels[first_panel[p]:first_panel[p + 1]], hi - lo, carry, False)
        for b in range(B):
            dh[b, lo:hi] = carry[b]


@parallel
def gru_forward_parts(hs, gates, hn, tmp, panels, bhn, bounds, first_panel):
    """``cell_kernels.gru_forward`` over the parts of ``bounds``; tmp (B, 3H): part p's product in its flat slice
    [3B lo, 3B hi). panels, first_panel: Whh (3H, H) packed by :func:`pack_forward`."""
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
            matmul_packed(h, panels[first_panel[p]:first_panel[p + 1]], 3 * n, u, False)
            for b in range(B):
                r = t * B + b
                gr, gz, gn = blocks3(gates[r], H)
                ur, uz, un = blocks3(u[b], n)
                gru_row(gr[lo:hi], gz[lo:hi], gn[lo:hi], ur, uz, un, bhn[lo:hi], hn[r][lo:hi], hs[r][lo:hi],
                        hs[r + B][lo:hi])


@parallel
def gru_backward_parts(dgx, dgh, dh, tmp, dhs, hs, gates, hn, panels, bounds, first_panel):
    """``cell_kernels.gru_backward`` over the parts of ``bounds``; tmp (B, 3H): workspace (part p's carried dL/dh in
    its flat slice [B lo, B hi)). panels, first_panel: Whh packed by :func:`pack_backward`."""
    B, H = dh.shape
    T = dgx.shape[0] // B
    flat = tmp.reshape(tmp.size)
    flat[:B * H] = 0
    for t in range(T - 1, -1, -1):
        for p in prange(bounds.shape[0] - 1):
            lo, hi = bounds[p], bounds[p + 1]
            n = hi - lo
            carry = flat[B * lo:B * hi].reshape((B, n))
            if t < T - 1:  # the carry (its direct share) + dgh_{t+1} @ Whh's columns of the part
                matmul_packed(dgh[(t + 1) * B:(t + 2) * B], panels[first_panel[p]:first_panel[p + 1]], n, carry,
                              True)
            for b in range(B):
                r = t * B + b
                gr, gz, gn = blocks3(gates[r], H)
                dxr, dxz, dxn = blocks3(dgx[r], H)
                dgr, dgz, dgn = blocks3(dgh[r], H)
                gru_row_backward(dxr[lo:hi], dxz[lo:hi], dxn[lo:hi], dgr[lo:hi], dgz[lo:hi], dgn[lo:hi], gr[lo:hi],
                                 gz[lo:hi], gn[lo:hi], hn[r][lo:hi], hs[r][lo:hi], dhs[r][lo:hi], carry[b])
    for p in prange(bounds.shape[0] - 1):
        lo, hi = bounds[p], bounds[p + 1]
        n = hi - lo
        carry = flat[B * lo:B * hi].reshape((B, n))
        matmul_packed(dgh[:B], panels[first_panel[p]:first_panel[p + 1]], n, carry, True)
        for b in range(B):
            dh[b, lo:hi] = carry[b]
