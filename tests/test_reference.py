"""The first links of the chain of trust: the reference twin is the seed's arithmetic, and its
unclipped gradients are the derivatives of its loss (central finite differences, float64).

Nothing here uses the fast path except the last test, which holds it to the same
finite-difference check, independently of the reference.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import Params
from fastrnn import reference as ref

from conftest import GRAD_NAMES, allclose_report, large_params, random_hidden, random_ids

FD_EPS = 1e-5


def independent_loss(params, inputs, targets, hprev):
    """Summed cross-entropy written from the spec, not from either implementation:
    log-softmax via log-sum-exp, float64, 1-D vectors."""
    Wxh, Whh, Why, bh, by = (np.asarray(a, np.float64).reshape(a.shape[0], -1).squeeze(-1)
                             if a.ndim == 2 and a.shape[1] == 1 else np.asarray(a, np.float64)
                             for a in params)
    h = np.asarray(hprev, np.float64).ravel()
    loss = 0.0
    for x, y in zip(inputs, targets):
        h = np.tanh(Wxh[:, x] + Whh @ h + bh)
        z = Why @ h + by
        m = z.max()
        loss += (m + np.log(np.sum(np.exp(z - m)))) - z[y]
    return loss


def finite_difference_grads(loss_fn, params, eps=FD_EPS):
    grads = []
    for k, a in enumerate(params):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [x.copy() for x in params]
            minus = [x.copy() for x in params]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            g[idx] = (loss_fn(Params(*plus)) - loss_fn(Params(*minus))) / (2 * eps)
        grads.append(g)
    return Params(*grads)


def fd_model(seed):
    """A tiny model in the nonlinear regime (weights std 0.5, |h| up to ~0.9), V=5, H=4, T=6."""
    V, H, T = 5, 4, 6
    rng = np.random.default_rng(seed)
    params = Params(rng.standard_normal((H, V)) * 0.5, rng.standard_normal((H, H)) * 0.5,
                    rng.standard_normal((V, H)) * 0.5, rng.standard_normal(H) * 0.3,
                    rng.standard_normal(V) * 0.3)
    inputs, targets = random_ids(V, T, seed=seed + 1)
    hprev = random_hidden(H, seed=seed + 2, scale=1.0)
    return params, inputs, targets, hprev


# Central differences: truncation ~ eps^2 * f''' ~ 1e-10, rounding ~ 1e-16 * |L| / eps ~ 1e-10.
FD_RTOL, FD_ATOL = 1e-6, 1e-8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_unclipped_grads_match_finite_differences(seed):
    params, inputs, targets, hprev = fd_model(seed)
    loss, grads, _ = ref.loss_and_grads(params, inputs, targets, hprev, clip=None)
    assert loss == pytest.approx(independent_loss(params, inputs, targets, hprev), rel=1e-13)
    fd = finite_difference_grads(lambda p: independent_loss(p, inputs, targets, hprev), params)
    for name, g, f in zip(GRAD_NAMES, grads, fd):
        assert np.max(np.abs(f)) > 1e-3, f"d{name} is trivially small: the check would be vacuous"
        np.testing.assert_allclose(g, f, rtol=FD_RTOL, atol=FD_ATOL, err_msg=f"d{name}")


def test_finite_difference_check_can_fail():
    """A gradient with one entry off by 1e-5 relative, or with a transposed dWhh, fails it."""
    params, inputs, targets, hprev = fd_model(0)
    _, grads, _ = ref.loss_and_grads(params, inputs, targets, hprev, clip=None)
    fd = finite_difference_grads(lambda p: independent_loss(p, inputs, targets, hprev), params)
    bad = grads.Whh.copy()
    k = int(np.argmax(np.abs(bad)))
    bad.flat[k] *= 1 + 1e-5
    assert not np.allclose(bad, fd.Whh, rtol=FD_RTOL, atol=FD_ATOL)
    assert not np.allclose(grads.Whh.T, fd.Whh, rtol=FD_RTOL, atol=FD_ATOL)


def test_fast_unclipped_grads_match_finite_differences():
    """The fast path against finite differences directly (not through the reference)."""
    for seed in (3, 4):
        params, inputs, targets, hprev = fd_model(seed)
        loss, grads, _ = fastrnn.loss_and_grads(params, inputs, targets, hprev, clip=None)
        assert loss == pytest.approx(independent_loss(params, inputs, targets, hprev), rel=1e-13)
        fd = finite_difference_grads(lambda p: independent_loss(p, inputs, targets, hprev), params)
        for name, g, f in zip(GRAD_NAMES, grads, fd):
            np.testing.assert_allclose(g, f, rtol=FD_RTOL, atol=FD_ATOL, err_msg=f"d{name}")


@pytest.mark.parametrize("impl_name", ["fast", "reference"])
def test_clipped_grads_are_np_clip_of_unclipped(impl_name):
    impl = fastrnn if impl_name == "fast" else ref
    params = large_params(20, 9, seed=5)
    inputs, targets = random_ids(20, 25, seed=6)
    hprev = random_hidden(9, seed=7)
    l1, clipped, h1 = impl.loss_and_grads(params, inputs, targets, hprev)
    l2, raw, h2 = impl.loss_and_grads(params, inputs, targets, hprev, clip=None)
    assert l1 == l2 and np.array_equal(h1, h2)
    assert any(np.any(np.abs(g) > 5) for g in raw)
    for name, c, r in zip(GRAD_NAMES, clipped, raw):
        assert np.array_equal(c, np.clip(r, -5, 5)), name


# --- the reference is the seed's code --------------------------------------------------

def seed_lossFun(Wxh, Whh, Why, bh, by, vocab_size):
    """The seed's lossFun, verbatim apart from taking the weights as arguments."""
    def lossFun(inputs, targets, hprev):
        xs, hs, ys, ps = {}, {}, {}, {}
        hs[-1] = np.copy(hprev)
        loss = 0
        for t in range(len(inputs)):
            xs[t] = np.zeros((vocab_size, 1))
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
            ys[t] = np.dot(Why, hs[t]) + by
            ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))
            loss += -np.log(ps[t][targets[t], 0])
        dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
        dbh, dby = np.zeros_like(bh), np.zeros_like(by)
        dhnext = np.zeros_like(hs[0])
        for t in reversed(range(len(inputs))):
            dy = np.copy(ps[t])
            dy[targets[t]] -= 1
            dWhy += np.dot(dy, hs[t].T)
            dby += dy
            dh = np.dot(Why.T, dy) + dhnext
            dhraw = (1 - hs[t] * hs[t]) * dh
            dbh += dhraw
            dWxh += np.dot(dhraw, xs[t].T)
            dWhh += np.dot(dhraw, hs[t - 1].T)
            dhnext = np.dot(Whh.T, dhraw)
        for dparam in [dWxh, dWhh, dWhy, dbh, dby]:
            np.clip(dparam, -5, 5, out=dparam)
        return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]
    return lossFun


