"""Everything fastrnn allocates for the kernels starts on a 64-byte cache line (see fastrnn._aligned)."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import batch, rnn
from fastrnn._aligned import ALIGNMENT, aligned, aligned_copy, aligned_empty, aligned_group, aligned_zeros, is_aligned


def line_aligned(a):
    return a.flags.c_contiguous and a.ctypes.data % ALIGNMENT == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
@pytest.mark.parametrize("shape", [0, 1, 7, (3, 5), (65, 100), (2, 26, 16)])
def test_aligned_allocations(shape, dtype):
    for _ in range(20):  # malloc hands out many offsets; every one must be corrected
        a = aligned_empty(shape, dtype)
        assert a.dtype == dtype and a.shape == np.empty(shape).shape
        z = aligned_zeros(shape, dtype)
        assert not z.any()
        if a.size:  # an empty array has no data to align
            assert line_aligned(a) and line_aligned(z)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_aligned_group_cuts_disjoint_aligned_arrays(dtype):
    shapes = [(65, 100), (3, 5), 0, (7,), np.int64(9), [2, 13]]
    for _ in range(20):
        group = aligned_group(shapes, dtype)
        assert [a.shape for a in group] == [np.empty(s).shape for s in shapes]
        assert all(a.dtype == dtype and line_aligned(a) for a in group if a.size)
        for k, a in enumerate(group):
            a[...] = k + 1  # each array written alone must not touch the others
        assert all((a == k + 1).all() for k, a in enumerate(group))


def test_seed_api_returns_fresh_aligned_gradients():
    """loss_and_grads without a workspace: every call gives new arrays, cache-line aligned."""
    p = fastrnn.init_params(65, 100, seed=0)
    ids = np.arange(26) % 65
    _, first, _ = rnn.loss_and_grads(p, ids[:-1], ids[1:], np.zeros(100))
    kept = first.copy()
    _, second, _ = rnn.loss_and_grads(p, ids[1:], ids[:-1], np.zeros(100))
    assert all(line_aligned(a) for a in (*first, *second))
    assert not any(np.shares_memory(a, b) for a in first for b in second)
    assert all(np.array_equal(a, b) for a, b in zip(first, kept))  # the second call left the first alone


def test_aligned_copy_and_passthrough():
    base = np.arange(40.0)
    unaligned = base[1:]  # 8 bytes past wherever base starts: never 64-aligned together with base
    if base.ctypes.data % ALIGNMENT == 0:
        assert not is_aligned(unaligned)
    c = aligned_copy(unaligned)
    assert line_aligned(c) and np.array_equal(c, unaligned)
    assert aligned(c) is c  # already aligned: the array itself
    f = aligned(c, np.float32)
    assert f.dtype == np.float32 and line_aligned(f) and np.array_equal(f, c.astype(np.float32))
    assert line_aligned(aligned(np.asfortranarray(np.ones((3, 4)))))


def test_params_and_workspaces_are_aligned():
    p = fastrnn.init_params(65, 100, seed=0)
    for group in (p, p.copy(), p.zeros_like(), p.astype(np.float32)):
        assert all(line_aligned(a) for a in group)
    ws = rnn.Workspace(65, 100, 25)
    assert all(line_aligned(a) for a in (*ws.kernel_arrays(), *ws.grads))
    for split in ("streams", "units"):
        bws = batch.BatchWorkspace(65, 100, 25, 8, threads=2, split=split)
        arrays = [a for chunk in bws.engine.chunks for layer in chunk.layers for a in layer.values()]
        assert all(line_aligned(a) for a in (*arrays, *bws.grads, bws.model.flat, bws.memory.flat))


def test_trainer_aligns_a_loaded_state(tmp_path):
    from fastrnn.checkpoint import load_checkpoint, save_checkpoint
    from fastrnn.corpus import load_corpus
    from fastrnn.config import TrainConfig
    from fastrnn.trainer import Trainer

    trainer = Trainer(load_corpus(None), TrainConfig(hidden_size=16, seq_length=10, seed=1))
    trainer.train(3)
    save_checkpoint(tmp_path / "c.npz", trainer)
    ckpt = load_checkpoint(tmp_path / "c.npz")
    resumed = Trainer(load_corpus(None), ckpt.config, state=ckpt.state)
    assert all(line_aligned(a) for a in (*resumed.params, *resumed.memory, resumed.hprev))
    for a, b in zip(resumed.params, trainer.params):
        assert np.array_equal(a, b)
