"""Minibatched training (fastrnn.batch, adapters over the engine): the reference twin, batch 1, splits.

The twin of one batched step: :func:`fastrnn.reference.loss_and_grads` on each
of the B streams separately, unclipped gradients summed and divided by B, then
clipped, then the seed's Adagrad. Loss: summed over the B * T characters / B.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import fastrnn
from fastrnn import batch
from fastrnn import reference as ref

from conftest import GRAD_NAMES, allclose_report, make_params

V, H, T = 11, 16, 25  # T = 25: long enough that the batch gradients of the "large" cases clip

#: (threads, split) of every workspace the tests cut: one chunk, chunks of streams, parts of the units.
SPLITS = [(1, "streams"), (2, "streams"), (2, "units"), (3, "units")]
SPLIT_IDS = [f"{split}-{threads}t" for threads, split in SPLITS]


def batch_data(B, T=T, V=V, H=H, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(0, V, (B, T), dtype=np.int64)
    targets = rng.integers(0, V, (B, T), dtype=np.int64)
    hprev = np.tanh(rng.standard_normal((B, H)) * 0.8).astype(dtype)
    return inputs, targets, hprev


def reference_batch(params, inputs, targets, hprev, clip=5.0):
    """The twin: per-stream reference results combined as a batched step combines them."""
    B = inputs.shape[0]
    loss, sums, h_last = 0.0, [np.zeros(a.shape) for a in params], []
    for b in range(B):
        l, g, h = ref.loss_and_grads(params, inputs[b], targets[b], hprev[b], clip=None)
        loss += l
        h_last.append(h)
        for s, x in zip(sums, g):
            s += x
    grads = [s / B for s in sums]
    if clip is not None:
        grads = [np.clip(g, -clip, clip) for g in grads]
    return loss / B, fastrnn.Params(*grads), np.array(h_last)


def assert_close(actual, expected, what, rtol=1e-10, atol_scale=1e-12):
    ok, worst = allclose_report(actual, expected, rtol, atol_scale)
    assert ok, f"{what}: worst |err| / tol = {worst:.3g}"


def assert_bit_identical(a, b, what):
    for name, x, y in zip(GRAD_NAMES, a, b):
        assert np.array_equal(x, y), f"{what}.{name} differs (max |diff| {np.max(np.abs(x - y)):.3g})"


def workspace(B, threads, split, dtype=np.float64, V=V):
    ws = batch.BatchWorkspace(V, H, T, B, dtype, threads=threads, split=split)
    assert ws.split == (split if B > 1 else "streams")
    return ws


# --- the reference twin ----------------------------------------------------------------

@pytest.mark.parametrize("threads, split", SPLITS, ids=SPLIT_IDS)
@pytest.mark.parametrize("B", [1, 3, 32])
@pytest.mark.parametrize("kind", ["tiny", "large"])
@pytest.mark.parametrize("clip", [5.0, None])
def test_loss_grads_match_reference(B, kind, threads, split, clip):
    params = make_params(kind, V, H, seed=B)
    inputs, targets, hprev = batch_data(B, seed=B)
    fast = batch.batch_loss_and_grads(params, inputs, targets, hprev, workspace(B, threads, split), clip)
    (l_f, g_f, h_f), (l_r, g_r, h_r) = fast, reference_batch(params, inputs, targets, hprev, clip)
    assert_close(l_f, l_r, "loss")
    for name, a, e in zip(GRAD_NAMES, g_f, g_r):
        assert_close(a, e, "d" + name)
    assert_close(h_f, h_r, "h_last")


@pytest.mark.parametrize("B", [3, 32])
def test_large_regime_saturates_and_clips(B):
    """The 'large' cases really exercise saturated tanh and an active clip (else they prove less)."""
    params = make_params("large", V, H, seed=B)
    inputs, targets, hprev = batch_data(B, seed=B)
    _, grads, h_last = batch.batch_loss_and_grads(params, inputs, targets, hprev)
    _, raw, _ = batch.batch_loss_and_grads(params, inputs, targets, hprev, clip=None)
    assert np.mean(np.abs(h_last) > 0.99) > 0.2
    assert any(np.any(np.abs(g) > 5.0) for g in raw)
    assert any(np.any(np.abs(g) == 5.0) for g in grads)


@pytest.mark.parametrize("threads, split", SPLITS, ids=SPLIT_IDS)
@pytest.mark.parametrize("B", [1, 3, 32])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_train_step_matches_reference(B, threads, split, dtype):
    """One step against the twin: at 1e-10 in float64, to float32's rounding in float32."""
    params = make_params("large", V, H, seed=11 + B)
    memory = fastrnn.Params(*(np.abs(a) * 0.1 for a in make_params("tiny", V, H, seed=3)))
    inputs, targets, hprev = batch_data(B, seed=11)
    p_ref, m_ref = params.copy(), memory.copy()
    loss_r, grads_r, h_r = reference_batch(p_ref, inputs, targets, hprev)
    ref.adagrad_update(p_ref, grads_r, m_ref, 0.1)
    p, m = params.astype(dtype), memory.astype(dtype)
    loss, h_last = batch.batch_train_step(p, m, inputs, targets, hprev.astype(dtype), 0.1,
                                          workspace=workspace(B, threads, split, dtype), threads=threads)
    tol = {} if dtype == np.float64 else dict(rtol=2e-3, atol_scale=2e-3)
    assert_close(loss, loss_r, "loss", **tol)
    assert_close(h_last, h_r, "h_last", **tol)
    assert h_last.dtype == dtype and all(a.dtype == dtype for a in p)
    for name, a, e in zip(GRAD_NAMES, p, p_ref):
        assert_close(a, e, name, **tol)
    for name, a, e in zip(GRAD_NAMES, m, m_ref):
        assert_close(a, e, "m" + name, **tol)