@pytest.mark.parametrize("kind", ["tiny", "large"])
def test_reference_is_bit_identical_to_the_seed(kind):
    V, H, T = 13, 10, 25
    if kind == "tiny":
        p = fastrnn.init_params(V, H, seed=8)
    else:
        p = large_params(V, H, seed=8)
    bh, by = p.bh.reshape(H, 1), p.by.reshape(V, 1)
    inputs, targets = random_ids(V, T, seed=9)
    hprev = random_hidden(H, seed=10).reshape(H, 1)
    seed_out = seed_lossFun(p.Wxh, p.Whh, p.Why, bh, by, V)(list(inputs), list(targets), hprev)
    # Both bias layouts: the seed's columns and 1-D.
    for params in (Params(p.Wxh, p.Whh, p.Why, bh, by), p):
        loss, grads, h_last = ref.loss_and_grads(params, list(inputs), list(targets), hprev)
        assert loss == seed_out[0]
        for name, g, s in zip(GRAD_NAMES, grads, seed_out[1:6]):
            assert np.array_equal(g, s.reshape(g.shape)), name
        assert np.array_equal(h_last, seed_out[6].ravel())
        # Seed Adagrad, verbatim, against the reference's.
        seed_p = [a.copy() for a in (p.Wxh, p.Whh, p.Why, bh, by)]
        seed_m = [np.zeros_like(a) for a in seed_p]
        for param, dparam, mem in zip(seed_p, seed_out[1:6], seed_m):
            mem += dparam * dparam
            param += -0.1 * dparam / np.sqrt(mem + 1e-8)
        # (1-D biases here: the column layout has its own test, test_adagrad_accepts_column_biases.)
        ref_p = p.copy()
        ref_m = ref_p.zeros_like()
        ref.adagrad_update(ref_p, grads, ref_m, 0.1)
        for a, b in zip(ref_p, seed_p):
            assert np.array_equal(a.reshape(b.shape), b)
        for a, b in zip(ref_m, seed_m):
            assert np.array_equal(a.reshape(b.shape), b)


def test_reference_train_step_is_loss_and_grads_then_adagrad():
    V, H, T = 9, 6, 12
    p = large_params(V, H, seed=11)
    inputs, targets = random_ids(V, T, seed=12)
    hprev = random_hidden(H, seed=13)
    p1, m1 = p.copy(), p.zeros_like()
    loss1, h1 = ref.train_step(p1, m1, inputs, targets, hprev, 0.1)
    p2, m2 = p.copy(), p.zeros_like()
    loss2, grads, h2 = ref.loss_and_grads(p2, inputs, targets, hprev)
    ref.adagrad_update(p2, grads, m2, 0.1)
    assert loss1 == loss2 and np.array_equal(h1, h2)
    for a, b in zip((*p1, *m1), (*p2, *m2)):
        assert np.array_equal(a, b)


def test_reference_sequence_loss_is_the_training_loss():
    V, H, T = 30, 16, 40
    p = large_params(V, H, seed=14)
    inputs, targets = random_ids(V, T, seed=15)
    hprev = random_hidden(H, seed=16)
    l1, h1 = ref.sequence_loss(p, inputs, targets, hprev)
    l2, _, h2 = ref.loss_and_grads(p, inputs, targets, hprev)
    assert l1 == l2 and np.array_equal(h1, h2)
    ok, _ = allclose_report(l1, independent_loss(p, inputs, targets, hprev), rtol=1e-12)
    assert ok


def test_init_params_is_the_seeds_init():
    V, H = 65, 100
    p = fastrnn.init_params(V, H, seed=123)
    rng = np.random.default_rng(123)
    assert np.array_equal(p.Wxh, rng.standard_normal((H, V)) * 0.01)
    assert np.array_equal(p.Whh, rng.standard_normal((H, H)) * 0.01)
    assert np.array_equal(p.Why, rng.standard_normal((V, H)) * 0.01)
    assert np.array_equal(p.bh, np.zeros(H)) and np.array_equal(p.by, np.zeros(V))
    assert all(a.dtype == np.float64 and a.flags.c_contiguous for a in p)
    p32 = fastrnn.init_params(V, H, seed=123, dtype=np.float32)
    assert all(a.dtype == np.float32 for a in p32)
    assert np.array_equal(p32.Whh, p.Whh.astype(np.float32))
    assert p.vocab_size == V and p.hidden_size == H
