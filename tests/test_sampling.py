"""Sampling: the same seed gives the same ids in both paths, and the draws follow the softmax.

The statistical tests use fixed seeds, so they are deterministic; their threshold is the
chi-square quantile at tail probability 1e-6 (Wilson-Hilferty), so a correct sampler with
another seed would fail them about once in a million runs.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import Params
from fastrnn import reference as ref

from conftest import large_params, random_hidden, tiny_params

Z_1E6 = 4.753424308822899  # standard normal upper quantile at 1e-6


def chi2_threshold(dof, z=Z_1E6):
    """Upper quantile of chi-square(dof) by Wilson-Hilferty (within 1 % of the exact value for
    dof >= 10, and slightly above it: conservative)."""
    a = 2.0 / (9.0 * dof)
    return dof * (1.0 - a + z * np.sqrt(a)) ** 3


def chi2_statistic(counts, probs, min_expected=5.0):
    """Pearson's statistic after merging the bins with expected count < min_expected into one.

    Returns ``(statistic, degrees_of_freedom)``. Draws in a bin of probability 0 give inf.
    """
    counts = np.asarray(counts, np.float64)
    probs = np.asarray(probs, np.float64)
    n = counts.sum()
    expected = n * probs
    if np.any((probs == 0) & (counts > 0)):
        return np.inf, 1
    big = expected >= min_expected
    obs = list(counts[big])
    exp = list(expected[big])
    if np.any(~big):
        obs.append(counts[~big].sum())
        exp.append(expected[~big].sum())
    obs, exp = np.array(obs), np.array(exp)
    keep = exp > 0
    stat = float(np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep]))
    return stat, int(keep.sum()) - 1


def next_char_probs(params, h, ix, temperature=1.0):
    """softmax(logits / T) of the next character, written from the spec (log-sum-exp)."""
    h = np.tanh(params.Wxh[:, ix] + params.Whh @ h + params.bh)
    z = (params.Why @ h + params.by) / temperature
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def medium_params(V, H, seed):
    """Trained-looking weights: peaked but not degenerate next-character distributions."""
    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(H)
    return Params(rng.standard_normal((H, V)), rng.standard_normal((H, H)) * 1.5 * s,
                  rng.standard_normal((V, H)) * 0.7, rng.standard_normal(H) * 0.5,
                  rng.standard_normal(V))


def recurrence_free_params(V, H, seed):
    """Wxh = Whh = 0: h_t = tanh(bh) at every step, so the draws of one call are i.i.d."""
    rng = np.random.default_rng(seed)
    return Params(np.zeros((H, V)), np.zeros((H, H)), rng.standard_normal((V, H)),
                  rng.standard_normal(H), rng.standard_normal(V) * 1.5)


# --- same seed, same ids -----------------------------------------------------------------

@pytest.mark.parametrize("argmax", [False, True])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
@pytest.mark.parametrize("kind", ["tiny", "medium", "large"])
def test_same_seed_same_ids_in_both_paths(kind, temperature, argmax):
    V, H = 65, 100
    # Saturated weights are chaotic: rounding differences in h grow ~10x per 10 steps and
    # flip a draw after ~170 steps, so the large regime samples fewer characters.
    n = 60 if kind == "large" else 300
    for seed in range(4):
        if kind == "medium":
            params = medium_params(V, H, seed)
        elif kind == "tiny":
            params = tiny_params(V, H, seed)
        else:
            params = large_params(V, H, seed)
        hprev = random_hidden(H, seed)
        kw = dict(seed=seed, temperature=temperature, argmax=argmax)
        fast = fastrnn.sample(params, hprev, 3, n, **kw)
        slow = ref.sample(params, hprev, 3, n, **kw)
        assert fast.dtype == np.int64 and slow.dtype == np.int64 and fast.shape == (n,)
        assert np.array_equal(fast, slow), f"seed {seed}: first difference at {np.flatnonzero(fast != slow)[0]}"
        # Deterministic: the same seed again gives the same ids; hprev is untouched.
        assert np.array_equal(fastrnn.sample(params, hprev, 3, n, **kw), fast)
        assert np.array_equal(hprev, random_hidden(H, seed))
    if not argmax:  # and different seeds differ
        assert not np.array_equal(fastrnn.sample(params, hprev, 3, n, seed=1),
                                  fastrnn.sample(params, hprev, 3, n, seed=2))


def test_reference_sample_is_the_seeds_sample():
    """The reference's draw rule is what the seed's np.random.choice(range(V), p=p) does,
    given the same generator (numpy's Generator.choice: searchsorted on the normalised CDF)."""
    V, H, n = 30, 20, 200
    params = medium_params(V, H, 5)
    Wxh, Whh, Why = params.Wxh, params.Whh, params.Why
    bh, by = params.bh.reshape(H, 1), params.by.reshape(V, 1)
    h = random_hidden(H, 6).reshape(H, 1)
    rng = np.random.default_rng(7)
    x = np.zeros((V, 1))
    x[4] = 1
    ixes = []
    for t in range(n):  # the seed's sample(), verbatim apart from the generator
        h = np.tanh(np.dot(Wxh, x) + np.dot(Whh, h) + bh)
        y = np.dot(Why, h) + by
        p = np.exp(y) / np.sum(np.exp(y))
        ix = rng.choice(range(V), p=p.ravel())
        x = np.zeros((V, 1))
        x[ix] = 1
        ixes.append(ix)
    hprev = random_hidden(H, 6)
    assert np.array_equal(ref.sample(params, hprev, 4, n, seed=7), ixes)
    assert np.array_equal(fastrnn.sample(params, hprev, 4, n, seed=7), ixes)


def test_sample_edge_cases(impl):
    params = medium_params(10, 6, 8)
    out = impl.sample(params, np.zeros(6), 0, 0, seed=1)
    assert out.shape == (0,) and out.dtype == np.int64
    ids = impl.sample(params, np.zeros((6, 1)), 9, 500, seed=2)
    assert ids.min() >= 0 and ids.max() < 10
    assert len(np.unique(ids)) > 3


def test_float32_sampling():
    params = medium_params(40, 30, 9)
    ids64 = fastrnn.sample(params, np.zeros(30), 1, 200, seed=3)
    ids32 = fastrnn.sample(params.astype(np.float32), np.zeros(30), 1, 200, seed=3)
    assert ids32.dtype == np.int64 and ids32.min() >= 0 and ids32.max() < 40
    # float32 rounding may flip a rare draw near a CDF boundary, and then the paths diverge;
    # the first steps agree.
    assert np.array_equal(ids32[:20], ids64[:20])


# --- the draws follow the softmax -----------------------------------------------------------

def test_next_char_frequencies_match_softmax_repeated_calls():
    """20k draws of the next character from one fixed hidden state, one call per draw
    (sample(..., n=1, seed=k)), against the model's softmax."""
    V, H, N = 65, 100, 20_000
    params = medium_params(V, H, 10)
    h0 = random_hidden(H, 11)
    ix = 7
    probs = next_char_probs(params, h0, ix)
    draws = np.array([fastrnn.sample(params, h0, ix, 1, seed=k)[0] for k in range(N)])
    counts = np.bincount(draws, minlength=V)
    stat, dof = chi2_statistic(counts, probs)
    assert dof >= 10
    assert stat < chi2_threshold(dof), (stat, dof, chi2_threshold(dof))


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_frequencies_match_softmax_one_call(impl, temperature):
    """Recurrence-free model: the n draws of one call are i.i.d. from softmax(logits / T)."""
    V, H = 65, 16
    N = 200_000 if impl is fastrnn else 20_000
    params = recurrence_free_params(V, H, 12)
    probs = next_char_probs(params, np.zeros(H), 0, temperature)
    draws = impl.sample(params, np.zeros(H), 0, N, seed=13, temperature=temperature)
    counts = np.bincount(draws, minlength=V)
    stat, dof = chi2_statistic(counts, probs)
    assert dof >= 10
    assert stat < chi2_threshold(dof), (stat, dof, chi2_threshold(dof))


def test_chi_square_test_can_fail():
    """The same draws fail against a slightly wrong distribution (temperature 1.05, or the two
    most likely ids swapped): the statistical test has power, it is not a formality."""
    V, H, N = 65, 16, 200_000
    params = recurrence_free_params(V, H, 12)
    probs = next_char_probs(params, np.zeros(H), 0)
    counts = np.bincount(fastrnn.sample(params, np.zeros(H), 0, N, seed=13), minlength=V)
    stat, dof = chi2_statistic(counts, probs)
    assert stat < chi2_threshold(dof)
    warm = next_char_probs(params, np.zeros(H), 0, temperature=1.05)
    stat, dof = chi2_statistic(counts, warm)
    assert stat > chi2_threshold(dof), stat
    swapped = probs.copy()
    a, b = np.argsort(probs)[-2:]
    swapped[[a, b]] = swapped[[b, a]]
    stat, dof = chi2_statistic(counts, swapped)
    assert stat > chi2_threshold(dof), stat
    # And a sampler that ignores its uniforms' order (off by one draw) is caught by the
    # same-seed test above; here, a sampler that never picks the last id would give inf.
    assert chi2_statistic(counts[:-1].tolist() + [0], probs)[0] > 0


def test_chi2_threshold_is_sane():
    # Exact quantiles at 1e-6 (from tables): dof 10 -> 46.86, dof 64 -> 132.79, dof 100 -> 182.13.
    for dof, exact in [(10, 46.863), (64, 132.787), (100, 182.127)]:
        assert exact <= chi2_threshold(dof) <= exact * 1.025


# --- temperature -----------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.05, 0.01, 1e-3])
def test_low_temperature_approaches_argmax(impl, temperature):
    """As T -> 0, softmax(logits / T) puts all its mass on the largest logit: sampling at a
    small temperature gives the argmax ids (logits / T reach ~1e3 here: the softmax must not
    overflow)."""
    V, H, n = 65, 100, 50
    params = medium_params(V, H, 0)
    hprev = random_hidden(H, 0)
    greedy = impl.sample(params, hprev, 3, n, argmax=True)
    with np.errstate(all="ignore"):  # judge the ids, not the warnings
        cold = impl.sample(params, hprev, 3, n, seed=1, temperature=temperature)
    assert np.array_equal(cold, greedy), f"{np.mean(cold == greedy):.0%} of ids equal the argmax ids"


def test_temperature_moves_entropy():
    """Higher temperature spreads the draws: more distinct ids, lower top frequency."""
    V, H, N = 65, 16, 50_000
    params = recurrence_free_params(V, H, 14)
    tops, distinct = [], []
    for temperature in (0.3, 1.0, 3.0):
        c = np.bincount(fastrnn.sample(params, np.zeros(H), 0, N, seed=15, temperature=temperature),
                        minlength=V)
        tops.append(c.max())
        distinct.append(np.count_nonzero(c))
    assert tops[0] > tops[1] > tops[2]
    assert distinct[0] <= distinct[1] <= distinct[2]
