"""Top-k and top-p (nucleus) sampling: the kernel's cut equals the numpy twin's, one seed gives the same ids in
the kernels and the twins for every cell, depth and dtype, the draws follow the renormalised distribution, and
``fastrnn sample`` takes --top-k, --top-p, --prime-file and --num-samples."""
from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn import inference, kernels
from fastrnn import reference as ref
from fastrnn.model import CELLS

from conftest import YORK_TEXT
from test_cells import case_seed, make_data, make_model
from test_cli import fastrnn as run_cli
from test_sampling import chi2_statistic, chi2_threshold, medium_params, next_char_probs, recurrence_free_params

TOPS = [(3, None), (None, 0.9), (5, 0.7), (1, None), (None, 0.05)]


def expected_kept(p, top_k, top_p):
    """The ids the spec keeps, written from its words: rank (ties to the lower id), cut by count, then by mass."""
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    order = order[:top_k] if top_k else order
    if top_p is not None:
        total = sum(float(p[i]) for i in order)
        kept, before = [], 0.0
        for i in order:
            if before >= top_p * total:
                break
            kept.append(i)
            before += float(p[i])
        order = kept
    return set(order)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_keep_top_kernel_equals_twin_and_spec(dtype):
    rng = np.random.default_rng(0)
    for trial in range(40):
        V = int(rng.integers(2, 40))
        z = rng.standard_normal(V) * 3
        if trial % 4 == 0:  # ties: several ids share a probability
            z = np.round(z)
        p = np.exp(z - z.max())
        p = (p / p.sum()).astype(dtype)
        for top_k, top_p in TOPS + [(V, None), (V + 3, 0.999)]:
            mine = p.copy()
            kernels.keep_top(mine, top_k or 0, 1.0 if top_p is None else top_p)
            twin = ref.keep_top(p, top_k, top_p)
            assert twin.dtype == p.dtype and np.array_equal(mine, twin), (trial, top_k, top_p)
            kept = set(np.flatnonzero(mine).tolist())
            assert kept == expected_kept(p, top_k, top_p), (trial, top_k, top_p)
            assert np.array_equal(mine[sorted(kept)], p[sorted(kept)])  # the kept ones are untouched


def test_keep_top_can_fail():
    """A cut that ranks ties the other way, or keeps one id too many, is not what the spec keeps."""
    p = np.array([0.3, 0.3, 0.2, 0.2])
    assert expected_kept(p, 1, None) == {0}
    assert set(np.flatnonzero(ref.keep_top(p, 3, None))) == {0, 1, 2}
    assert expected_kept(p, None, 0.6) == {0, 1}
    assert expected_kept(p, None, 0.61) == {0, 1, 2}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("top_k,top_p", TOPS)
def test_seed_model_same_seed_same_ids(top_k, top_p, dtype):
    """The seed's rnn kernels (float32 too) against the float64 twin of the seed's sample."""
    V, H, n = 65, 32, 300
    for seed in range(3):
        params = medium_params(V, H, seed).astype(dtype)
        h = np.tanh(np.random.default_rng(seed).standard_normal(H)).astype(dtype)
        kw = dict(seed=seed, temperature=0.9, top_k=top_k, top_p=top_p)
        fast = fastrnn.sample(params, h, 3, n, **kw)
        assert np.array_equal(fast, ref.sample(params, h, 3, n, **kw))
        pieces = fastrnn.rnn.sample_chunks(params, h, 3, n, chunk=7, **kw)
        assert np.array_equal(np.concatenate(list(pieces)), fast)
    plain = fastrnn.sample(params, h, 3, n, seed=0)
    assert not np.array_equal(plain, fastrnn.sample(params, h, 3, n, seed=0, top_k=top_k, top_p=top_p))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell,num_layers", [(c, n) for c in CELLS for n in (1, 2)])
def test_every_model_same_seed_same_ids_as_the_twin(cell, num_layers, dtype):
    seed = case_seed(cell, num_layers, salt=31)
    params = make_model(cell, num_layers, "init", seed=seed, dtype=dtype, vocab_size=11, hidden_size=8)
    params["Why"][...] *= 6  # peaked distributions: the cuts bite
    _, _, state = make_data(params.spec, 1, seed=seed, dtype=dtype)
    for top_k, top_p in [(None, None), (3, None), (None, 0.8), (4, 0.6)]:
        kw = dict(seed=seed, temperature=0.8, top_k=top_k, top_p=top_p)
        ids = inference.sample(params, state, 2, 40, **kw)
        assert np.array_equal(ids, ref.stack_sample(params, state, 2, 40, **kw)), (top_k, top_p)
    assert np.array_equal(inference.sample(params, state, 2, 40, argmax=True),
                          ref.stack_sample(params, state, 2, 40, argmax=True))


