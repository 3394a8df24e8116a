"""Group ``train_step``: one single-stream training step (loss, grads, clip, Adagrad).

Reference twin vs Numba float64 vs Numba float32 (with a reused ``fastrnn.Workspace``)
vs ``numba-api`` (``fastrnn.train_step`` called as a port of the seed calls it: no
workspace, float64), H in 64, 100, 256, 512, T=25, V=65, batch 1, one thread;
consecutive 25-character windows of tiny shakespeare with the hidden state carried
across steps, as training does.
"""
from __future__ import annotations

import pytest

from ._support import HIDDEN_SIZES, STEP_IMPLEMENTATION_IDS, STEP_IMPLEMENTATIONS, run_stream_benchmark

#: hidden size -> (rounds, steps per round). The reference is slow at H=512
#: (~10-20 ms a step): fewer rounds, same problem.
PLANS = {
    "reference": {64: (60, 10), 100: (60, 10), 256: (40, 4), 512: (30, 2)},
    "numba": {64: (100, 40), 100: (100, 40), 256: (80, 10), 512: (60, 4)},
    "numba-api": {64: (100, 40), 100: (100, 40), 256: (80, 10), 512: (60, 4)},
}


@pytest.mark.parametrize("hidden_size", HIDDEN_SIZES)
@pytest.mark.parametrize("implementation", STEP_IMPLEMENTATIONS, ids=STEP_IMPLEMENTATION_IDS)
def test_train_step(benchmark, corpus, threads, implementation, hidden_size):
    benchmark.group = f"train_step H={hidden_size:03d}"
    run_stream_benchmark(benchmark, corpus, threads, "train_step", True, implementation, hidden_size,
                         PLANS)
