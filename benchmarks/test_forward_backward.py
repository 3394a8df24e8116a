"""Group ``forward_backward``: forward + BPTT + clip of one sequence, no update.

``loss_and_grads`` on the same windows and sizes as ``train_step``; the hidden
state is carried across windows, the parameters stay at their initial values.
``numba-api``: the seed's public API as a port of min-char-rnn calls it,
``fastrnn.loss_and_grads(params, inputs, targets, hprev)`` with no workspace, one
call per sequence, float64, against the reference twin's ``lossFun``
(``fastrnn.reference.loss_and_grads``) on the same windows.
"""
from __future__ import annotations

import pytest

from ._support import HIDDEN_SIZES, STEP_IMPLEMENTATION_IDS, STEP_IMPLEMENTATIONS, run_stream_benchmark

#: hidden size -> (rounds, sequences per round); costs are close to train_step's.
PLANS = {
    "reference": {64: (60, 10), 100: (60, 10), 256: (40, 4), 512: (30, 2)},
    "numba": {64: (100, 40), 100: (100, 40), 256: (80, 10), 512: (60, 4)},
    "numba-api": {64: (100, 40), 100: (100, 40), 256: (80, 10), 512: (60, 4)},
}


@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES)
@pytest.mark.parametrize("implementation", STEP_IMPLEMENTATIONS, ids=STEP_IMPLEMENTATION_IDS)
def test_forward_backward(benchmark, corpus, threads, implementation, hidden_size):
    benchmark.group = f"forward_backward H={hidden_size:03d}"
    run_stream_benchmark(benchmark, corpus, threads, "forward_backward", False, implementation,
                         hidden_size, PLANS)
