"""Group ``forward_backward``: forward + BPTT + clip of one sequence, no update.

``loss_and_grads`` on the same windows and sizes as ``train_step``; the hidden
state is carried across windows, the parameters stay at their initial values.
"""
from __future__ import annotations

import pytest

from ._support import HIDDEN_SIZES, IMPLEMENTATION_IDS, IMPLEMENTATIONS, run_stream_benchmark

#: hidden size -> (rounds, sequences per round); costs are close to train_step's.
PLANS = {
    "reference": {64: (60, 10), 100: (60, 10), 256: (40, 4), 512: (30, 2)},
    "numba": {64: (100, 40), 100: (100, 40), 256: (80, 10), 512: (60, 4)},
}


@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=IMPLEMENTATION_IDS)
def test_forward_backward(benchmark, corpus, threads, implementation, hidden_size):
    benchmark.group = f"forward_backward H={hidden_size:03d}"
    run_stream_benchmark(benchmark, corpus, threads, "forward_backward", False, implementation,
                         hidden_size, PLANS)
