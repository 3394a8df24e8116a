"""The Numba path against the reference twin (float64 to rtol 1e-10), and the kernels' contracts.

The reference is itself checked against finite differences in test_reference.py.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import Params, kernels, optim_kernels
from fastrnn import reference as ref

from conftest import (
    GRAD_NAMES, allclose_report, assert_params_close, compare_results, large_params,
    make_params, max_rel_err, random_hidden, random_ids, tiny_params,
)


def _both(params, inputs, targets, hprev, clip=5.0):
    fast = fastrnn.loss_and_grads(params, inputs, targets, hprev, clip=clip)
    slow = ref.loss_and_grads(params, inputs, targets, hprev, clip=clip)
    return fast, slow


# --- one sequence: loss, five gradients, h_last --------------------------------

@pytest.mark.parametrize("kind", ["tiny", "large"])
@pytest.mark.parametrize("T", [1, 25])
@pytest.mark.parametrize("H", [1, 7, 100])
@pytest.mark.parametrize("V", [2, 65, 300])
def test_loss_grads_match_reference(V, H, T, kind):
    params = make_params(kind, V, H, seed=V * 1000 + H * 10 + T)
    inputs, targets = random_ids(V, T, seed=V + H + T)
    hprev = random_hidden(H, seed=H)
    fast, slow = _both(params, inputs, targets, hprev)
    failures = compare_results(fast, slow)
    assert not failures, f"V={V} H={H} T={T} {kind}: " + "; ".join(failures)
    # Outputs keep the public shapes: biases 1-D, h_last (H,), grads float64.
    loss, grads, h_last = fast
    assert isinstance(loss, float)
    assert h_last.shape == (H,)
    for g, p in zip(grads, params):
        assert g.shape == p.shape and g.dtype == np.float64


@pytest.mark.parametrize("V,H", [(65, 100), (300, 7), (2, 100)])
def test_large_regime_really_saturates_and_clips(V, H):
    """The 'large' weights are not assumed to saturate and clip: it is checked here."""
    T = 25
    params = large_params(V, H, seed=V * 1000 + H * 10 + T)
    inputs, targets = random_ids(V, T, seed=V + H + T)
    hprev = random_hidden(H, seed=H)
    _, grads, _ = fastrnn.loss_and_grads(params, inputs, targets, hprev)
    _, raw, _ = ref.loss_and_grads(params, inputs, targets, hprev, clip=None)
    clipped = sum(int(np.sum(np.abs(g) == 5.0)) for g in grads)
    beyond = sum(int(np.sum(np.abs(g) > 5.0)) for g in raw)
    assert clipped > 0 and beyond > 0, "the clip is not active in the 'large' regime"
    assert all(np.all(np.abs(g) <= 5.0) for g in grads)
    # Hidden states along the sequence, recomputed with the reference's formula.
    h, saturated = hprev, 0
    for ix in inputs:
        h = np.tanh(params.Wxh[:, ix] + params.Whh @ h + params.bh)
        saturated += int(np.sum(np.abs(h) > 0.99))
    assert saturated > 0, "tanh does not saturate in the 'large' regime"
    # The seed's tiny init, by contrast, stays in the linear regime with no clipping.
    tiny = tiny_params(V, H, seed=1)
    _, raw_tiny, _ = ref.loss_and_grads(tiny, inputs, targets, hprev, clip=None)
    assert all(np.all(np.abs(g) < 5.0) for g in raw_tiny)


@pytest.mark.parametrize("kind", ["tiny", "large"])
@pytest.mark.parametrize("V,H,T", [(65, 100, 25), (7, 5, 13), (300, 7, 1)])
def test_unclipped_match_reference(V, H, T, kind):
    params = make_params(kind, V, H, seed=11)
    inputs, targets = random_ids(V, T, seed=12)
    hprev = random_hidden(H, seed=13)
    fast, slow = _both(params, inputs, targets, hprev, clip=None)
    failures = compare_results(fast, slow)
    assert not failures, "; ".join(failures)
    if kind == "large" and T == 25:  # unclipped really means unclipped
        assert max(np.max(np.abs(g)) for g in fast[1]) > 5.0


@pytest.mark.parametrize("clip", [0.5, 1.0, 5.0, 100.0])
def test_other_clip_values(clip):
    params = large_params(20, 9, seed=4)
    inputs, targets = random_ids(20, 25, seed=5)
    hprev = random_hidden(9, seed=6)
    fast, slow = _both(params, inputs, targets, hprev, clip=clip)
    assert not compare_results(fast, slow)
    for g in fast[1]:
        assert np.max(np.abs(g)) <= clip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_loss_grads_match_reference_hypothesis(data):
    V = data.draw(st.integers(1, 40), label="V")
    H = data.draw(st.integers(1, 24), label="H")
    T = data.draw(st.integers(1, 30), label="T")
    ids = st.lists(st.integers(0, V - 1), min_size=T, max_size=T)
    inputs = data.draw(ids, label="inputs")
    targets = data.draw(ids, label="targets")
    kind = data.draw(st.sampled_from(["tiny", "large"]), label="kind")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    clip = data.draw(st.sampled_from([5.0, None]), label="clip")
    params = make_params(kind, V, H, seed=seed)
    hprev = random_hidden(H, seed=seed) if data.draw(st.booleans(), label="hprev") else np.zeros(H)
    fast, slow = _both(params, inputs, targets, hprev, clip=clip)
    failures = compare_results(fast, slow)
    assert not failures, "; ".join(failures)


@pytest.mark.parametrize("how", ["perturb", "swap"])
def test_comparison_can_fail(how):
    """The comparison used everywhere above flags a 1e-8 relative error in one dWhh entry."""
    V, H, T = 65, 100, 25
    for kind in ("tiny", "large"):
        params = make_params(kind, V, H, seed=V * 1000 + H * 10 + T)
        inputs, targets = random_ids(V, T, seed=V + H + T)
        hprev = random_hidden(H, seed=H)
        fast, (loss, grads, h_last) = _both(params, inputs, targets, hprev)
        assert not compare_results(fast, (loss, grads, h_last))
        dWhh = grads.Whh.copy()
        if how == "perturb":
            # A mid-sized entry, not the largest: the atol must not hide it.
            flat = np.abs(dWhh).ravel()
            k = int(np.argsort(flat)[flat.size // 2])
            dWhh.flat[k] *= 1 + 1e-8
        else:
            # Two entries swapped (an index bug); pick the pair closest in value but distinct
            # so that the change is as small as possible.
            flat = np.sort(dWhh.ravel())
            gaps = np.diff(flat)
            k = int(np.argmin(np.where(gaps > 0, gaps, np.inf)))
            i = int(np.flatnonzero(dWhh.ravel() == flat[k])[0])
            j = int(np.flatnonzero(dWhh.ravel() == flat[k + 1])[0])
            dWhh.flat[i], dWhh.flat[j] = dWhh.flat[j], dWhh.flat[i]
        bad = (loss, grads._replace(Whh=dWhh), h_last)
        failures = compare_results(fast, bad)
        assert failures and failures[0].startswith("dWhh"), f"{kind}: not caught ({how})"
        # The loss and h_last comparisons can fail too.
        assert compare_results(fast, (loss * (1 + 1e-8), grads, h_last))
        assert compare_results(fast, (loss, grads, h_last * (1 + 1e-8)))


# --- forward only -----------------------------------------------------------

@pytest.mark.parametrize("T", [1, 25, 3000])
def test_sequence_loss_matches_reference(T, corpus_ids):
    ids, V = corpus_ids
    H = 100
    params = tiny_params(V, H, seed=21)
    inputs, targets = ids[:T], ids[1:T + 1]
    hprev = random_hidden(H, seed=22)
    loss, h_last = fastrnn.sequence_loss(params, inputs, targets, hprev)
    ref_loss, ref_h = ref.sequence_loss(params, inputs, targets, hprev)
    assert allclose_report(loss, ref_loss)[0], (loss, ref_loss)
    assert allclose_report(h_last, ref_h)[0], max_rel_err(h_last, ref_h)
    # The forward-only loss is the loss of the training forward pass.
    if T <= 25:
        l2, _, h2 = fastrnn.loss_and_grads(params, inputs, targets, hprev)
        assert allclose_report(loss, l2, rtol=1e-13)[0]
        assert allclose_report(h_last, h2, rtol=1e-13)[0]
    # hprev is not modified in place.
    assert np.array_equal(hprev, random_hidden(H, seed=22))


def test_sequence_loss_large_regime_short():
    """Saturated weights are chaotic (rounding noise grows ~10x per 10 steps), so stay short."""
    V, H, T = 65, 100, 40
    params = large_params(V, H, seed=23)
    inputs, targets = random_ids(V, T, seed=24)
    hprev = np.zeros(H)
    loss, h = fastrnn.sequence_loss(params, inputs, targets, hprev)
    ref_loss, ref_h = ref.sequence_loss(params, inputs, targets, hprev)
    assert allclose_report(loss, ref_loss)[0]
    assert allclose_report(h, ref_h)[0]


@pytest.mark.parametrize("kind", ["tiny", "large"])
def test_log_probs_sum_to_minus_loss(kind, corpus_ids):
    ids, V = corpus_ids
    H, T = 50, 25 if kind == "large" else 500
    params = make_params(kind, V, H, seed=31)
    inputs, targets = ids[100:100 + T], ids[101:101 + T]
    hprev = random_hidden(H, seed=32)
    lp, h_lp = fastrnn.log_probs(params, inputs, targets, hprev)
    loss, h_loss = fastrnn.sequence_loss(params, inputs, targets, hprev)
    assert lp.shape == (T,) and lp.dtype == np.float64
    assert np.all(lp <= 0)
    assert allclose_report(-np.sum(lp), loss, rtol=1e-12)[0], (-np.sum(lp), loss)
    assert np.array_equal(h_lp, h_loss)
    # Each step's log-probability against the reference, one step at a time.
    h = hprev
    for t in range(min(T, 25)):
        step_loss, h = ref.sequence_loss(params, inputs[t:t + 1], targets[t:t + 1], h)
        assert allclose_report(-lp[t], step_loss)[0], t


# --- softmax stability ----------------------------------------------------------

def _shifted(params, shift):
    return params._replace(by=params.by + shift)


@pytest.mark.parametrize("shift", [700.0, -700.0])
def test_softmax_large_logits_where_reference_finite(shift):
    """Logits ~ +-700: exp does not overflow/underflow to 0 in the reference; both agree."""
    V, H, T = 3, 4, 6
    params = _shifted(tiny_params(V, H, seed=41), shift)
    inputs, targets = random_ids(V, T, seed=42)
    hprev = random_hidden(H, seed=43)
    fast, slow = _both(params, inputs, targets, hprev)
    assert np.isfinite(slow[0]) and all(np.all(np.isfinite(g)) for g in slow[1])
    assert not compare_results(fast, slow)


@pytest.mark.parametrize("shift", [1000.0, -1000.0, 1e6])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_overflow_stays_finite(shift, dtype):
    """Logits ~ 1000: the reference gives NaN; the fast path stays finite and, softmax being
    shift-invariant, equals the reference on the unshifted logits."""
    V, H, T = 65, 16, 25
    base = large_params(V, H, seed=44)
    params = _shifted(base, shift).astype(dtype)
    inputs, targets = random_ids(V, T, seed=45)
    hprev = random_hidden(H, seed=46)
    loss, grads, h_last = fastrnn.loss_and_grads(params, inputs, targets, hprev)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads)
    if dtype == np.float64:
        with np.errstate(all="ignore"):
            ref_loss = ref.loss_and_grads(params, inputs, targets, hprev)[0]
        assert not np.isfinite(ref_loss)  # the regime is real: the naive softmax breaks
        if shift == 1000.0:
            # (by + 1000) - 1000 is not exactly by: compare with the reference on the
            # biases the fast path actually saw, shifted back exactly in float64.
            ref_params = params._replace(by=params.by - shift)
            slow = ref.loss_and_grads(ref_params, inputs, targets, hprev)
            # logits carry an absolute rounding of ulp(1000) ~ 1e-13: rtol 1e-10 still holds.
            assert not compare_results((loss, grads, h_last), slow)
    for name in ("sequence_loss", "log_probs"):
        out = getattr(fastrnn, name)(params, inputs, targets, hprev)[0]
        assert np.all(np.isfinite(out)), name


@pytest.mark.parametrize("dtype,max_ulp", [(np.float64, 1), (np.float32, 2)])
def test_vectorised_exp_within_ulp_of_numpy(dtype, max_ulp):
    """exp_sub_inplace over the whole range softmax uses (x <= 0), subnormal results included."""
    rng = np.random.default_rng(3)
    lo = float(np.log(np.finfo(dtype).smallest_subnormal))  # about -745 (float64), -103 (float32)
    tiny = float(np.log(np.finfo(dtype).tiny))  # below this the results are subnormal
    x = np.concatenate([rng.uniform(1.02 * lo, 0, 200_000), rng.uniform(-1, 0, 100_000),
                        rng.uniform(1.02 * lo, tiny, 50_000), -np.logspace(-30, np.log10(-lo), 2000),
                        np.linspace(lo, tiny, 3001)]).astype(dtype)
    got = x.copy()
    kernels.exp_sub_inplace(got, dtype(0))
    want = np.exp(x)
    normal = want >= np.finfo(dtype).tiny
    assert normal.sum() > 250_000 and (~normal).sum() > 50_000  # both regimes really tested
    ulp = np.abs(got[normal] - want[normal]) / np.spacing(want[normal])
    assert np.max(ulp) <= max_ulp
    # subnormal and zero results: within one subnormal step per ulp allowed; zeros where numpy's are.
    assert np.max(np.abs(got[~normal] - want[~normal])) <= max_ulp * np.finfo(dtype).smallest_subnormal
    assert np.array_equal(got == 0, want == 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vectorised_exp_special_values_and_shift(dtype):
    v = np.array([0.0, -0.0, -np.inf, np.nan, -1e-30, 3.0, -800.0], dtype)
    kernels.exp_sub_inplace(v, dtype(0))
    assert v[0] == 1 and v[1] == 1 and v[2] == 0 and np.isnan(v[3]) and v[4] == 1
    assert v[5] == np.exp(dtype(3)) and v[6] == 0
    shifted = np.array([10.0, 7.5, 10.0 - 30], dtype)
    kernels.exp_sub_inplace(shifted, dtype(10))
    np.testing.assert_allclose(shifted, np.exp(np.array([0.0, -2.5, -30], dtype)), rtol=2 * np.finfo(dtype).eps)


def test_exact_helper_keeps_its_arithmetic_inside_a_fast_kernel(tmp_path):
    """softmax_inplace (fastmath) calls exp_sub_inplace (exact): compiled first as that callee, in a
    fresh process and cache, the exp must not inherit the caller's reassociation (which merges the
    two-part ln2 reduction and costs ~10 ulp at x ~ -40)."""
    code = (
        "import numpy as np\n"
        "from fastrnn import kernels, optim_kernels\n"
        "x = np.linspace(-45.0, 0.0, 65)\n"
        "worst = 0.0\n"
        "for shift in np.linspace(0.0, 1.0, 200):\n"
        "    p = x + shift\n"
        "    got = p.copy()\n"
        "    kernels.softmax_inplace(got)\n"
        "    e = np.exp(p - p.max())\n"
        "    want = e / e.sum()\n"
        "    worst = max(worst, float(np.max(np.abs(got - want) / np.spacing(want))))\n"
        "print(worst)\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert float(out.stdout) <= 4


def test_exact_leaf_kernels_carry_no_fastmath_flags(tmp_path):
    """Every exact leaf kernel, first compiled as the callee of a fast kernel (fresh process and
    cache), has no fast-math flag on any floating-point instruction of its LLVM IR."""
    code = (
        "import re, numpy as np, fastrnn\n"
        "from fastrnn import kernels, optim_kernels\n"
        "p = fastrnn.init_params(7, 8, seed=0)\n"
        "ids = np.arange(6) % 7\n"
        "fastrnn.loss_and_grads(p, ids, ids, np.zeros(8))\n"  # softmax -> exp_sub_inplace
        "fastrnn.sample(p, np.zeros(8), 0, 5, seed=0)\n"  # sample_ids -> pick_id
        "fastrnn.train_step(p, p.zeros_like(), ids, ids, np.zeros(8), 0.1)\n"
        "leaves = [kernels.exp_sub_inplace, kernels.pick_id, optim_kernels.adagrad_update, optim_kernels.clip_inplace]\n"
        # Arithmetic with any fast-math flag; a comparison only with those that change its result
        # (numba's own inlined helpers may carry reassoc/nsz on an fcmp, which is meaningless there).
        "flag = re.compile(r'= (?:(?:fadd|fsub|fmul|fdiv|frem|fneg|call)[^\\n]*\\b(?:fast|reassoc|contract|nnan|ninf|nsz|arcp|afn)\\b|fcmp[^\\n]*\\b(?:fast|nnan|ninf)\\b)')\n"
        "for k in leaves:\n"
        "    assert k.signatures, k.__name__\n"
        "    for sig in k.signatures:\n"
        "        bad = flag.findall(k.inspect_llvm(sig))\n"
        "        print(k.__name__, len(bad))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = dict(line.split() for line in out.stdout.splitlines())
    assert set(counts) == {"exp_sub_inplace", "pick_id", "adagrad_update", "clip_inplace"}
    assert all(c == "0" for c in counts.values()), counts


def test_softmax_one_dominant_logit():
    """A target whose probability underflows to 0 in the reference: the fast loss is the
    exact log-sum-exp value, not inf."""
    V, H = 4, 2
    Wxh = np.zeros((H, V))
    Whh = np.zeros((H, H))
    Why = np.zeros((V, H))
    bh = np.zeros(H)
    by = np.array([0.0, -1000.0, -2000.0, 0.0])
    params = Params(Wxh, Whh, Why, bh, by)
    inputs, targets = np.array([0, 0]), np.array([1, 2])
    loss, grads, _ = fastrnn.loss_and_grads(params, inputs, targets, np.zeros(H))
    expected = (1000.0 + np.log(2.0)) + (2000.0 + np.log(2.0))
    assert loss == pytest.approx(expected, rel=1e-14)
    # dby = sum_t (p_t - onehot(target_t)) = [1, -1, -1, 1] exactly.
    assert np.array_equal(grads.by, [1.0, -1.0, -1.0, 1.0])
    with np.errstate(all="ignore"):
        assert ref.loss_and_grads(params, inputs, targets, np.zeros(H))[0] == np.inf


# --- training trajectories --------------------------------------------------------

def _trajectory(step, params, memory, ids, steps, T, lr):
    hprev = np.zeros(params.hidden_size)
    losses = []
    for n in range(steps):
        inputs, targets = ids[n * T:(n + 1) * T], ids[n * T + 1:(n + 1) * T + 1]
        loss, hprev = step(params, memory, inputs, targets, hprev, lr)
        losses.append(loss)
    return np.array(losses), hprev


def _separate(impl):
    def step(params, memory, inputs, targets, hprev, lr):
        loss, grads, h = impl.loss_and_grads(params, inputs, targets, hprev)
        impl.adagrad_update(params, grads, memory, lr)
        return loss, h
    return step


def _state_diff(a, b):
    """Largest |difference| over the five parameters (or memories)."""
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.mark.parametrize("how", ["train_step", "loss_and_grads+adagrad_update"])
def test_ten_training_steps_match_reference(how, corpus_ids):
    """10 steps of the whole loop (forward, BPTT, clip, Adagrad, hprev carried) from the same
    seed-init weights at H=100 on tiny shakespeare: parameters and memories within 1e-9.

    lr = 0.01 here: at the seed's lr = 0.1 the training map itself amplifies rounding noise
    ~10-100x per step (see test_lr01_trajectory_no_worse_than_rounding_noise), so no two
    float64 implementations with different summation orders stay within 1e-9 for 10 steps.
    """
    ids, V = corpus_ids
    H, T, lr, steps = 100, 25, 0.01, 10
    start = tiny_params(V, H, seed=51)
    p_ref, m_ref = start.copy(), start.zeros_like()
    ref_losses, ref_h = _trajectory(ref.train_step, p_ref, m_ref, ids, steps, T, lr)
    p_fast, m_fast = start.copy(), start.zeros_like()
    step = fastrnn.train_step if how == "train_step" else _separate(fastrnn)
    losses, h = _trajectory(step, p_fast, m_fast, ids, steps, T, lr)
    # The trajectory really moved: every weight changed by ~lr per step.
    assert _state_diff(p_ref, start) > 5 * lr
    assert np.ptp(ref_losses) > 1.0
    assert_params_close(p_fast, p_ref, rtol=1e-9, what="params")
    assert_params_close(m_fast, m_ref, rtol=1e-9, what="memory")
    assert _state_diff(p_fast, p_ref) < 1e-9 and _state_diff(m_fast, m_ref) < 1e-9
    assert allclose_report(losses, ref_losses, rtol=1e-9)[0]
    assert allclose_report(h, ref_h, rtol=1e-9)[0]


@pytest.mark.parametrize("how", ["train_step", "loss_and_grads+adagrad_update"])
def test_lr01_trajectory_every_step_matches_reference(how, corpus_ids):
    """At the seed's lr = 0.1, each of 10 steps of the fast trajectory is checked against one
    reference step taken from the same state (params, memory, hprev): 1e-9 at every step."""
    ids, V = corpus_ids
    H, T, lr, steps = 100, 25, 0.1, 10
    params, memory = tiny_params(V, H, seed=51), tiny_params(V, H, seed=51).zeros_like()
    step = fastrnn.train_step if how == "train_step" else _separate(fastrnn)
    hprev = np.zeros(H)
    for n in range(steps):
        inputs, targets = ids[n * T:(n + 1) * T], ids[n * T + 1:(n + 1) * T + 1]
        p_ref, m_ref = params.copy(), memory.copy()
        ref_loss, ref_h = ref.train_step(p_ref, m_ref, inputs, targets, hprev, lr)
        loss, hprev = step(params, memory, inputs, targets, hprev, lr)
        assert_params_close(params, p_ref, rtol=1e-9, what=f"step {n} params")
        assert_params_close(memory, m_ref, rtol=1e-9, what=f"step {n} memory")
        assert allclose_report(loss, ref_loss)[0], n
        assert allclose_report(hprev, ref_h)[0], n
    assert _state_diff(params, tiny_params(V, H, seed=51)) > 0.5  # weights moved ~lr per step


def test_lr01_trajectory_no_worse_than_rounding_noise(corpus_ids):
    """At lr = 0.1 whole trajectories drift apart (Adagrad's lr / sqrt(g^2 + 1e-8) multiplies
    the rounding of small gradients by up to 1e3 per step). The reference drifts as far from
    itself when its start is perturbed by 1e-16 relative; the fast path must not drift much
    further than that noise floor."""
    ids, V = corpus_ids
    H, T, lr, steps = 100, 25, 0.1, 10
    start = tiny_params(V, H, seed=51)
    p_ref, m_ref = start.copy(), start.zeros_like()
    _trajectory(ref.train_step, p_ref, m_ref, ids, steps, T, lr)
    floor = 0.0
    for k in range(2):
        noise = np.random.default_rng(k)
        p_u = Params(*(a * (1 + 1e-16 * noise.standard_normal(a.shape)) for a in start))
        m_u = start.zeros_like()
        _trajectory(ref.train_step, p_u, m_u, ids, steps, T, lr)
        floor = max(floor, _state_diff(p_u, p_ref))
    p_fast, m_fast = start.copy(), start.zeros_like()
    _trajectory(fastrnn.train_step, p_fast, m_fast, ids, steps, T, lr)
    drift = _state_diff(p_fast, p_ref)
    assert drift <= 100 * max(floor, 1e-12), (drift, floor)


def test_fused_train_step_equals_separate_calls(corpus_ids):
    ids, V = corpus_ids
    H, T, lr, steps = 64, 25, 0.1, 5
    start = tiny_params(V, H, seed=52)
    p1, m1 = start.copy(), start.zeros_like()
    p2, m2 = start.copy(), start.zeros_like()
    l1, h1 = _trajectory(fastrnn.train_step, p1, m1, ids, steps, T, lr)
    l2, h2 = _trajectory(_separate(fastrnn), p2, m2, ids, steps, T, lr)
    assert_params_close(p1, p2, rtol=1e-12, what="params")
    assert_params_close(m1, m2, rtol=1e-12, what="memory")
    assert allclose_report(l1, l2, rtol=1e-13)[0]


def test_train_step_with_workspace_reuse(corpus_ids):
    ids, V = corpus_ids
    H, T, lr = 32, 25, 0.1
    start = tiny_params(V, H, seed=53)
    ws = fastrnn.Workspace(V, H, T)
    p1, m1 = start.copy(), start.zeros_like()
    p2, m2 = start.copy(), start.zeros_like()
    h1 = h2 = np.zeros(H)
    for n, length in enumerate([25, 7, 25, 1]):  # shorter sequences fit in the workspace
        inputs, targets = ids[n * T:n * T + length], ids[n * T + 1:n * T + length + 1]
        _, h1 = fastrnn.train_step(p1, m1, inputs, targets, h1, lr, workspace=ws)
        _, h2 = ref.train_step(p2, m2, inputs, targets, h2, lr)
    assert_params_close(p1, p2, rtol=1e-9)
    assert_params_close(m1, m2, rtol=1e-9)


@pytest.mark.parametrize("lr", [0.1, 1e-3, 3.7])
def test_adagrad_update_bit_identical(lr):
    """Given identical gradients, the fast Adagrad equals numpy's expression bit for bit."""
    rng = np.random.default_rng(61)
    V, H = 65, 100
    start = large_params(V, H, seed=62)
    memory0 = Params(*(np.abs(rng.standard_normal(a.shape)) * 10.0 ** rng.integers(-12, 3, a.shape)
                       for a in start))
    p_fast, m_fast = start.copy(), memory0.copy()
    p_ref, m_ref = start.copy(), memory0.copy()
    for _ in range(3):
        grads = Params(*(rng.standard_normal(a.shape) * 10.0 ** rng.integers(-9, 1, a.shape)
                         for a in start))
        grads.Wxh[0, :3] = 0.0  # zero gradient, zero memory: 0 / sqrt(1e-8)
        fastrnn.adagrad_update(p_fast, grads, m_fast, lr)
        ref.adagrad_update(p_ref, grads, m_ref, lr)
    for name, a, b in zip(GRAD_NAMES, p_fast, p_ref):
        assert np.array_equal(a, b), f"param {name}: max rel err {max_rel_err(a, b):.3g}"
    for name, a, b in zip(GRAD_NAMES, m_fast, m_ref):
        assert np.array_equal(a, b), f"memory {name}: max rel err {max_rel_err(a, b):.3g}"