def test_comparison_can_fail():
    """Combining the streams' gradients any other way (here: mean over B - 1) is caught."""
    params = make_params("tiny", V, H, seed=5)
    inputs, targets, hprev = batch_data(3, seed=5)
    _, grads, _ = batch.batch_loss_and_grads(params, inputs, targets, hprev)
    _, twin, _ = reference_batch(params, inputs, targets, hprev)
    assert not allclose_report(grads.Whh, twin.Whh * 3 / 2)[0]
    assert not allclose_report(grads.Whh, twin.Whh * (1 + 1e-8))[0]


# --- batch 1 is the seed's path; more streams are the engine's ---------------------------

@pytest.mark.parametrize("kind", ["tiny", "large"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_of_one_is_bit_identical_to_train_step(kind, dtype):
    params = make_params(kind, V, H, seed=1, dtype=dtype)
    memory = params.zeros_like()
    inputs, targets, hprev = batch_data(1, seed=1, dtype=dtype)
    p1, m1 = params.copy(), memory.copy()
    pb, mb = params.copy(), memory.copy()
    ws = batch.BatchWorkspace(V, H, T, 1, dtype)
    for _ in range(3):
        l1, h1 = fastrnn.train_step(p1, m1, inputs[0], targets[0], hprev[0], 0.1)
        lb, hb = batch.batch_train_step(pb, mb, inputs, targets, hprev, 0.1, workspace=ws)
        assert l1 == lb
        assert np.array_equal(h1, hb[0])
        hprev = hb
    assert_bit_identical(pb, p1, "params")
    assert_bit_identical(mb, m1, "memory")
    l1, g1, h1 = fastrnn.loss_and_grads(params, inputs[0], targets[0], hprev[0])
    lb, gb, hb = batch.batch_loss_and_grads(params, inputs, targets, hprev)
    assert l1 == lb and np.array_equal(h1, hb[0])
    assert_bit_identical(gb, g1, "grads")


@pytest.mark.parametrize("threads, split", SPLITS[1:], ids=SPLIT_IDS[1:])
def test_batch_is_the_engine_bit_for_bit(threads, split):
    """B > 1 is the engine's step on the same ParallelWorkspace, bit for bit (the trainer's path)."""
    from fastrnn import chunks, steps
    from fastrnn.model import ModelParams
    from fastrnn.workspaces import ParallelWorkspace

    B = 6
    params = make_params("large", V, H, seed=21)
    inputs, targets, hprev = batch_data(B, seed=21)
    loss, grads, h_last = batch.batch_loss_and_grads(params, inputs, targets, hprev, workspace(B, threads, split),
                                                     clip=None)
    model = ModelParams.from_seed(params)
    pws = ParallelWorkspace(model.spec, T, B, np.float64, threads, split)
    state = (hprev.reshape(1, B, H).copy(),)
    with steps.step_threads(pws, threads):
        summed, g = chunks.chunked_loss_and_grads(model, pws, inputs, targets, state)
    assert loss == summed / B
    assert np.array_equal(h_last, state[0][0])
    assert_bit_identical(grads, g.as_seed(), "grads")


@pytest.mark.parametrize("B", [3, 32])
def test_splits_agree_to_rounding(B):
    """Workspaces cut differently sum in different orders: equal to 1e-12 (float64)."""
    params = make_params("large", V, H, seed=40 + B)
    inputs, targets, hprev = batch_data(B, seed=40)
    out = [batch.batch_loss_and_grads(params, inputs, targets, hprev, workspace(B, *s)) for s in SPLITS]
    (l1, g1, h1) = out[0]
    for loss, grads, h_last in out[1:]:
        assert abs(loss - l1) <= 1e-12 * abs(l1)
        assert np.max(np.abs(h_last - h1)) <= 1e-12
        for name, a, b in zip(GRAD_NAMES, grads, g1):
            assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b)), name


