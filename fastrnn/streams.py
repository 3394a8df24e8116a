"""Streams of one model stepped together, one id each per step: the batched decoding of ``fastrnn serve``, and
the one stream of ``fastrnn sample`` (:func:`fastrnn.inference.sample_chunks`) for every model but the
seed's 1-layer rnn.

A row's arithmetic does not depend on how many rows are stepped nor on which row it is: the products run
on :func:`fastrnn.microkernel.matmul_packed` (each output one FMA per k, in increasing k) over weights packed
once, the seed's rnn row by row through :func:`fastrnn.stream_kernels.step_rows` (the arithmetic of its
one-stream sampler), and a row's draw is :func:`fastrnn.kernels.draw_rows`'s. So a stream draws the same
ids alone as in a batch with any others.
"""
from __future__ import annotations

import numpy as np

from . import cell_parts_kernels, stack_kernels, stream_kernels
from ._validate import check_model
from .engine import recurrence_forward
from .microkernel import empty_panels, matmul_packed, pack_panels_of_transpose
from .model import ModelParams
from .workspaces import StackWorkspace


class Stepper:
    """Steps any number B of streams of ``params`` (B may change from step to step) one id each.

    The weights are packed when it is made: make another if ``params`` change. Not thread-safe: one
    thread steps it.
    """

    def __init__(self, params: ModelParams):
        self.params = params = check_model(params)
        self.spec = spec = params.spec
        self.seed = params.as_seed() if spec.is_seed else None
        self._workspaces = {}  # B -> StackWorkspace of one step
        self._h_next = {}  # the seed's rnn: B -> its (B, H) next state
        self._panels = None  # each layer's Whh packed for the recurrence (shared by the workspaces)
        self._layers = [params.layer(layer) for layer in range(spec.num_layers)]  # (Wxh, Whh, bh[, bhn]) each
        if self.seed is None:
            self.inputs_packed = [None] + [self._packed(Wxh) for Wxh, *_ in self._layers[1:]]
            self.head_packed = self._packed(params["Why"])
            self.WxhT = np.ascontiguousarray(self._layers[0][0].T)

    @staticmethod
    def _packed(W):
        """The panels of W.T (W (N, K)), as :func:`matmul_packed` takes them."""
        panels = empty_panels(W.shape[1], W.shape[0], W.dtype)
        pack_panels_of_transpose(np.ascontiguousarray(W), panels)
        return panels

    def _workspace(self, B) -> StackWorkspace:
        """The workspace of one step of B streams: its forward-pass arrays only (a server keeps one per batch
        size it has seen), the recurrence's packed weights shared."""
        ws = self._workspaces.get(B)
        if ws is None:
            ws = self._workspaces[B] = StackWorkspace(self.spec, 1, B, self.params.dtype, backward=False,
                                                      forward_panels=self._panels)
            if self._panels is None:
                self._panels = [a["forward_panels"] for a in ws.layers]
                for layer, panels in enumerate(self._panels):
                    cell_parts_kernels.pack_forward(panels, self._layers[layer][1], ws.unit_bounds,
                                                    ws.first_forward_panel)
        return ws

    def zero_state(self, B) -> tuple:
        """A zero state of B streams: a tuple of (L, B, H) arrays (h, and c for an LSTM)."""
        spec = self.spec
        return tuple(np.zeros((spec.num_layers, B, spec.hidden_size), self.params.dtype) for _ in spec.state_names)

    def step(self, logits, ids, state):
        """Feed ids (B,) int64, one per stream: ``state`` (a tuple of (L, B, H) arrays, C-contiguous) advances
        in place and logits (B, V) receives each stream's output logits."""
        B = ids.shape[0]
        if B == 0:
            return
        if self.seed is not None:
            h = state[0][0]
            h_next = self._h_next.get(B)
            if h_next is None:
                h_next = self._h_next[B] = np.empty_like(h)
            s = self.seed
            stream_kernels.step_rows(logits, h, h_next, ids, s.Wxh, s.Whh, s.Why, s.bh, s.by)
            return
        params, spec = self.params, self.spec
        ws = self._workspace(B)
        below = None
        for layer in range(spec.num_layers):
            a = ws.layers[layer]
            Wxh, Whh, bh, *bhn = self._layers[layer]
            a["hs"][:B] = state[0][layer]
            if spec.cell == "lstm":
                a["cs"][:B] = state[1][layer]
            if layer == 0:
                stack_kernels.embed_ids(a["gates"], self.WxhT, ids[:, None], bh)
            else:
                matmul_packed(below, self.inputs_packed[layer], Wxh.shape[0], a["gates"], False)
                stack_kernels.add_rows(a["gates"], bh)
            recurrence_forward(spec.cell, ws, a, Whh, *bhn, weights_packed=True)
            state[0][layer] = a["hs"][B:]
            if spec.cell == "lstm":
                state[1][layer] = a["cs"][B:]
            below = a["hs"][B:]
        matmul_packed(below, self.head_packed, spec.vocab_size, logits, False)
        stack_kernels.add_rows(logits, params["by"])
