"""Group ``train_step`` (PyTorch rows): the PyTorch CPU model a user would write.

``nn.RNN(tanh)`` over one-hot inputs + ``nn.Linear`` + summed cross-entropy +
``clip_grad_value_(5)`` + ``optim.Adagrad(lr=0.1, eps=1e-8)``, batch 1, T=25,
same hidden sizes, float64 and float32, torch held to one thread. Same windows
and hidden-state carrying as the fastrnn rows. Skipped when torch is missing
(it is an optional extra, never required).
"""
from __future__ import annotations

import numpy as np
import pytest

from ._support import (CLIP, HIDDEN_SIZES, LEARNING_RATE, SEQ_LENGTH, Windows, describe, plan)

try:
    import torch
except ImportError as error:  # not installed, or a broken install: either way no comparison
    pytest.skip(f"PyTorch is not importable (optional 'torch' extra), no PyTorch rows: {error}",
                allow_module_level=True)
nn = torch.nn
F = torch.nn.functional

from .torch_models import CharModel  # noqa: E402  (needs torch, checked above)

#: hidden size -> (rounds, steps per round); PyTorch at batch 1 is ~1.5-15 ms a step.
PLANS = {64: (60, 10), 100: (60, 10), 256: (40, 4), 512: (30, 2)}
TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class TorchStep:
    """One call = one training step on the next window, hidden state carried (detached)."""

    def __init__(self, ids, vocab_size, hidden_size, dtype):
        torch.manual_seed(0)
        self.vocab_size, self.dtype = vocab_size, dtype
        self.model = CharModel("rnn", vocab_size, hidden_size).to(dtype)
        self.optimizer = torch.optim.Adagrad(self.model.parameters(), lr=LEARNING_RATE, eps=1e-8)
        windows = Windows(ids, SEQ_LENGTH)
        self.inputs = torch.tensor(windows.inputs)  # a copy: the corpus ids are read-only
        self.targets = torch.tensor(windows.targets)
        self.position = 0
        self.h = torch.zeros(1, 1, hidden_size, dtype=dtype)

    def __call__(self):
        k = self.position
        self.position = (k + 1) % len(self.inputs)
        if k == 0:
            self.h = torch.zeros_like(self.h)
        logits, h = self.model(self.inputs[k].unsqueeze(1), self.h)  # (T, 1) ids, one-hot inside
        loss = F.cross_entropy(logits[:, 0], self.targets[k], reduction="sum")
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_value_(self.model.parameters(), CLIP)
        self.optimizer.step()
        self.h = h.detach()
        return loss.item()


@pytest.fixture
def torch_threads(threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    yield threads
    torch.set_num_threads(old)


@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES)
@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_torch_train_step(benchmark, corpus, torch_threads, dtype_name, hidden_size):
    ids, vocab_size = corpus
    benchmark.group = f"train_step H={hidden_size:03d}"
    step = TorchStep(ids, vocab_size, hidden_size, TORCH_DTYPES[dtype_name])
    describe(benchmark, kind="train_step", implementation="pytorch", dtype=np.dtype(dtype_name),
             hidden_size=hidden_size, vocab_size=vocab_size, seq_length=SEQ_LENGTH,
             chars_per_step=SEQ_LENGTH, threads=torch_threads, torch_version=torch.__version__)
    if not benchmark.disabled:
        step()  # first call allocates optimizer state
    loss = benchmark.pedantic(step, **plan(*PLANS[hidden_size]))
    assert np.isfinite(loss)