@pytest.mark.parametrize("threads, split", SPLITS, ids=SPLIT_IDS)
def test_same_workspace_same_bits(threads, split):
    params = make_params("large", V, H, seed=80)
    inputs, targets, hprev = batch_data(32, seed=80)
    ws = workspace(32, threads, split)
    results = [batch.batch_loss_and_grads(params, inputs, targets, hprev, workspace=ws) for _ in range(3)]
    for loss, grads, h_last in results[1:]:
        assert loss == results[0][0]
        assert np.array_equal(h_last, results[0][2])
        assert_bit_identical(grads, results[0][1], "grads")


def test_split_choice_and_errors():
    auto = lambda H, B, threads: batch.BatchWorkspace(65, H, 25, B, np.float32, threads=threads).split  # noqa: E731
    assert auto(512, 32, 2) == "units" and auto(512, 128, 2) == "units"  # the engine's rule: H >= 256
    assert auto(100, 32, 2) == "streams" and auto(512, 32, 1) == "streams"
    assert auto(512, 1, 2) == "streams"  # batch 1 stays the batch-1 path
    with pytest.raises(ValueError, match="split='units' needs threads"):
        batch.BatchWorkspace(V, H, T, 4, threads=1, split="units")
    with pytest.raises(ValueError, match="split must be one of"):
        batch.BatchWorkspace(V, H, T, 4, threads=2, split="rows")
    params = make_params("tiny", V, H)
    inputs, targets, hprev = batch_data(4)
    with pytest.raises(ValueError, match="contradicts the workspace's 2"):
        batch.batch_loss_and_grads(params, inputs, targets, hprev, workspace(4, 2, "streams"), threads=1)


