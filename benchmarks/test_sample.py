"""Group ``sample``: drawing 1,000 characters from the model (reference vs Numba).

One timed call = ``sample(params, h0, seed_ix, 1000, seed=k)``, the seed's
sampler (inverse CDF of the softmax), from freshly initialised parameters.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn

from ._support import HIDDEN_SIZES, IMPLEMENTATION_IDS, IMPLEMENTATIONS, describe, plan

SAMPLE_LENGTH = 1000

#: implementation name -> (rounds, calls per round); one reference call is ~15-60 ms.
PLANS = {"reference": (20, 1), "numba": (60, 1)}


@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=IMPLEMENTATION_IDS)
def test_sample(benchmark, corpus, threads, implementation, hidden_size):
    name, module, dtype, _ = implementation
    ids, vocab_size = corpus
    benchmark.group = f"sample H={hidden_size:03d}"
    params = fastrnn.init_params(vocab_size, hidden_size, seed=0, dtype=dtype)
    h0 = np.zeros(hidden_size, dtype)
    seed_ix = int(ids[0])
    describe(benchmark, kind="sample", implementation=name, dtype=dtype, hidden_size=hidden_size,
             vocab_size=vocab_size, seq_length=SAMPLE_LENGTH, chars_per_step=SAMPLE_LENGTH,
             threads=threads, forward_only=True)

    def draw():
        return module.sample(params, h0, seed_ix, SAMPLE_LENGTH, seed=1)

    if not benchmark.disabled:
        draw()  # compile before timing
    out = benchmark.pedantic(draw, **plan(*PLANS[name]))
    assert out.shape == (SAMPLE_LENGTH,)
