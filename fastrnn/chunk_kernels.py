"""A training step's chunks of streams at once on Numba's threads (:func:`chunk_steps`).

Each chunk runs the engine's step (:func:`fastrnn.engine.forward`, then its backward) on a
:class:`~fastrnn.workspaces.StackWorkspace` of one part: the same kernels on the same arrays in the same
order, so a chunk's loss, gradients and last state have the bits of a one-chunk step of its streams (an
MPI rank's share). The weights are shared, Whh packed once into the first chunk's panels. What is off is
given as None, and Numba compiles a step without it: ``cs`` (an LSTM's cell states) and ``hn`` (a GRU's
W_hn h + b_hn; then also ``bhn`` and ``dbhn`` are read) say the cell, rnn when both are None; ``xd`` and
``mask`` None: no dropout (else layer l's outputs times the mask
:func:`fastrnn.stack_kernels.dropout_forward` draws from counter ``drop_first[l]``, chunk c's first stream
``drop_stream0[c]`` among ``drop_streams``).
"""
from __future__ import annotations

from numba import prange

from . import cell_kernels, stack_kernels
from ._numba import parallel


@parallel
def chunk_steps(losses, ids, targets, hs, cs, gates, tmp, hn, dgx, dgh, dhs, dh, dc, xd, mask, probs, WxhT, dWxhT,
                Wxh, bh, bhn, Why, by, forward_panels, backward_panels, dWxh, dWhh, dbh, dbhn, dWhy, dby, scale,
                drop_key, drop_first, drop_stream0, drop_streams, drop_threshold, drop_scale):
    """Every chunk c's forward and backward at once, its loss (float64, summed over its B_c * T ids) into
    losses[c] (losses (n,) float64), its gradients (of that loss times ``scale``) overwritten, its states'
    last rows its last state. A per-chunk argument is a tuple over the n chunks (ids, targets (B_c, T)
    int64; ``drop_stream0`` (n,) uint64); a per-layer one a tuple over the (chunk, layer) pairs, chunk c's
    layer l at ``c * L + l`` (a tuple of tuples does not pass into a ``prange``); the weights and panels
    of layer l at l."""
    L = len(Wxh)
    for c in prange(len(ids)):
        B, T = ids[c].shape
        H = hs[c * L].shape[1]
        for layer in range(L):
            i = c * L + layer
            if layer == 0:
                stack_kernels.embed_ids(gates[i], WxhT, ids[c], bh[0])
            elif xd is None:
                stack_kernels.project_inputs(gates[i], hs[i - 1][B:], Wxh[layer], bh[layer])
            else:
                stack_kernels.project_inputs(gates[i], xd[i - 1], Wxh[layer], bh[layer])
            if cs is not None:
                cell_kernels.lstm_forward(hs[i], cs[i], gates[i], tmp[i], forward_panels[layer])
            elif hn is not None:
                cell_kernels.gru_forward(hs[i], gates[i], hn[i], tmp[i], forward_panels[layer], bhn[layer])
            else:
                cell_kernels.rnn_forward(hs[i], gates[i], tmp[i], forward_panels[layer])
            if xd is not None:
                stack_kernels.dropout_forward(xd[i], mask[i], hs[i][B:], B, drop_key, drop_first[layer],
                                              drop_stream0[c], drop_streams, drop_threshold, drop_scale)
        i = c * L + L - 1
        if xd is None:
            losses[c] = stack_kernels.head_forward(probs[c], hs[i][B:], targets[c], Why, by)
            stack_kernels.head_backward(dhs[i], dWhy[c], dby[c], probs[c], hs[i][B:], targets[c], Why, scale)
        else:
            losses[c] = stack_kernels.head_forward(probs[c], xd[i], targets[c], Why, by)
            stack_kernels.head_backward(dhs[i], dWhy[c], dby[c], probs[c], xd[i], targets[c], Why, scale)
            stack_kernels.multiply_into(dhs[i], mask[i])
        for layer in range(L - 1, -1, -1):
            i = c * L + layer
            if cs is not None:
                cell_kernels.lstm_backward(dgx[i], dh[i], dc[i], dhs[i], hs[i], cs[i], gates[i],
                                           backward_panels[layer])
            elif hn is not None:
                cell_kernels.gru_backward(dgx[i], dgh[i], dh[i], dhs[i], hs[i], gates[i], hn[i],
                                          backward_panels[layer])
                stack_kernels.sum_rows(dbhn[i], dgh[i], 2 * H)
            else:
                cell_kernels.rnn_backward(dgx[i], dh[i], dhs[i], hs[i], backward_panels[layer])
            stack_kernels.recurrent_grads(dWhh[i], dgh[i], hs[i][:T * B])
            stack_kernels.sum_rows(dbh[i], dgx[i], 0)
            if layer == 0:
                stack_kernels.embedding_grads(dWxh[i], dWxhT[c], dgx[i], ids[c])
            elif xd is None:
                stack_kernels.input_grads(dhs[i - 1], dWxh[i], dgx[i], hs[i - 1][B:], Wxh[layer])
            else:
                stack_kernels.input_grads(dhs[i - 1], dWxh[i], dgx[i], xd[i - 1], Wxh[layer])
                stack_kernels.multiply_into(dhs[i - 1], mask[i - 1])
