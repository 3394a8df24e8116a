"""Minibatched training (fastrnn.batch): equivalence with the reference twin, batch 1 and thread counts.

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
from fastrnn import batch, batch_kernels
from fastrnn import reference as ref

from conftest import GRAD_NAMES, allclose_report, make_params

V, H, T = 11, 16, 25  # T = 25: long enough that the batch gradients of the "large" cases clip


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
    return worst


def assert_results_close(fast, twin, **tol):
    (l_f, g_f, h_f), (l_r, g_r, h_r) = fast, twin
    assert_close(l_f, l_r, "loss", **tol)
    for name, a, e in zip(GRAD_NAMES, g_f, g_r):
        assert_close(a, e, "d" + name, **tol)
    assert_close(h_f, h_r, "h_last", **tol)


def assert_bit_identical(a, b, what):
    for name, x, y in zip(GRAD_NAMES, a, b):
        assert np.array_equal(x, y), f"{what}.{name} differs (max |diff| {np.max(np.abs(x - y)):.3g})"


# --- the reference twin ----------------------------------------------------------------

@pytest.mark.parametrize("B", [1, 3, 32])
@pytest.mark.parametrize("kind", ["tiny", "large"])
@pytest.mark.parametrize("threads", [1, 2])
def test_loss_grads_match_reference(B, kind, threads):
    params = make_params(kind, V, H, seed=B)
    inputs, targets, hprev = batch_data(B, seed=B)
    fast = batch.batch_loss_and_grads(params, inputs, targets, hprev, threads=threads)
    assert_results_close(fast, reference_batch(params, inputs, targets, hprev))


@pytest.mark.parametrize("B", [1, 3, 32])
def test_unclipped_match_reference(B):
    params = make_params("large", V, H, seed=7)
    inputs, targets, hprev = batch_data(B, seed=7)
    fast = batch.batch_loss_and_grads(params, inputs, targets, hprev, clip=None)
    assert_results_close(fast, reference_batch(params, inputs, targets, hprev, clip=None))


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


@pytest.mark.parametrize("B", [1, 3, 32])
@pytest.mark.parametrize("threads,split", [(1, "streams"), (2, "streams"), (2, "columns"), (4, "columns")])
def test_train_step_matches_reference(B, threads, split):
    params = make_params("large", V, H, seed=11 + B)
    memory = fastrnn.Params(*(np.abs(a) * 0.1 for a in make_params("tiny", V, H, seed=3)))
    inputs, targets, hprev = batch_data(B, seed=11)
    p_ref, m_ref = params.copy(), memory.copy()
    loss_r, grads_r, h_r = reference_batch(p_ref, inputs, targets, hprev)
    ref.adagrad_update(p_ref, grads_r, m_ref, 0.1)
    p, m = params.copy(), memory.copy()
    ws = batch.BatchWorkspace(V, H, T, B, threads=threads, split=split)
    assert ws.split == split
    loss, h_last = batch.batch_train_step(p, m, inputs, targets, hprev, 0.1, workspace=ws, threads=threads)
    assert_close(loss, loss_r, "loss")
    assert_close(h_last, h_r, "h_last")
    for name, a, e in zip(GRAD_NAMES, p, p_ref):
        assert_close(a, e, name)
    for name, a, e in zip(GRAD_NAMES, m, m_ref):
        assert_close(a, e, "m" + name)


def test_comparison_can_fail():
    """Combining the streams' gradients any other way (here: mean over B - 1) is caught."""
    params = make_params("tiny", V, H, seed=5)
    inputs, targets, hprev = batch_data(3, seed=5)
    _, grads, _ = batch.batch_loss_and_grads(params, inputs, targets, hprev)
    _, twin, _ = reference_batch(params, inputs, targets, hprev)
    assert not allclose_report(grads.Whh, twin.Whh * 3 / 2)[0]
    assert not allclose_report(grads.Whh, twin.Whh * (1 + 1e-8))[0]


# --- batch 1 is the unbatched path -------------------------------------------------------

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


def test_batch_of_one_loss_and_grads_bit_identical():
    params = make_params("large", V, H, seed=2)
    inputs, targets, hprev = batch_data(1, seed=2)
    l1, g1, h1 = fastrnn.loss_and_grads(params, inputs[0], targets[0], hprev[0])
    lb, gb, hb = batch.batch_loss_and_grads(params, inputs, targets, hprev)
    assert l1 == lb and np.array_equal(h1, hb[0])
    assert_bit_identical(gb, g1, "grads")


