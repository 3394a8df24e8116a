"""Group ``cells``: training steps of LSTM and GRU stacks, fastrnn beside PyTorch on the same model.

fastrnn: a :class:`fastrnn.Trainer` on tiny shakespeare (``--model``,
``--num-layers``, ``--hidden-size``, ``--batch-size``, ``--seq-length``, Adam
2e-3, clip by global norm 5, float32 or float64), one timed call = ``steps`` steps.
PyTorch: ``nn.Embedding`` (an identity lookup, the same as one-hot input) +
``nn.LSTM`` / ``nn.GRU`` + ``nn.Linear``, cross-entropy summed over the B * T
characters and divided by B, ``clip_grad_norm_(5)``, ``Adam(lr=2e-3)``, the
same windows, dtype and number of steps per call, hidden state carried.
Threads pinned in code (numba and every BLAS pool; ``torch.set_num_threads``).

Rows carry ``kind="cells"`` and the flops per character of the stack
(``_support.cell_train_flops_per_char``); ``python -m benchmarks.report``
tabulates them (chars/s, x PyTorch, % of the GEMM peak of the same dtype and
threads) and checks the cells bars.
"""
from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np
import pytest

import fastrnn
from fastrnn.config import TrainConfig
from fastrnn.trainer import Trainer

from fastrnn.corpus import held_out_count

from ._support import CELL_FLOPS_FORMULA, QUICK, blas_threads, cell_train_flops_per_char, pinned_threads, plan

try:
    import torch
except ImportError as error:
    torch, TORCH_MISSING = None, f"PyTorch is not importable (optional 'torch' extra): {error}"
else:
    TORCH_MISSING = None
    from .torch_models import CharModel, detach, zero_state

#: (cell, layers, H, B, T, steps per timed call, rounds, dtype)
POINTS = [("lstm", 2, 128, 50, 50, 4, 8, "float32"), ("lstm", 2, 512, 32, 64, 1, 6, "float32"),
          ("gru", 2, 512, 32, 64, 1, 6, "float32"), ("lstm", 2, 128, 50, 50, 4, 8, "float64")]
THREADS = (1, 2)
LEARNING_RATE = 2e-3
CLIP_NORM = 5.0


VAL_FRACTION = 0.05


def _trainer(cell, layers, H, B, T, threads, dtype):
    corpus = fastrnn.load_corpus(None)
    config = TrainConfig(hidden_size=H, seq_length=T, batch_size=B, cell=cell, num_layers=layers,
                         optimizer="adam", learning_rate=LEARNING_RATE, clip=None, clip_norm=CLIP_NORM,
                         dtype=dtype, seed=0, threads=threads, val_fraction=VAL_FRACTION)
    trainer = Trainer(corpus, config)
    trainer.warm_up()
    return trainer


class TorchSteps:
    """PyTorch's model on the trainer's windows (B shards of the training split): ``steps`` Adam steps a call."""

    def __init__(self, cell, layers, H, B, T, steps, dtype):
        corpus = fastrnn.load_corpus(None)
        ids = np.asarray(corpus.ids, np.int64)
        n_train = ids.size - held_out_count(ids.size, VAL_FRACTION)
        V = len(corpus.vocab)
        torch.manual_seed(0)
        torch_dtype = getattr(torch, dtype)
        self.model = CharModel(cell, V, H, layers, input="embedding", batch_first=True).to(torch_dtype)
        self.parameters = self.model.trained_parameters()
        self.opt = torch.optim.Adam(self.parameters, lr=LEARNING_RATE)
        self.cell, self.B, self.T, self.steps, self.V = cell, B, T, steps, V
        self.ids = torch.from_numpy(ids[:n_train])
        self.shard = n_train // B
        self.p = 0
        self.state = zero_state(cell, layers, B, H, dtype=torch_dtype)

    def __call__(self):
        B, T = self.B, self.T
        for _ in range(self.steps):
            if self.p + T + 1 >= self.shard:
                self.p = 0
            starts = torch.arange(B) * self.shard + self.p
            windows = self.ids[starts[:, None] + torch.arange(T + 1)]
            self.p += T
            logits, state = self.model(windows[:, :-1], self.state)
            self.state = detach(state)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, self.V), windows[:, 1:].reshape(-1),
                                                     reduction="sum") / B
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.parameters, CLIP_NORM)
            self.opt.step()


def each_point(test):
    """Parametrize a benchmark over POINTS x THREADS (the same ids for fastrnn and PyTorch)."""
    test = pytest.mark.parametrize("cell, layers, H, B, T, steps, rounds, dtype", POINTS,
                                   ids=[f"{c}{l}x{h}-B{b}-T{t}-{d}" for c, l, h, b, t, _, _, d in POINTS])(test)
    return pytest.mark.parametrize("threads", THREADS)(test)


def _smoke_sized(benchmark, H, B, T):
    """Tiny sizes when timing is off (a plain ``pytest`` smoke-calls each benchmark once)."""
    return (16, 4, 8) if benchmark.disabled else (H, B, T)


@lru_cache(maxsize=1)
def _vocab_size():
    """V of the default corpus (tiny shakespeare), which both sides train on."""
    return len(fastrnn.load_corpus(None).vocab)


def _info(benchmark, implementation, cell, layers, H, B, T, threads, steps, dtype):
    """What the report reads: the point, characters per timed call, flops per character, threads seen."""
    V = _vocab_size()
    benchmark.extra_info.update(kind="cells", implementation=implementation, cell=cell, num_layers=layers,
                                hidden_size=H, vocab_size=V, batch_size=B, seq_length=T, threads=threads,
                                dtype=dtype, chars_per_step=steps * B * T,
                                flops_per_char=cell_train_flops_per_char(cell, layers, H, V),
                                flops_formula=CELL_FLOPS_FORMULA, quick=QUICK,
                                numba_threads=numba.get_num_threads(), blas_threads=blas_threads())


@each_point
def test_fastrnn_cells(benchmark, cell, layers, H, B, T, steps, rounds, dtype, threads):
    benchmark.group = "cells"
    H, B, T = _smoke_sized(benchmark, H, B, T)
    with pinned_threads(threads):
        trainer = _trainer(cell, layers, H, B, T, threads, dtype)
        _info(benchmark, "fastrnn", cell, layers, H, B, T, threads, steps, dtype)
        benchmark.pedantic(trainer.train, args=(steps,), **plan(rounds))


@pytest.mark.skipif(torch is None, reason=TORCH_MISSING or "")
@each_point
def test_pytorch_cells(benchmark, cell, layers, H, B, T, steps, rounds, dtype, threads):
    benchmark.group = "cells"
    H, B, T = _smoke_sized(benchmark, H, B, T)
    torch.set_num_threads(threads)
    with pinned_threads(threads):
        call = TorchSteps(cell, layers, H, B, T, steps, dtype)
        call()  # warm up (oneDNN primitives)
        _info(benchmark, "pytorch", cell, layers, H, B, T, threads, steps, dtype)
        benchmark.pedantic(call, **plan(rounds))
