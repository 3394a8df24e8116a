"""Group ``mpi``: 2 MPI ranks x 1 thread against 1 process x 2 threads, same model and batch.

Points (the issue's): LSTM 2 x 512, B = 32, and the tanh cell (the seed's
kernels) at H = 512, B = 128; seq-length 64, float32 (the LSTM: Adam, clip by
norm 5; the tanh cell: Adagrad, clip 5, the seed's update). fastrnn in one
process: ``benchmark.pedantic(trainer.train, steps)`` with 2 threads. Two
ranks: ``mpiexec -n 2 python -m benchmarks.mpi_steps`` (the ``mpi`` extra)
times its own rounds after warming up (start-up and compile excluded) and
reports them in ``extra_info`` (``mpi_chars_per_s``, ``allreduce_ms``: mean
time of one allreduce of the flat gradient buffer as rank 0 sees it, its wait
for the other rank included; ``allreduce_bytes``); the timed call is the
whole launch. The target: 2 ranks >= 0.9 x the 2-thread process.

A plain ``pytest`` (timing off) smoke-runs both once, one step each, at tiny sizes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

import fastrnn
from fastrnn.config import TrainConfig
from fastrnn.trainer import Trainer

from ._support import QUICK, pinned_threads, plan
from .report.runs import MPI_RANKS, MPI_THREADS

#: (name, config fields, steps per timed call, rounds)
POINTS = [
    ("lstm-2x512-B32", dict(cell="lstm", num_layers=2, hidden_size=512, batch_size=32, optimizer="adam",
                           learning_rate=2e-3, clip=None, clip_norm=5.0), 2, 5),
    ("tanh-512-B128", dict(cell="rnn", num_layers=1, hidden_size=512, batch_size=128), 2, 5),
]
COMMON = dict(seq_length=64, dtype="float32", seed=0, val_fraction=0.05)
ROOT = Path(__file__).resolve().parent.parent


SMOKE = dict(hidden_size=16, batch_size=4, seq_length=8)  # timing off: tiny sizes, one step


def _config(fields, threads, smoke) -> TrainConfig:
    return TrainConfig(**{**COMMON, **fields, **(SMOKE if smoke else {})}, threads=threads)


def _mpiexec():
    found = shutil.which("mpiexec", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                          os.environ.get("PATH", "")]))
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        found = None
    if found is None:
        why = "the mpi extra (mpi4py, mpiexec) is not installed: pip install '.[mpi]'"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return found


@pytest.mark.parametrize("name, fields, steps, rounds", POINTS, ids=[p[0] for p in POINTS])
def test_one_process_two_threads(benchmark, name, fields, steps, rounds):
    benchmark.group = "mpi"
    steps = 1 if benchmark.disabled else steps
    with pinned_threads(2):
        trainer = Trainer(fastrnn.load_corpus(None), _config(fields, threads=2, smoke=benchmark.disabled))
        trainer.warm_up()
        benchmark.extra_info.update(implementation=MPI_THREADS, point=name, steps=steps,
                                    chars_per_call=steps * trainer.chars_per_step)
        benchmark.pedantic(trainer.train, args=(steps,), **plan(rounds))


@pytest.mark.parametrize("name, fields, steps, rounds", POINTS, ids=[p[0] for p in POINTS])
def test_two_ranks_one_thread(benchmark, tmp_path, name, fields, steps, rounds):
    benchmark.group = "mpi"
    mpiexec = _mpiexec()
    if benchmark.disabled:
        steps, rounds = 1, 1
    elif QUICK:
        rounds = plan(rounds)["rounds"]
    out = tmp_path / "mpi.json"
    config = json.dumps(asdict(_config(fields, threads=1, smoke=benchmark.disabled)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    command = [mpiexec, "-n", "2", sys.executable, "-m", "benchmarks.mpi_steps", config, str(out), str(steps),
               str(rounds)]

    def launch():
        subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=600)

    benchmark.pedantic(launch, rounds=1, iterations=1, warmup_rounds=0)
    result = json.loads(out.read_text())
    best = min(result["round_seconds"])
    calls = max(result["allreduce_calls"], 1)
    benchmark.extra_info.update(
        implementation=MPI_RANKS, point=name, steps=steps, rounds=len(result["round_seconds"]),
        mpi_round_seconds=result["round_seconds"], mpi_chars_per_s=steps * result["chars_per_step"] / best,
        allreduce_ms=1e3 * result["allreduce_seconds"] / calls, allreduce_bytes=result["allreduce_bytes"])
    assert result["ranks"] == 2 and result["allreduce_calls"] == steps * len(result["round_seconds"])