# --- threads --------------------------------------------------------------------------

@pytest.mark.parametrize("B", [2, 5, 32])
def test_same_chunks_bit_identical_at_any_thread_count(B):
    """A workspace's partition fixes the arithmetic: 1 or 2 threads running it give the same bits."""
    params = make_params("large", V, H, seed=B)
    inputs, targets, hprev = batch_data(B, seed=B)
    ws = batch.BatchWorkspace(V, H, T, B, np.float64, threads=2)
    assert ws.n_chunks == 2
    results = [batch.batch_loss_and_grads(params, inputs, targets, hprev, workspace=ws, threads=n)
               for n in (1, 2, 1)]
    for loss, grads, h_last in results[1:]:
        assert loss == results[0][0]
        assert np.array_equal(h_last, results[0][2])
        assert_bit_identical(grads, results[0][1], "grads")


@pytest.mark.parametrize("B", [3, 32])
def test_one_vs_two_threads_within_rounding(B):
    """Workspaces cut for 1 and for 2 threads sum in different orders: equal to 1e-12 (float64)."""
    params = make_params("large", V, H, seed=40 + B)
    memory = params.zeros_like()
    inputs, targets, hprev = batch_data(B, seed=40)
    out = []
    for threads in (1, 2):
        p, m = params.copy(), memory.copy()
        loss, h_last = batch.batch_train_step(p, m, inputs, targets, hprev, 0.1, threads=threads)
        out.append((loss, h_last, p))
    (l1, h1, p1), (l2, h2, p2) = out
    assert abs(l1 - l2) <= 1e-12 * abs(l1)
    assert np.max(np.abs(h1 - h2)) <= 1e-12
    for name, a, b in zip(GRAD_NAMES, p1, p2):
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(a)), name


# --- split by columns (the recurrence shared by all streams) ---------------------------------

def columns_workspace(B, dtype=np.float64, threads=2):
    ws = batch.BatchWorkspace(V, H, T, B, dtype, threads=threads, split="columns")
    assert ws.split == "columns" and ws.n_chunks == threads
    return ws


@pytest.mark.parametrize("B", [2, 3, 32])
@pytest.mark.parametrize("kind", ["tiny", "large"])
@pytest.mark.parametrize("clip", [5.0, None])
def test_columns_split_matches_reference(B, kind, clip):
    params = make_params(kind, V, H, seed=60 + B)
    inputs, targets, hprev = batch_data(B, seed=60 + B)
    fast = batch.batch_loss_and_grads(params, inputs, targets, hprev, workspace=columns_workspace(B), clip=clip)
    assert_results_close(fast, reference_batch(params, inputs, targets, hprev, clip=clip))


def test_columns_split_bit_identical_at_any_thread_count():
    params = make_params("large", V, H, seed=80)
    inputs, targets, hprev = batch_data(32, seed=80)
    ws = columns_workspace(32)
    results = [batch.batch_loss_and_grads(params, inputs, targets, hprev, workspace=ws, threads=n) for n in (1, 2, 1)]
    for loss, grads, h_last in results[1:]:
        assert loss == results[0][0]
        assert np.array_equal(h_last, results[0][2])
        assert_bit_identical(grads, results[0][1], "grads")


