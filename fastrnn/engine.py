"""One engine for every cell and depth: B streams, T steps, layer by layer (validate, allocate, call the kernels).

A step runs layer 0 over the whole sequence (its input projection a row
lookup of ``Wxh.T``, then the cell's recurrence), then layer 1 on layer 0's
outputs (one GEMM for its input projection), and so on; then the output head
over all T * B rows. Backward runs the head, then the layers in reverse, each
turning dL/d(its outputs) into its weight gradients (GEMMs over all rows) and
dL/d(its inputs) for the layer below. The cell's own kernels
(:mod:`fastrnn.cell_kernels`) are the only code that knows its gates; the
numpy twin is :func:`fastrnn.reference.stack_loss_and_grads`.

Semantics are those of :mod:`fastrnn.batch`: the loss is the cross-entropy
summed over the B * T characters divided by B, and the gradient is that of
this loss (the per-stream gradients summed, divided by B). One stream of the
1-layer rnn also has a step compiled whole (:mod:`fastrnn.stream_kernels`, see
:func:`loss_and_grads`), the same model to rounding. Training steps over a
corpus are :mod:`fastrnn.steps`.

State layout (PyTorch's): a tuple with one (num_layers, B, H) array per state
name, ``(h,)`` for rnn and gru, ``(h, c)`` for lstm.

Dropout (:class:`Dropout`, training only) multiplies every layer's outputs by
a seeded mask before the layer above, or the head, reads them.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np

from . import cell_kernels, cell_parts_kernels, optim, optim_kernels, stack_kernels
from ._threads import blas_threads
from ._validate import check_batch_ids, check_model, check_params, check_positive, check_state
from .model import ModelParams
from .params import CLIP, SeedGrads
from .workspaces import StackWorkspace

# --- dropout ---------------------------------------------------------------------

_U64 = (1 << 64) - 1


class Dropout(NamedTuple):
    """Dropout of one training step: each layer's outputs times a mask of 0 (probability ``p``) and 1 / (1 - p).

    The mask is a pure function of the run's ``seed``, the 1-based ``step``, the
    layer, the time step, the stream's index among the ``total_streams`` of the
    whole batch and the unit (:func:`fastrnn.stack_kernels.dropout_forward`;
    twin :func:`fastrnn.reference.dropout_masks`). ``first_stream``: the index
    of the first stream these arrays hold (a chunk's, or an MPI rank's share's).
    """
    p: float
    seed: int
    step: int
    total_streams: int
    first_stream: int = 0


def dropout_counters(dropout, spec, T, dtype):
    """``(key, first, streams, threshold, scale)`` of :func:`fastrnn.stack_kernels.dropout_forward` for this
    step's dropout: ``first`` (L,) uint64, each layer's first counter."""
    L, H, S = spec.num_layers, spec.hidden_size, dropout.total_streams
    key = np.uint64(stack_kernels.splitmix64(np.uint64(dropout.seed)))  # returned as a Python int
    first = np.array([(dropout.step * L + layer) * T * S * H & _U64 for layer in range(L)], np.uint64)
    return (key, first, np.uint64(S), np.uint64(int(dropout.p * 2.0 ** 53)), dtype.type(1.0 / (1.0 - dropout.p)))


def _apply_dropout(a, dropout, layer, spec, B, T, dtype):
    """a["xd"] = a's outputs times this layer's mask (written into a["mask"])."""
    key, first, streams, threshold, scale = dropout_counters(dropout, spec, T, dtype)
    stack_kernels.dropout_forward(a["xd"], a["mask"], a["hs"][B:], B, key, first[layer],
                                  np.uint64(dropout.first_stream), streams, threshold, scale)


def _outputs(ws, layer, B, dropout):
    """Layer ``layer``'s outputs (T * B, H) as the layer above or the head reads them."""
    a = ws.layers[layer]
    return a["hs"][B:] if dropout is None else a["xd"]


# --- forward and backward of the stack (arrays already validated) -------------------

def pack_recurrent(ws, panels, Whh, first_panel, forward):
    """Whh into the micro-kernel's panels for the recurrence forward (or backward): by a
    :class:`StackWorkspace` with parts, its parts at once on Numba's threads."""
    if ws.parts > 1:
        cell_parts_kernels.pack_parts(panels, Whh, ws.unit_bounds, first_panel, forward)
    elif forward:
        cell_parts_kernels.pack_forward(panels, Whh, ws.unit_bounds, first_panel)
    else:
        cell_parts_kernels.pack_backward(panels, Whh, ws.unit_bounds, first_panel)


def recurrence_forward(cell, ws, a, Whh, bhn=None, weights_packed=False):
    """One layer's recurrence over the workspace's T steps, its input projection already in a["gates"].

    Packs Whh into a["forward_panels"] first (once for the T steps), unless ``weights_packed`` says the
    panels already hold this Whh. With ``ws.parts`` > 1 this and every ``*_parts`` kernel expect BLAS
    at one thread (the caller's)."""
    bounds, first = ws.unit_bounds, ws.first_forward_panel
    panels = a["forward_panels"]
    if not weights_packed:
        pack_recurrent(ws, panels, Whh, first, True)
    if ws.parts == 1:
        if cell == "rnn":
            cell_kernels.rnn_forward(a["hs"], a["gates"], a["tmp"], panels)
        elif cell == "lstm":
            cell_kernels.lstm_forward(a["hs"], a["cs"], a["gates"], a["tmp"], panels)
        else:
            cell_kernels.gru_forward(a["hs"], a["gates"], a["hn"], a["tmp"], panels, bhn)
    elif cell == "rnn":
        cell_parts_kernels.rnn_forward_parts(a["hs"], a["gates"], a["tmp"], panels, bounds, first)
    elif cell == "lstm":
        cell_parts_kernels.lstm_forward_parts(a["hs"], a["cs"], a["gates"], a["tmp"], panels, bounds, first)
    else:
        cell_parts_kernels.gru_forward_parts(a["hs"], a["gates"], a["hn"], a["tmp"], panels, bhn, bounds, first)


def _recurrence_backward(cell, ws, a, Whh):
    """One layer's recurrence backward: Whh packed into a["backward_panels"], then dL/d(pre-activations)
    into a["dgx"] (and a GRU's a["dgh"]) and dL/dh_0 (and dL/dc_0) into a["dh"] (a["dc"])."""
    bounds, first = ws.unit_bounds, ws.first_backward_panel
    panels = a["backward_panels"]
    pack_recurrent(ws, panels, Whh, first, False)
    if ws.parts == 1:
        if cell == "rnn":
            cell_kernels.rnn_backward(a["dgx"], a["dh"], a["dhs"], a["hs"], panels)
        elif cell == "lstm":
            cell_kernels.lstm_backward(a["dgx"], a["dh"], a["dc"], a["dhs"], a["hs"], a["cs"], a["gates"], panels)
        else:
            cell_kernels.gru_backward(a["dgx"], a["dgh"], a["dh"], a["dhs"], a["hs"], a["gates"], a["hn"], panels)
    elif cell == "rnn":
        cell_parts_kernels.rnn_backward_parts(a["dgx"], a["dh"], a["tmp"], a["dhs"], a["hs"], panels, bounds, first)
    elif cell == "lstm":
        cell_parts_kernels.lstm_backward_parts(a["dgx"], a["dh"], a["dc"], a["tmp"], a["dhs"], a["hs"], a["cs"],
                                         a["gates"], panels, bounds, first)
    else:
        cell_parts_kernels.gru_backward_parts(a["dgx"], a["dgh"], a["dh"], a["tmp"], a["dhs"], a["hs"], a["gates"],
                                        a["hn"], panels, bounds, first)


def forward(params, ws, inputs, targets, state, dropout=None, weights_packed=False):
    """Forward pass of B streams; returns the summed loss (float64). state: tuple of (L, B, H), read.

    ``dropout``: None, or a :class:`Dropout` for these B streams (training). ``weights_packed``: the
    workspace's packed recurrent weights and ``WxhT`` are already those of ``params`` (a caller repeating the
    forward pass over unchanged parameters, as sampling does); by default they are made here."""
    spec = params.spec
    B, T = inputs.shape
    for layer in range(spec.num_layers):
        a = ws.layers[layer]
        Wxh, Whh, bh, *bhn = params.layer(layer)
        a["hs"][:B] = state[0][layer]
        if layer == 0:
            if not weights_packed:
                stack_kernels.transpose_into(ws.WxhT, Wxh)
            stack_kernels.embed_ids(a["gates"], ws.WxhT, inputs, bh)
        elif ws.parts > 1:
            stack_kernels.project_inputs_parts(a["gates"], _outputs(ws, layer - 1, B, dropout), Wxh, bh,
                                               ws.row_bounds)
        else:
            stack_kernels.project_inputs(a["gates"], _outputs(ws, layer - 1, B, dropout), Wxh, bh)
        if spec.cell == "lstm":
            a["cs"][:B] = state[1][layer]
        recurrence_forward(spec.cell, ws, a, Whh, *bhn, weights_packed=weights_packed)
        if dropout is not None:
            _apply_dropout(a, dropout, layer, spec, B, T, params.dtype)
    top = _outputs(ws, spec.num_layers - 1, B, dropout)
    if ws.parts > 1:
        return stack_kernels.head_forward_parts(ws.probs, top, targets, params["Why"], params["by"], ws.row_bounds)
    return stack_kernels.head_forward(ws.probs, top, targets, params["Why"], params["by"])


def backward(params, ws, inputs, targets, grads, total_batch=None, dropout=None):
    """Backward pass after :func:`forward`; *overwrites* ``grads`` with the gradient of loss / B.

    ``total_batch`` (default B): the divisor, when these B streams are one share of a larger batch
    (a chunk of a step's streams, or one process's share under MPI). ``dropout``: as given to
    :func:`forward` (its masks are read from the workspace).
    """
    spec = params.spec
    B, T = inputs.shape
    H = spec.hidden_size
    g = grads.arrays
    dtype = params.dtype.type
    top, top_out = ws.layers[-1], _outputs(ws, spec.num_layers - 1, B, dropout)
    scale = dtype(1) / dtype(B if total_batch is None else total_batch)
    if ws.parts > 1:
        stack_kernels.head_backward_parts(top["dhs"], g["Why"], g["by"], ws.probs, top_out, targets, params["Why"],
                                          scale, ws.partials, ws.row_bounds)
    else:
        stack_kernels.head_backward(top["dhs"], g["Why"], g["by"], ws.probs, top_out, targets, params["Why"], scale)
    if dropout is not None:
        stack_kernels.multiply_into(top["dhs"], top["mask"])
    for layer in reversed(range(spec.num_layers)):
        a = ws.layers[layer]
        names = spec.layer_names(layer)
        Wxh = params[names[0]]
        _recurrence_backward(spec.cell, ws, a, params[names[1]])
        if spec.cell == "gru":
            stack_kernels.sum_rows(g[names[3]], a["dgh"], 2 * H)
        if ws.parts > 1:
            stack_kernels.gram_parts(g[names[1]], ws.partials, a["dgh"], a["hs"][:T * B], ws.row_bounds)
        else:
            stack_kernels.recurrent_grads(g[names[1]], a["dgh"], a["hs"][:T * B])
        stack_kernels.sum_rows(g[names[2]], a["dgx"], 0)
        if layer == 0:
            stack_kernels.embedding_grads(g[names[0]], ws.dWxhT, a["dgx"], inputs)
        else:
            below, X = ws.layers[layer - 1], _outputs(ws, layer - 1, B, dropout)
            if ws.parts > 1:
                stack_kernels.input_grads_parts(below["dhs"], g[names[0]], a["dgx"], X, Wxh, ws.partials,
                                                ws.row_bounds)
            else:
                stack_kernels.input_grads(below["dhs"], g[names[0]], a["dgx"], X, Wxh)
            if dropout is not None:
                stack_kernels.multiply_into(below["dhs"], below["mask"])


def parts_blas(ws):
    """BLAS at one thread while a workspace with parts > 1 runs (its parts are the threads); else nothing."""
    return blas_threads(1) if ws.parts > 1 else contextlib.nullcontext()


def last_state(ws, spec, B, T, out):
    """Copy each layer's final state into ``out`` (tuple of (L, B, H))."""
    for layer, a in enumerate(ws.layers):
        out[0][layer] = a["hs"][T * B:]
        if spec.cell == "lstm":
            out[1][layer] = a["cs"][T * B:]


# --- the public functions' state layouts ------------------------------------------

def _state_like(state_last, state_given, spec, single):
    """The last state in the layout the caller gave (PyTorch's by default)."""
    parts = None if state_given is None else (
        tuple(state_given) if isinstance(state_given, (tuple, list)) else (state_given,))
    out = []
    for i, s in enumerate(state_last):
        shape = s.shape if parts is None else np.shape(parts[i])
        if single and parts is None:
            shape = (s.shape[0], s.shape[2])
        out.append(s.reshape(shape))
    if spec.cell == "lstm":
        return tuple(out)
    return out[0]


# --- public functions ------------------------------------------------------------------

def stack_loss_and_grads(params, inputs, targets, state=None, clip=CLIP, workspace=None, dropout=None):
    """The generic engine's loss, gradients and last state, any model (the 1-layer rnn too).

    Same meaning as :func:`fastrnn.reference.stack_loss_and_grads`: inputs,
    targets (B, T); state a tuple of (L, B, H) arrays or None; ``dropout`` None
    or a :class:`Dropout` (the twin's ``masks`` are its
    :func:`fastrnn.reference.dropout_masks`). Returns ``(loss, grads,
    state_last)`` with fresh arrays.
    """
    params = check_model(params)
    inputs, targets, _ = check_batch_ids(inputs, targets, params.vocab_size)
    B, T = inputs.shape
    state = check_state(state, params.spec, B, params.dtype)
    ws = workspace if workspace is not None else StackWorkspace(params.spec, T, B, params.dtype)
    if not ws.fits(params, B, T):
        raise ValueError("workspace does not fit these parameters, batch size and sequence length")
    with parts_blas(ws):
        loss = forward(params, ws, inputs, targets, state, dropout)
        grads = ws.grads
        backward(params, ws, inputs, targets, grads, dropout=dropout)
    limit = optim.clip_value(clip, params.dtype)
    optim_kernels.clip_inplace(grads.flat, limit)
    last_state(ws, params.spec, B, T, state)
    return float(loss) / B, grads.copy(), state


def loss_and_grads(params, inputs, targets, state=None, clip=CLIP, workspace=None):
    """Loss, gradients (clipped to [-clip, clip], ``clip`` > 0; ``clip=None``: unclipped) and last state of any model.

    ``params``: a :class:`~fastrnn.model.ModelParams` from :func:`fastrnn.init_params`
    (or the seed's :class:`~fastrnn.Params`). inputs, targets: (T,) or (B, T)
    ids. ``state``: None (zeros) or PyTorch's layout, ``h`` (L, B, H) for
    rnn/gru, a pair ``(h, c)`` for lstm; a (T,) call also takes (L, H), and
    (H,) for a 1-layer model; a state of another float dtype is taken as a copy in the parameters' dtype
    (as the seed's ``hprev`` functions take it). Returns ``(loss, grads, state_last)``: the
    cross-entropy summed over the B * T characters divided by B (B = 1: the
    seed's sum), gradients of the same type as ``params``, and the last state
    in the layout given (PyTorch's when None).

    One sequence of a 1-layer rnn runs the one-stream step compiled whole
    (:func:`fastrnn.rnn.loss_and_grads`, with ``workspace`` a :class:`fastrnn.Workspace`
    to reuse); everything else the generic engine (``workspace`` a :class:`StackWorkspace`).
    """
    if clip is not None:
        check_positive(clip, "clip")  # None: unclipped (0 is refused for every cell, as TrainConfig does)
    seed_in = not isinstance(params, ModelParams)  # the seed's Params (or its tuple / dict forms)
    one_sequence = np.ndim(inputs) != 2 or (state is not None and np.ndim(_one_array(state)) == 1)
    if seed_in or params.spec.is_seed:
        seed_params = check_params(params) if seed_in else params.as_seed()
        if one_sequence:
            loss, g, state_last = _seed_loss_and_grads(seed_params, inputs, targets, _one_array(state), clip,
                                                       workspace)
            return loss, (SeedGrads(*g) if seed_in else ModelParams.from_seed(SeedGrads(*g))), state_last
    model = ModelParams.from_seed(seed_params) if seed_in else check_model(params)
    spec, dtype = model.spec, model.dtype
    ids, tgt, single = check_batch_ids(inputs, targets, spec.vocab_size)
    st = check_state(state, spec, ids.shape[0], dtype, single)
    loss, grads, state_last = stack_loss_and_grads(model, ids, tgt, st, clip, workspace)
    if seed_in:
        grads = SeedGrads(*grads.as_seed())
    return loss, grads, _state_like(state_last, state, spec, single)


def _one_array(state):
    """A rnn's state given as a 1-tuple, unwrapped (anything else as it is, for the checks to judge)."""
    if isinstance(state, (tuple, list)) and len(state) == 1 and isinstance(state[0], np.ndarray):
        return state[0]
    return state


def _seed_loss_and_grads(params, inputs, targets, state, clip, workspace):
    """One sequence of the 1-layer rnn on the one-stream compiled step, the state in any of the accepted layouts."""
    from . import rnn

    if isinstance(state, (tuple, list)) and state and all(isinstance(s, np.ndarray) for s in state):
        raise ValueError(f"the state of a rnn is one array h, got {len(state)} arrays")
    H = int(params.Whh.shape[0])
    shape = None if state is None else np.shape(state)
    h = np.zeros(H) if state is None else np.asarray(state)
    if shape in ((1, H), (1, 1, H)) and shape != (H, 1):
        h = h.reshape(H)
    loss, g, h_last = rnn.loss_and_grads(params, inputs, targets, h, clip=clip, workspace=workspace)
    # PyTorch's (L, H) for no state; the layout given otherwise; the seed's (H,) for (H,) or (H, 1).
    out_shape = (1, H) if shape is None else (H,) if shape in ((H,), (H, 1)) else shape
    return loss, g, h_last.reshape(out_shape)
