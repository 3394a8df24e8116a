"""The PyTorch models the benchmarks compare fastrnn with: one class for every cell, depth and input form.

``CharModel`` is what a PyTorch user would write for fastrnn's model: ``rnn``
(``nn.RNN`` with tanh, ``nn.LSTM`` or ``nn.GRU``; PyTorch's gate orders, as
fastrnn's) and ``decoder`` (``nn.Linear(H, V)``), the attribute names
:func:`fastrnn.to_torch` writes, so fastrnn's weights load with
``load_state_dict``. Inputs are ids, fed either one-hot (``input="onehot"``)
or through a frozen identity ``nn.Embedding`` (``input="embedding"``: the same
numbers, sometimes faster). ``dropout``: on every layer's outputs in training
mode (``model.train()``, PyTorch's default), where fastrnn's ``--dropout`` drops
them, with PyTorch's own masks. Importing this module needs torch; the
benchmark modules import it only when torch is there.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

RECURRENT = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
INPUTS = ("onehot", "embedding")


class CharModel(nn.Module):
    """Char-level model: ids (T, B) (or (B, T) with ``batch_first``) -> logits (..., V), last state."""

    def __init__(self, cell, vocab_size, hidden_size, num_layers=1, input="onehot", batch_first=False, dropout=0.0):
        super().__init__()
        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
        kwargs = dict(nonlinearity="tanh") if cell == "rnn" else {}
        if num_layers > 1:
            kwargs["dropout"] = dropout  # on every layer's outputs but the last's
        self.rnn = RECURRENT[cell](vocab_size, hidden_size, num_layers, batch_first=batch_first, **kwargs)
        self.drop = nn.Dropout(dropout)  # the last layer's, before the head: fastrnn's placement (--dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self.cell, self.vocab_size, self.input = cell, vocab_size, input
        if input == "embedding":
            self.embed = nn.Embedding(vocab_size, vocab_size)
            with torch.no_grad():
                self.embed.weight.copy_(torch.eye(vocab_size))  # one-hot rows through a lookup
            self.embed.weight.requires_grad_(False)

    def trained_parameters(self):
        """The parameters an optimizer updates (the identity embedding is frozen)."""
        return [*self.rnn.parameters(), *self.decoder.parameters()]

    def forward(self, ids, state=None):
        dtype = self.decoder.weight.dtype
        x = self.embed(ids).to(dtype) if self.input == "embedding" else F.one_hot(ids, self.vocab_size).to(dtype)
        out, state = self.rnn(x, state)
        return self.decoder(self.drop(out)), state


def zero_state(cell, num_layers, batch_size, hidden_size, dtype=torch.float32):
    """PyTorch's initial state: h (L, B, H), or (h, c) for an LSTM."""
    h = torch.zeros(num_layers, batch_size, hidden_size, dtype=dtype)
    return (h, h.clone()) if cell == "lstm" else h


def detach(state):
    """The state cut from the graph (truncated backprop through time)."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