def test_columns_and_streams_agree_to_rounding():
    params = make_params("large", V, H, seed=81)
    inputs, targets, hprev = batch_data(32, seed=81)
    wide = batch.batch_loss_and_grads(params, inputs, targets, hprev, workspace=columns_workspace(32))
    chunked = batch.batch_loss_and_grads(params, inputs, targets, hprev,
                                         workspace=batch.BatchWorkspace(V, H, T, 32, threads=2, split="streams"))
    assert abs(wide[0] - chunked[0]) <= 1e-12 * abs(wide[0])
    assert np.max(np.abs(wide[2] - chunked[2])) <= 1e-12
    for name, a, b in zip(GRAD_NAMES, wide[1], chunked[1]):
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(a)), name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_columns_split_train_steps_equals_repeated_train_step(dtype, corpus_ids):
    ids, vocab_size = corpus_ids
    B, k = 6, 4
    params = make_params("tiny", vocab_size, H, seed=82, dtype=dtype)
    rng = np.random.default_rng(1)
    starts = rng.integers(0, ids.size - T - 1, (k, B)).astype(np.int64)
    resets = rng.random((k, B)) < 0.3
    p1, m1, h1 = params.copy(), params.zeros_like(), np.zeros((B, H), dtype)
    ws1 = batch.BatchWorkspace(vocab_size, H, T, B, dtype, threads=2, split="columns")
    expected = []
    for s in range(k):
        h1[resets[s]] = 0
        inputs = ids[starts[s][:, None] + np.arange(T)]
        targets = ids[starts[s][:, None] + np.arange(1, T + 1)]
        loss, h1 = batch.batch_train_step(p1, m1, inputs, targets, h1, 0.1, workspace=ws1)
        expected.append(loss)
    p2, m2, h2 = params.copy(), params.zeros_like(), np.zeros((B, H), dtype)
    ws2 = batch.BatchWorkspace(vocab_size, H, T, B, dtype, threads=2, split="columns")
    losses = batch.batch_train_steps(p2, m2, ids, starts, resets, h2, 0.1, ws2)
    assert losses.tolist() == expected
    assert np.array_equal(h2, h1)
    assert_bit_identical(p2, p1, "params")
    assert_bit_identical(m2, m1, "memory")
    assert_bit_identical(ws2.grads, ws1.grads, "last step's clipped gradient")


def test_split_choice_and_errors():
    auto = lambda H, B, threads: batch.BatchWorkspace(65, H, 25, B, np.float32, threads=threads).split  # noqa: E731
    assert auto(512, 32, 2) == "columns"  # few streams per thread, large H
    assert auto(512, 128, 2) == "streams" and auto(100, 32, 2) == "streams" and auto(512, 32, 1) == "streams"
    assert auto(512, 1, 2) == "streams"  # batch 1 stays the batch-1 path
    for threads, hidden in ((1, 16), (3, 16)):
        with pytest.raises(ValueError, match="split='columns' needs threads"):
            batch.BatchWorkspace(V, hidden, T, 4, threads=threads, split="columns")
    with pytest.raises(ValueError, match="split must be one of"):
        batch.BatchWorkspace(V, H, T, 4, threads=2, split="rows")


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
        batch.batch_loss_and_grads(p, ids, ids, np.zeros((4, 4)), threads=2)
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
    batch.batch_loss_and_grads(params, inputs, targets, hprev, threads=2)
    batch.batch_loss_and_grads(params, inputs, targets, hprev, threads=1)
    assert numba.get_num_threads() == before


# --- many steps in one call ---------------------------------------------------------------

@pytest.mark.parametrize("B", [1, 4])  # B = 1 runs the batch-1 kernel loop inside batch_train_steps
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_train_steps_equals_repeated_train_step(B, threads, dtype, corpus_ids):
    ids, vocab_size = corpus_ids
    k = 5
    params = make_params("tiny", vocab_size, H, seed=9, dtype=dtype)
    memory = params.zeros_like()
    rng = np.random.default_rng(0)
    starts = rng.integers(0, ids.size - T - 1, (k, B)).astype(np.int64)
    resets = rng.random((k, B)) < 0.3
    ws = batch.BatchWorkspace(vocab_size, H, T, B, dtype, threads=threads)

    p1, m1 = params.copy(), memory.copy()
    h = np.zeros((B, H), dtype)
    expected = []
    for s in range(k):
        h[resets[s]] = 0
        inputs = ids[starts[s][:, None] + np.arange(T)]
        targets = ids[starts[s][:, None] + np.arange(1, T + 1)]
        loss, h = batch.batch_train_step(p1, m1, inputs, targets, h, 0.1, workspace=ws, threads=threads)
        expected.append(loss)

    p2, m2 = params.copy(), memory.copy()
    h2 = np.zeros((B, H), dtype)
    ws2 = batch.BatchWorkspace(vocab_size, H, T, B, dtype, threads=threads)
    losses = batch.batch_train_steps(p2, m2, ids, starts, resets, h2, 0.1, ws2, threads=threads)
    assert losses.tolist() == expected
    assert np.array_equal(h2, h)
    assert_bit_identical(p2, p1, "params")
    assert_bit_identical(m2, m1, "memory")
    assert_bit_identical(ws2.grads, ws.grads, "last step's clipped gradient")