@pytest.mark.parametrize("impl_name", ["fast", "reference"])
@pytest.mark.parametrize("top_k,top_p", [(6, None), (None, 0.8), (10, 0.9)])
def test_draws_follow_the_cut_distribution(impl_name, top_k, top_p):
    """Recurrence-free model: i.i.d. draws from softmax cut to the kept set and renormalised."""
    impl = fastrnn if impl_name == "fast" else ref
    V, H = 65, 16
    N = 100_000 if impl is fastrnn else 10_000
    params = recurrence_free_params(V, H, 12)
    probs = next_char_probs(params, np.zeros(H), 0)
    kept = sorted(expected_kept(probs, top_k, top_p))
    cut = np.zeros(V)
    cut[kept] = probs[kept] / probs[kept].sum()
    draws = impl.sample(params, np.zeros(H), 0, N, seed=13, top_k=top_k, top_p=top_p)
    counts = np.bincount(draws, minlength=V)
    assert set(np.flatnonzero(counts)) <= set(kept)
    stat, dof = chi2_statistic(counts, cut)
    assert stat < chi2_threshold(max(dof, 1)), (stat, dof)
    stat_full, dof_full = chi2_statistic(counts, probs)  # and the uncut softmax is rejected
    assert stat_full > chi2_threshold(max(dof_full, 1))


@pytest.mark.parametrize("bad", [dict(top_k=-1), dict(top_k=2.5), dict(top_p=0), dict(top_p=1.5),
                                 dict(top_p=float("nan")), dict(top_p="x")])
def test_bad_top_values_raise(bad):
    params = medium_params(5, 4, 0)
    for call in (lambda: fastrnn.sample(params, np.zeros(4), 0, 3, **bad),
                 lambda: ref.sample(params, np.zeros(4), 0, 3, **bad),
                 lambda: inference.sample(make_model("gru", 1), None, 0, 3, **bad)):
        with pytest.raises(ValueError, match="top_"):
            call()


# --- the command line ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("filters")
    (folder / "york.txt").write_text(YORK_TEXT, encoding="utf-8")
    r = run_cli("train", "york.txt", "--hidden-size", 16, "--seq-length", 10, "--seed", 1, "--model", "gru",
                "--steps", 30, "--sample-every", 0, "--log-every", 0, "--checkpoint", "m.npz", cwd=folder)
    assert r.returncode == 0, r.stderr
    return folder


def test_cli_top_k_top_p_prime_file_and_num_samples(checkpoint):
    from fastrnn.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint / "m.npz").model
    (checkpoint / "prime.txt").write_text("Now is the", encoding="utf-8")
    r = run_cli("sample", "m.npz", "--prime-file", "prime.txt", "--top-k", 5, "--top-p", 0.9, "--seed", 3,
                "--length", 40, "--num-samples", 3, cwd=checkpoint)
    assert r.returncode == 0, r.stderr
    samples = r.stdout.split("----\n")
    assert len(samples) == 3
    rng = np.random.default_rng(3)  # one stream of draws across the samples
    for text in samples:
        expected = model.sample(40, prime="Now is the", seed=rng, top_k=5, top_p=0.9)
        assert text == "Now is the" + expected + "\n"
    assert len(set(samples)) == 3
    one = run_cli("sample", "m.npz", "--prime", "Now is the", "--top-k", 5, "--top-p", 0.9, "--seed", 3,
                  "--length", 40, cwd=checkpoint)
    assert one.returncode == 0 and one.stdout == samples[0]


@pytest.mark.parametrize("flags,message", [
    (["--top-k", 0], "--top-k must be a positive integer"),
    (["--top-p", 0], "--top-p must be a number in (0, 1]"),
    (["--top-p", "nan"], "--top-p must be a number in (0, 1]"),
    (["--num-samples", 0], "--num-samples must be a positive integer"),
    (["--prime", "a", "--prime-file", "prime.txt"], "exclude each other"),
    (["--prime-file", "missing.txt"], "does not exist"),
    (["--prime-file", "unknown.txt"], "not in the model's vocabulary"),
])
def test_cli_bad_sampling_flags_exit_2(checkpoint, flags, message):
    (checkpoint / "prime.txt").write_text("Now", encoding="utf-8")
    (checkpoint / "unknown.txt").write_text("Now€", encoding="utf-8")
    r = run_cli("sample", "m.npz", *flags, cwd=checkpoint)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
