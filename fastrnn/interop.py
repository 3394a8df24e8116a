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

import numpy as np

from .model import CELLS, ModelParams, ModelSpec
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


def from_torch(state_dict, cell) -> ModelParams:
    """The :class:`~fastrnn.model.ModelParams` of a PyTorch ``state_dict`` (tensors or arrays) of ``cell``.

    Layers, hidden and vocabulary sizes come from the shapes; the dtype is
    that of ``rnn.weight_hh_l0``. Combined biases are ``bias_ih + bias_hh``.
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    arrays = {k: _numpy(v) for k, v in state_dict.items()}
    layers = 0
    while f"rnn.weight_ih_l{layers}" in arrays:
        layers += 1
    need = [k for layer in range(max(layers, 1)) for k in _layer_keys(layer)] + ["decoder.weight", "decoder.bias"]
    missing = [k for k in need if k not in arrays]
    if missing:
        raise ValueError(f"state_dict is missing {', '.join(missing)}")
    V, H = arrays["decoder.weight"].shape
    spec = ModelSpec(cell, layers, V, H)
    G = spec.gates
    mine = {"Why": arrays["decoder.weight"], "by": arrays["decoder.bias"]}
    for layer in range(layers):
        names = spec.layer_names(layer)
        w_ih, w_hh, b_ih, b_hh = (arrays[k] for k in _layer_keys(layer))
        if w_hh.shape != (G * H, H):
            raise ValueError(f"rnn.weight_hh_l{layer} has shape {w_hh.shape}; a {cell} of hidden size {H} "
                             f"has ({G * H}, {H})")
        bh = b_ih + b_hh
        if cell == "gru":
            bh[2 * H:] = b_ih[2 * H:]
            mine[names[3]] = b_hh[2 * H:]
        mine[names[0]], mine[names[1]], mine[names[2]] = w_ih, w_hh, bh
    return ModelParams.from_arrays(spec, mine, arrays["rnn.weight_hh_l0"].dtype)