def test_train_steps_reset_all_streams_form(corpus_ids):
    ids, vocab_size = corpus_ids
    B, k = 3, 3
    params = make_params("tiny", vocab_size, H, seed=4)
    starts = np.arange(k * B, dtype=np.int64).reshape(k, B) * 50
    ws = batch.BatchWorkspace(vocab_size, H, T, B)
    out = []
    for resets in (np.array([False, True, False]), np.array([[False] * B, [True] * B, [False] * B])):
        p, m, h = params.copy(), params.zeros_like(), np.full((B, H), 0.3)
        out.append((batch.batch_train_steps(p, m, ids, starts, resets, h, 0.1, ws), h, p))
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])


# --- float32 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("B", [1, 32])
def test_float32_tracks_float64_one_step(B, corpus_ids):
    ids, vocab_size = corpus_ids
    params64 = make_params("tiny", vocab_size, 32, seed=8)
    params32 = params64.astype(np.float32)
    starts = np.arange(B, dtype=np.int64) * 300
    inputs = ids[starts[:, None] + np.arange(25)]
    targets = ids[starts[:, None] + np.arange(1, 26)]
    hprev = np.tanh(np.random.default_rng(1).standard_normal((B, 32)) * 0.5)
    l64, g64, h64 = batch.batch_loss_and_grads(params64, inputs, targets, hprev)
    l32, g32, h32 = batch.batch_loss_and_grads(params32, inputs, targets, hprev.astype(np.float32))
    assert h32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32)
    assert abs(l32 - l64) <= 1e-4 * abs(l64)
    assert np.max(np.abs(h32 - h64)) <= 1e-4
    for name, a, e in zip(GRAD_NAMES, g32, g64):
        assert np.max(np.abs(a - e)) <= 1e-4 * np.max(np.abs(e)), name
    p64, p32 = params64.copy(), params32.copy()
    batch.batch_train_step(p64, p64.zeros_like(), inputs, targets, hprev, 0.1)
    batch.batch_train_step(p32, p32.zeros_like(), inputs, targets, hprev.astype(np.float32), 0.1)
    for name, a, e in zip(GRAD_NAMES, p32, p64):
        assert a.dtype == np.float32
        assert np.max(np.abs(a - e)) <= 1e-4 * np.max(np.abs(e)), name


# --- the vectorised tanh ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tanh_within_two_ulp(dtype):
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.standard_normal(20000) * 3, rng.standard_normal(2000) * 1e-6,
                        np.linspace(-25, 25, 5001), [0.0, -0.0, 1e-300, 5e-324, 19.0, 21.0, np.finfo(dtype).max]]).astype(dtype)
    got, x = v.copy(), np.zeros_like(v)
    batch_kernels.tanh_add_inplace(got, x)
    exp = np.tanh((v + x).astype(np.float64))  # v + x: -0.0 + 0.0 is +0.0
    err = np.abs(got - exp) / np.maximum(np.abs(exp), np.finfo(dtype).tiny)
    assert np.max(err) <= 2.5 * np.finfo(dtype).eps
    assert np.array_equal(np.signbit(got), np.signbit(exp.astype(dtype)))


def test_tanh_special_values():
    v = np.array([np.inf, -np.inf, np.nan, 40.0, -40.0, -0.0])
    batch_kernels.tanh_add_inplace(v, np.full(6, -0.0))
    assert v[0] == 1 and v[1] == -1 and np.isnan(v[2]) and v[3] == 1 and v[4] == -1
    assert v[5] == 0 and np.signbit(v[5])


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


# --- a fresh process (kernels loaded from Numba's cache) ------------------------------------

def test_train_steps_first_call_in_fresh_process():
    """batch_train_steps as the first call of a new process, one thread, both dtypes.

    Regression: the cached multi-step kernel links the parallel one, and crashed
    (null jump) when Numba's thread pool had never been launched.
    """
    code = textwrap.dedent("""
        import numpy as np
        import fastrnn
        from fastrnn import batch
        for dtype in (np.float32, np.float64):
            p = fastrnn.init_params(7, 8, seed=0, dtype=dtype)
            ws = batch.BatchWorkspace(7, 8, 5, 3, dtype)
            data = np.arange(100, dtype=np.int64) % 7
            starts = np.arange(6, dtype=np.int64).reshape(2, 3) * 10
            losses = batch.batch_train_steps(p, p.zeros_like(), data, starts, np.zeros(2, bool),
                                             np.zeros((3, 8), dtype), 0.1, ws)
            assert np.all(np.isfinite(losses))
        print("ok")
    """)
    for _ in range(2):  # the second run loads every kernel from the cache
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
