"""PyTorch's names for fastrnn's arrays, both ways (numpy only: torch is not imported).

The PyTorch model is a module with two attributes, fed one-hot inputs::

    class CharRNN(torch.nn.Module):
        def __init__(self, V, H, num_layers, cell="lstm"):
            super().__init__()
            self.rnn = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
                V, H, num_layers, batch_first=True)
            self.decoder = torch.nn.Linear(H, V)

Its ``state_dict`` keys are ``rnn.weight_ih_l{l}``, ``rnn.weight_hh_l{l}``,
``rnn.bias_ih_l{l}``, ``rnn.bias_hh_l{l}``, ``decoder.weight`` and
``decoder.bias``. fastrnn keeps one combined bias ``bh`` where PyTorch has two
(a GRU's n block excepted: ``bh``'s n block is ``bias_ih``'s and ``bhn`` is
``bias_hh``'s), so :func:`to_torch` puts ``bh`` in ``bias_ih`` and zeros in
``bias_hh`` (the sum is what counts); for a gradient both get ``bh``'s
gradient, as autograd would. :func:`from_torch` sums the two.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from .model import CELLS, ModelParams, ModelSpec, describe
from .params import Params


def _layer_keys(layer):
    return tuple(f"rnn.{kind}_l{layer}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def to_torch(params_or_grads) -> dict:
    """``{torch name: numpy array}`` for ``load_state_dict(..., strict=True)`` (or each ``.grad``).

    Takes a :class:`~fastrnn.model.ModelParams` or the seed's :class:`~fastrnn.Params`;
    gradients (``is_gradient``: what :func:`fastrnn.loss_and_grads` returns)
    map each combined bias's gradient to both PyTorch biases. Arrays are copies.
    """
    p = params_or_grads
    if isinstance(p, Params):
        p = ModelParams.from_seed(p)
    if not isinstance(p, ModelParams):
        raise ValueError("to_torch takes a fastrnn.ModelParams or fastrnn.Params")
    spec, H = p.spec, p.spec.hidden_size
    out = {}
    for layer in range(spec.num_layers):
        w_ih, w_hh, b_ih, b_hh = _layer_keys(layer)
        Wxh, Whh, bh, *bhn = p.layer(layer)
        out[w_ih], out[w_hh], out[b_ih] = Wxh.copy(), Whh.copy(), bh.copy()
        if p.is_gradient:
            hh = bh.copy()
        else:
            hh = np.zeros_like(bh)
        if spec.cell == "gru":
            hh[2 * H:] = bhn[0]
        out[b_hh] = hh
    out["decoder.weight"], out["decoder.bias"] = p["Why"].copy(), p["by"].copy()
    return out


def _numpy(a):
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def torch_shapes(spec: ModelSpec) -> dict:
    """``{torch name: shape}`` of the ``state_dict`` of the module above for ``spec``."""
    V, H, G = spec.vocab_size, spec.hidden_size, spec.gates
    shapes = {}
    for layer in range(spec.num_layers):
        w_ih, w_hh, b_ih, b_hh = _layer_keys(layer)
        shapes.update({w_ih: (G * H, V if layer == 0 else H), w_hh: (G * H, H), b_ih: (G * H,), b_hh: (G * H,)})
    shapes.update({"decoder.weight": (V, H), "decoder.bias": (V,)})
    return shapes


_LAYER_KEY = re.compile(r"rnn\.(?:weight|bias)_(?:ih|hh)_l(\d+)")


def _spec_of(arrays, cell) -> ModelSpec:
    """The model a state_dict's keys and its decoder's shape describe: layers from the highest
    ``rnn.*_l{n}`` key, vocabulary and hidden size from ``decoder.weight`` (V, H)."""
    if "decoder.weight" not in arrays:
        raise ValueError("state_dict is missing decoder.weight (the output layer, shape (vocab, hidden))")
    decoder = arrays["decoder.weight"]
    if decoder.ndim != 2 or 0 in decoder.shape:
        raise ValueError(f"decoder.weight must have shape (vocab, hidden), got {decoder.shape}")
    layers = [int(m.group(1)) for m in map(_LAYER_KEY.fullmatch, arrays) if m]
    if not layers:
        raise ValueError("state_dict has no rnn.weight_ih_l0 (nor any other rnn.*_l0 key)")
    V, H = decoder.shape
    return ModelSpec(cell, max(layers) + 1, V, H)


def from_torch(state_dict, cell) -> ModelParams:
    """The :class:`~fastrnn.model.ModelParams` of a PyTorch ``state_dict`` (tensors or arrays) of ``cell``.

    Layers come from the highest ``rnn.*_l{n}`` key, hidden and vocabulary sizes
    from ``decoder.weight``; every key of that model must be there with its shape
    (:func:`torch_shapes`), and no other. The dtype is that of ``rnn.weight_hh_l0``.
    Combined biases are ``bias_ih + bias_hh``. A ``state_dict`` that is not a mapping
    is a TypeError; a missing, extra or misshapen array a ValueError naming it.
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors or arrays, got {type(state_dict).__name__}")
    arrays = {k: _numpy(v) for k, v in state_dict.items()}
    spec = _spec_of(arrays, cell)
    shapes = torch_shapes(spec)
    what = f"a {describe(spec)}"
    missing = [f"{k} {shape}" for k, shape in shapes.items() if k not in arrays]
    if missing:
        raise ValueError(f"state_dict is missing {', '.join(missing)} for {what}")
    extra = [str(k) for k in arrays if k not in shapes]
    if extra:
        raise ValueError(f"state_dict has keys {what} does not: {', '.join(extra)}")
    for k, shape in shapes.items():
        if arrays[k].shape != shape:
            raise ValueError(f"{k} has shape {arrays[k].shape}; {what} has {shape}")
        if arrays[k].dtype.kind != "f":
            raise ValueError(f"{k} must be a float tensor, got {arrays[k].dtype}")
    H = spec.hidden_size
    mine = {"Why": arrays["decoder.weight"], "by": arrays["decoder.bias"]}
    for layer in range(spec.num_layers):
        names = spec.layer_names(layer)
        w_ih, w_hh, b_ih, b_hh = (arrays[k] for k in _layer_keys(layer))
        bh = b_ih + b_hh
        if cell == "gru":
            bh[2 * H:] = b_ih[2 * H:]
            mine[names[3]] = b_hh[2 * H:]
        mine[names[0]], mine[names[1]], mine[names[2]] = w_ih, w_hh, bh
    return ModelParams.from_arrays(spec, mine, arrays["rnn.weight_hh_l0"].dtype)
