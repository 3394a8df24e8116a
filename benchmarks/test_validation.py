"""Group ``validation``: forward-only loss over 100,000 characters.

``sequence_loss`` over the last 100,001 ids of tiny shakespeare (inputs and
targets shifted by one) from a zero hidden state: what evaluating a validation
split costs. Numba float64/float32 and the reference twin, one call per round;
the reference takes seconds per call at H=512, so it gets three rounds.
The untimed smoke run (plain ``pytest``) uses the first SMOKE_LENGTH
characters of that slice instead, to stay quick.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn

from ._support import HIDDEN_SIZES, IMPLEMENTATION_IDS, IMPLEMENTATIONS, describe, plan

VALIDATION_LENGTH = 100_000
SMOKE_LENGTH = 2_000
WARM_LENGTH = 1_000  # compiling needs one call of any length

#: implementation name -> rounds (one call of 100k characters each).
ROUNDS = {"reference": 3, "numba": 5}


@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=IMPLEMENTATION_IDS)
def test_validation(benchmark, corpus, threads, implementation, hidden_size):
    name, module, dtype, _ = implementation
    ids, vocab_size = corpus
    benchmark.group = f"validation H={hidden_size:03d}"
    params = fastrnn.init_params(vocab_size, hidden_size, seed=0, dtype=dtype)
    h0 = np.zeros(hidden_size, dtype)
    split = ids[-(VALIDATION_LENGTH + 1):]
    length = SMOKE_LENGTH if benchmark.disabled else VALIDATION_LENGTH
    inputs, targets = split[:length], split[1 : length + 1]
    describe(benchmark, kind="validation", implementation=name, dtype=dtype, hidden_size=hidden_size,
             vocab_size=vocab_size, seq_length=length, chars_per_step=length, threads=threads,
             forward_only=True)
    if not benchmark.disabled:
        module.sequence_loss(params, inputs[:WARM_LENGTH], targets[:WARM_LENGTH], h0)

    def evaluate():
        loss, _h = module.sequence_loss(params, inputs, targets, h0)
        return loss

    loss = benchmark.pedantic(evaluate, **plan(ROUNDS[name]))
    assert np.isfinite(loss)