def test_adagrad_accepts_column_biases(impl):
    """Params with the seed's (H, 1) / (V, 1) bias columns are accepted by both paths (the API
    says so), with the 1-D bias gradients that loss_and_grads returns; the update reaches the
    caller's arrays in place."""
    V, H = 5, 3
    p = tiny_params(V, H, seed=63)
    col = Params(p.Wxh.copy(), p.Whh.copy(), p.Why.copy(), np.ones((H, 1)), np.ones((V, 1)))
    mem = Params(*(np.zeros_like(a) for a in col))
    _, grads, _ = impl.loss_and_grads(col, [0, 1], [1, 2], np.zeros((H, 1)))
    assert grads.bh.shape == (H,) and grads.by.shape == (V,)
    grads = Params(*(np.full(g.shape, 0.5) for g in grads))
    impl.adagrad_update(col, grads, mem, 0.1)
    expected = 1.0 + (-0.1 * 0.5 / np.sqrt(0.25 + 1e-8))
    assert col.bh.shape == (H, 1) and np.array_equal(col.bh, np.full((H, 1), expected))
    assert np.array_equal(mem.by, np.full((V, 1), 0.25))
    assert np.array_equal(col.Whh, p.Whh + (-0.1 * 0.5 / np.sqrt(0.25 + 1e-8)))