def test_openmp_threading_layer_preferred():
    """Two threads run on Numba's OpenMP layer where it loads (~1.5 us a region, not ~85 us)."""
    code = textwrap.dedent("""
        import os
        os.environ.pop("NUMBA_THREADING_LAYER", None)
        import numba, numpy as np
        from fastrnn import batch, init_params
        try:
            import numba.np.ufunc.omppool  # noqa: F401
            has_omp = True
        except ImportError:
            has_omp = False
        p = init_params(5, 4, seed=0)
        ids = np.arange(4 * 3).reshape(4, 3) % 5
        ws = batch.BatchWorkspace(5, 4, 3, 4, threads=2, split="units")
        batch.batch_loss_and_grads(p, ids, ids, np.zeros((4, 4)), workspace=ws)
        print(has_omp, numba.threading_layer())
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    has_omp, layer = out.stdout.split()
    assert layer == ("omp" if has_omp == "True" else layer)
    assert layer in ("omp", "tbb", "workqueue")


def test_thread_settings_restored():
    params = make_params("tiny", V, H)
    inputs, targets, hprev = batch_data(4)
    before = numba.get_num_threads()
    for threads, split in SPLITS:
        batch.batch_loss_and_grads(params, inputs, targets, hprev, workspace(4, threads, split))
    assert numba.get_num_threads() == before


# --- many steps in one call ---------------------------------------------------------------

@pytest.mark.parametrize("threads, split", SPLITS, ids=SPLIT_IDS)
@pytest.mark.parametrize("B", [1, 4])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("per_stream", [True, False], ids=["stream-resets", "batch-resets"])
def test_train_steps_equals_repeated_train_step(B, threads, split, dtype, per_stream, corpus_ids):
    ids, vocab_size = corpus_ids
    k = 5
    params = make_params("tiny", vocab_size, H, seed=9, dtype=dtype)
    memory = params.zeros_like()
    rng = np.random.default_rng(0)
    starts = rng.integers(0, ids.size - T - 1, (k, B)).astype(np.int64)
    resets = rng.random((k, B)) < 0.3 if per_stream else rng.random(k) < 0.4
    ws = workspace(B, threads, split, dtype, vocab_size)

    p1, m1 = params.copy(), memory.copy()
    h = np.zeros((B, H), dtype)
    expected = []
    for s in range(k):
        h[resets[s]] = 0
        inputs = ids[starts[s][:, None] + np.arange(T)]
        targets = ids[starts[s][:, None] + np.arange(1, T + 1)]
        loss, h = batch.batch_train_step(p1, m1, inputs, targets, h, 0.1, workspace=ws)
        expected.append(loss)

    p2, m2 = params.copy(), memory.copy()
    h2 = np.zeros((B, H), dtype)
    ws2 = workspace(B, threads, split, dtype, vocab_size)
    losses = batch.batch_train_steps(p2, m2, ids, starts, resets, h2, 0.1, ws2)
    assert losses.tolist() == expected
    assert np.array_equal(h2, h)
    assert_bit_identical(p2, p1, "params")
    assert_bit_identical(m2, m1, "memory")
    assert_bit_identical(ws2.grads, ws.grads, "last step's clipped gradient")


# --- argument checks --------------------------------------------------------------------------

def test_bad_arguments_raise_value_errors():
    params = make_params("tiny", V, H)
    inputs, targets, hprev = batch_data(3)
    f = batch.batch_loss_and_grads
    with pytest.raises(ValueError, match="inputs"):
        f(params, inputs[0], targets, hprev)
    with pytest.raises(ValueError, match="targets must have shape"):
        f(params, inputs, targets[:, :-1], hprev)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        f(params, inputs + V, targets, hprev)
    with pytest.raises(ValueError, match="integer ids"):
        f(params, inputs.astype(float), targets, hprev)
    with pytest.raises(ValueError, match="hprev must have shape"):
        f(params, inputs, targets, hprev[:2])
    with pytest.raises(ValueError, match="threads"):
        f(params, inputs, targets, hprev, threads=0)
    with pytest.raises(ValueError, match="clip"):
        f(params, inputs, targets, hprev, clip=-1)
    with pytest.raises(ValueError, match="workspace is for batch"):
        f(params, inputs, targets, hprev, workspace=batch.BatchWorkspace(V, H, T, 4))
    with pytest.raises(ValueError, match="does not fit"):
        f(params, inputs, targets, hprev, workspace=batch.BatchWorkspace(V, H, T, 3, np.float32))
    with pytest.raises(ValueError, match="learning_rate"):
        batch.batch_train_step(params, params.zeros_like(), inputs, targets, hprev, 0.0)
    with pytest.raises(ValueError, match="batch_size"):
        batch.BatchWorkspace(V, H, T, 0)


def test_train_steps_bad_arguments(corpus_ids):
    ids, vocab_size = corpus_ids
    params = make_params("tiny", vocab_size, H)
    memory = params.zeros_like()
    ws = batch.BatchWorkspace(vocab_size, H, T, 2)
    h = np.zeros((2, H))
    starts = np.zeros((3, 2), np.int64)
    resets = np.zeros(3, bool)
    g = batch.batch_train_steps
    with pytest.raises(ValueError, match="starts"):
        g(params, memory, ids, starts[:, :1], resets, h, 0.1, ws)
    with pytest.raises(ValueError, match="resets"):
        g(params, memory, ids, starts, resets[:2], h, 0.1, ws)
    with pytest.raises(ValueError, match="every start"):
        g(params, memory, ids, starts + ids.size - T, resets, h, 0.1, ws)
    with pytest.raises(ValueError, match="data must be"):
        g(params, memory, ids.astype(np.int32), starts, resets, h, 0.1, ws)
    with pytest.raises(ValueError, match="hprev"):
        g(params, memory, ids, starts, resets, np.zeros((2, H), np.float32), 0.1, ws)
    with pytest.raises(ValueError, match="workspace"):
        g(params, memory, ids, starts, resets, h, 0.1, None)
    with pytest.raises(ValueError, match="learning_rate"):
        g(params, memory, ids, starts, resets, h, -1.0, ws)
    with pytest.raises(ValueError, match="clip"):
        g(params, memory, ids, starts, resets, h, 0.1, ws, clip=-1)


# --- a fresh process (kernels loaded from Numba's cache) ------------------------------------

def test_train_steps_first_call_in_fresh_process():
    """batch_train_steps as the first call of a new process, 1 and 2 threads, both dtypes, twice (the second
    run loads every kernel from the cache)."""
    code = textwrap.dedent("""
        import numpy as np
        import fastrnn
        from fastrnn import batch
        for dtype in (np.float32, np.float64):
            for threads, split in ((1, "streams"), (2, "units")):
                p = fastrnn.init_params(7, 8, seed=0, dtype=dtype)
                ws = batch.BatchWorkspace(7, 8, 5, 3, dtype, threads, split)
                data = np.arange(100, dtype=np.int64) % 7
                starts = np.arange(6, dtype=np.int64).reshape(2, 3) * 10
                losses = batch.batch_train_steps(p, p.zeros_like(), data, starts, np.zeros(2, bool),
                                                 np.zeros((3, 8), dtype), 0.1, ws)
                assert np.all(np.isfinite(losses))
        print("ok")
    """)
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