# --- kernel contracts ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T", [1, 25])
def test_stream_kernel_overwrites_gradients_unclipped(T, dtype):
    """stream_kernels.loss_and_grads overwrites whatever the gradient buffers held (a workspace cut to
    a shorter sequence included) with the unclipped gradients: the reference's, at 1e-10 in float64."""
    from fastrnn import stream_kernels
    V, H = 30, 12
    params = large_params(V, H, seed=71, dtype=dtype)
    inputs, targets = random_ids(V, T, seed=72)
    ws = fastrnn.Workspace(V, H, T + 3, dtype)
    h0 = random_hidden(H, seed=73).astype(dtype)
    results = []
    for fill in (0.0, 7.0):
        grads = fastrnn.Params(*(np.full_like(p, fill) for p in params))
        ws.hs[0] = h0
        loss = stream_kernels.loss_and_grads(*grads, *ws.kernel_arrays(), inputs.reshape(1, -1),
                                             targets.reshape(1, -1), *params)
        results.append((loss, grads))
    (loss, once), (loss2, twice) = results
    assert loss == loss2
    for name, g1, g2 in zip(GRAD_NAMES, once, twice):
        assert np.array_equal(g1, g2), name
    assert all(np.any(g != 0) for g in once)
    if dtype == np.float64:
        loss_ref, raw, _ = ref.loss_and_grads(params, inputs, targets, h0, clip=None)
        assert allclose_report(loss, loss_ref)[0]
        assert max(np.max(np.abs(g)) for g in raw) > 5.0 or T == 1
        for name, g1, r in zip(GRAD_NAMES, once, raw):
            assert allclose_report(g1, r)[0], name


def test_clip_inplace_matches_np_clip():
    rng = np.random.default_rng(81)
    for dtype in (np.float64, np.float32):
        g = (rng.standard_normal((13, 7)) * 10).astype(dtype)
        g[0, :4] = [5.0, -5.0, np.inf, -np.inf]
        expected = np.clip(g, -5, 5)
        optim_kernels.clip_inplace(g, dtype(5.0))
        assert np.array_equal(g, expected)


def test_pick_id_inverse_cdf():
    p = np.array([0.2, 0.0, 0.5, 0.3])
    assert kernels.pick_id(p, 0.0) == 0
    assert kernels.pick_id(p, 0.1999) == 0
    assert kernels.pick_id(p, 0.2) == 2  # a zero-probability id is never picked
    assert kernels.pick_id(p, 0.6999) == 2
    assert kernels.pick_id(p, 0.7) == 3
    assert kernels.pick_id(p, np.nextafter(1.0, 0.0)) == 3
    # Unnormalised weights are normalised first, as numpy's choice does.
    assert kernels.pick_id(p * 7.0, 0.65) == 2


# --- float32 -------------------------------------------------------------------------

def _rel_norm(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb > 0 else float(np.linalg.norm(a))


def test_float32_close_to_float64_one_step(corpus_ids):
    """Seed init, tiny shakespeare, H=100: float32 loss, grads, h_last and one Adagrad step
    within 1e-4 (relative, in norm) of float64 on the same rounded weights."""
    ids, V = corpus_ids
    H, T, lr = 100, 25, 0.1
    p32 = tiny_params(V, H, seed=91, dtype=np.float32)
    p64 = p32.astype(np.float64)  # the same (rounded) weights, so only arithmetic differs
    inputs, targets = ids[200:200 + T], ids[201:201 + T]
    hprev = np.zeros(H)
    l32, g32, h32 = fastrnn.loss_and_grads(p32, inputs, targets, hprev)
    l64, g64, h64 = fastrnn.loss_and_grads(p64, inputs, targets, hprev)
    assert all(g.dtype == np.float32 for g in g32) and h32.dtype == np.float32
    assert abs(l32 - l64) / abs(l64) < 1e-4
    assert _rel_norm(h32, h64) < 1e-4
    for name, a, b in zip(GRAD_NAMES, g32, g64):
        assert _rel_norm(a, b) < 1e-4, f"d{name}: {_rel_norm(a, b):.3g}"
    # The float64 side is itself the reference's answer.
    assert not compare_results((l64, g64, h64), ref.loss_and_grads(p64, inputs, targets, hprev))
    # One full training step: the parameters, the step taken and the memories agree too.
    q32, m32 = p32.copy(), p32.zeros_like()
    q64, m64 = p64.copy(), p64.zeros_like()
    ls32, _ = fastrnn.train_step(q32, m32, inputs, targets, hprev, lr)
    ls64, _ = fastrnn.train_step(q64, m64, inputs, targets, hprev, lr)
    assert abs(ls32 - ls64) / abs(ls64) < 1e-4
    assert all(a.dtype == np.float32 for a in (*q32, *m32))
    for name, a, b, s in zip(GRAD_NAMES, q32, q64, p64):
        assert _rel_norm(a, b) < 1e-4, name
        assert _rel_norm(np.asarray(a, np.float64) - s, b - s) < 1e-4, f"step {name}"
    for name, a, b in zip(GRAD_NAMES, m32, m64):
        assert _rel_norm(a, b) < 1e-4, f"memory {name}"


def test_float32_saturated_regime():
    """Saturated tanh: 1 - h^2 of a unit near +-1 carries float32's rounding of h amplified
    (h = 0.9999: 3e-4 relative), so only the loss keeps 1e-4; gradients get 1e-3."""
    V, H, T = 65, 100, 25
    p32 = large_params(V, H, seed=91, dtype=np.float32)
    p64 = p32.astype(np.float64)
    inputs, targets = random_ids(V, T, seed=94)
    l32, g32, h32 = fastrnn.loss_and_grads(p32, inputs, targets, np.zeros(H))
    l64, g64, h64 = fastrnn.loss_and_grads(p64, inputs, targets, np.zeros(H))
    assert abs(l32 - l64) / abs(l64) < 1e-4
    assert _rel_norm(h32, h64) < 1e-3
    for name, a, b in zip(GRAD_NAMES, g32, g64):
        assert _rel_norm(a, b) < 1e-3, f"d{name}: {_rel_norm(a, b):.3g}"


def test_float32_outputs_everywhere():
    V, H, T = 9, 5, 4
    p = tiny_params(V, H, seed=92, dtype=np.float32)
    inputs, targets = random_ids(V, T, seed=93)
    loss, grads, h = fastrnn.loss_and_grads(p, inputs, targets, np.zeros(H))
    assert all(g.dtype == np.float32 for g in grads) and h.dtype == np.float32
    _, h = fastrnn.sequence_loss(p, inputs, targets, np.zeros(H))
    assert h.dtype == np.float32
    m = p.zeros_like()
    fastrnn.adagrad_update(p, grads, m, 0.1)
    assert all(a.dtype == np.float32 for a in (*p, *m))
    # A float64 hprev is accepted and converted, not a float64 path in disguise.
    _, h = fastrnn.train_step(p, m, inputs, targets, np.zeros(H, np.float64), 0.1)
    assert h.dtype == np.float32
    # The float32 kernels were compiled for float32 arguments (not promoted).
    from fastrnn import stream_kernels
    sigs = [s for s in stream_kernels.loss_and_grads.signatures if "float32" in str(s)]
    assert sigs, stream_kernels.loss_and_grads.signatures


# --- degenerate shapes -----------------------------------------------------------------

@pytest.mark.parametrize("H", [1, 3])
def test_vocabulary_of_one(H):
    """V = 1 is accepted by init_params, so it must work: p = 1, loss 0, output grads 0."""
    params = tiny_params(1, H, seed=101)
    inputs = targets = np.zeros(5, np.int64)
    fast, slow = _both(params, inputs, targets, np.zeros(H))
    assert fast[0] == 0.0
    assert not compare_results(fast, slow)
    for g in fast[1]:
        assert np.all(g == 0)
    assert np.array_equal(fastrnn.sample(params, np.zeros(H), 0, 7, seed=1), np.zeros(7, np.int64))
    assert fastrnn.sequence_loss(params, inputs, targets, np.zeros(H))[0] == 0.0
    m = params.zeros_like()
    fastrnn.train_step(params, m, inputs, targets, np.zeros(H), 0.1)
    assert all(np.all(np.isfinite(a)) for a in params)


def test_hidden_one_sequence_one():
    params = large_params(4, 1, seed=102)
    fast, slow = _both(params, [3], [0], np.array([0.3]))
    assert not compare_results(fast, slow)
    fast, slow = _both(params, [3], [0], np.array([[0.3]]))  # (H, 1) hprev
    assert not compare_results(fast, slow)


# --- many steps in one kernel call ------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_train_steps_equals_repeated_train_step(dtype, corpus_ids):
    """train_steps claims the arithmetic of repeated train_step calls: bit for bit, with the
    hidden state carried between steps and zeroed where resets[s] is true."""
    ids, V = corpus_ids
    H, T, lr = 40, 25, 0.1
    start = tiny_params(V, H, seed=111, dtype=dtype)
    starts = np.array([0, 25, 50, 75, 0, 25, 300], np.int64)
    resets = np.array([True, False, False, False, True, False, False])
    p1, m1 = start.copy(), start.zeros_like()
    h1 = np.zeros(H, dtype)
    ws = fastrnn.Workspace(V, H, T, dtype)
    losses = fastrnn.train_steps(p1, m1, ids, starts, resets, h1, lr, ws)
    p2, m2 = start.copy(), start.zeros_like()
    p3, m3 = start.copy(), start.zeros_like()
    h2 = np.zeros(H, dtype)
    h3 = np.zeros(H)
    expected, ref_losses = [], []
    for s, r in zip(starts, resets):
        if r:
            h2 = np.zeros(H, dtype)
            h3 = np.zeros(H)
        inputs, targets = ids[s:s + T], ids[s + 1:s + T + 1]
        loss, h2 = fastrnn.train_step(p2, m2, inputs, targets, h2, lr)
        expected.append(loss)
        if dtype == np.float64:
            loss, h3 = ref.train_step(p3, m3, inputs, targets, h3, lr)
            ref_losses.append(loss)
    assert losses.shape == (len(starts),) and losses.dtype == np.float64
    assert np.array_equal(losses, expected)
    assert np.array_equal(h1, h2)
    for a, b in zip((*p1, *m1), (*p2, *m2)):
        assert np.array_equal(a, b)
    if dtype == np.float64:  # 7 steps at H=40 stay within the rounding-noise regime
        assert allclose_report(losses, ref_losses, rtol=1e-9)[0]
        assert_params_close(p1, p3, rtol=1e-9)
        assert_params_close(m1, m3, rtol=1e-9)
