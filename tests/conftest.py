"""Shared fixtures and helpers for fastrnn's tests.

Chain of trust: finite differences check the reference twin, the reference twin
checks the Numba kernels, an N-step trajectory checks the training step.

Tolerances (float64): ``rtol=1e-10`` plus an absolute slack of ``1e-12`` times the
largest entry of the reference array. The slack is needed because entries many
orders of magnitude below the largest (cancellation in dWhh, ``1 - h**2`` of a
saturated unit) carry the rounding noise of the large ones; it is far too small
to hide a real error (a perturbation of 1e-8 relative is caught, see
``test_comparison_can_fail``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn import Params, kernels
from fastrnn import reference as ref

RTOL64 = 1e-10
ATOL64_SCALE = 1e-12
GRAD_NAMES = ("Wxh", "Whh", "Why", "bh", "by")
CORPUS = Path(fastrnn.__file__).resolve().parent / "data" / "tinyshakespeare.txt"
#: A few lines of Richard III: the small corpus of the CLI and trainer tests (written by ``corpus_file``).
YORK_TEXT = ("Now is the winter of our discontent\nMade glorious summer by this sun of York;\n"
             "And all the clouds that lour'd upon our house\nIn the deep bosom of the ocean buried.\n") * 6


@pytest.fixture
def corpus_file(tmp_path):
    """YORK_TEXT in a file of tmp_path (york.txt)."""
    path = tmp_path / "york.txt"
    path.write_text(YORK_TEXT, encoding="utf-8")
    return path


# --- comparison --------------------------------------------------------------

def allclose_report(actual, expected, rtol=RTOL64, atol_scale=ATOL64_SCALE, scale=None):
    """Compare arrays with rtol and an atol scaled to max|expected| (or to ``scale`` when given).

    Returns ``(ok, worst)`` where ``worst`` is the largest
    ``|actual - expected| / (atol + rtol * |expected|)`` (ok means worst <= 1),
    so a test can both assert and report how close it came.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return False, np.inf
    if not (np.all(np.isfinite(actual)) and np.all(np.isfinite(expected))):
        same = np.array_equal(actual, expected, equal_nan=True)
        return same, 0.0 if same else np.inf
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    atol = atol_scale * scale
    bound = atol + rtol * np.abs(expected)
    err = np.abs(actual - expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound > 0, err / np.where(bound > 0, bound, 1.0),
                         np.where(err > 0, np.inf, 0.0))
    worst = float(np.max(ratio)) if ratio.size else 0.0
    return worst <= 1.0, worst


def max_rel_err(actual, expected):
    """max |a - e| / max(|e|, tiny): the figure quoted in reports."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    denom = np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(actual - expected) / denom))


def compare_results(fast, reference, rtol=RTOL64, atol_scale=ATOL64_SCALE):
    """Compare two ``(loss, grads, h_last)`` triples; return a list of failure strings."""
    (l_f, g_f, h_f), (l_r, g_r, h_r) = fast, reference
    failures = []
    ok, worst = allclose_report(l_f, l_r, rtol, atol_scale)
    if not ok:
        failures.append(f"loss: {l_f!r} vs {l_r!r} (worst/tol {worst:.3g})")
    # One absolute scale for all five gradients: the largest reference entry.
    # A deeply saturated unit (1 - h^2 ~ 1e-8) makes its dWhh/dWxh/dbh entries
    # tiny and conditioned like 1 / (1 - h^2): one ulp of h, in either
    # implementation, moves them by ~1e-8 relative. Scaled to the whole
    # gradient, those entries still get a 1e-12 absolute bound.
    grad_scale = max(float(np.max(np.abs(e))) if np.size(e) else 0.0 for e in g_r)
    for name, a, e in zip(GRAD_NAMES, g_f, g_r):
        ok, worst = allclose_report(a, e, rtol, atol_scale, scale=grad_scale)
        if not ok:
            failures.append(f"d{name}: worst/tol {worst:.3g}")
    ok, worst = allclose_report(h_f, h_r, rtol, atol_scale)
    if not ok:
        failures.append(f"h_last: worst/tol {worst:.3g}")
    return failures


def assert_params_close(actual, expected, rtol, atol_scale=ATOL64_SCALE, what="params"):
    for name, a, e in zip(GRAD_NAMES, actual, expected):
        ok, worst = allclose_report(a, e, rtol, atol_scale)
        assert ok, f"{what}.{name} differs: worst/tol {worst:.3g}, max rel err {max_rel_err(a, e):.3g}"


# --- parameters and data -------------------------------------------------------

def tiny_params(V, H, seed=0, dtype=np.float64):
    """The seed's init: randn * 0.01 weights, zero biases."""
    return fastrnn.init_params(V, H, seed=seed, dtype=dtype)


def large_params(V, H, seed=0, scale=3.0, bias=2.0, dtype=np.float64):
    """Weights ~ scale * N(0, 1/sqrt(H)) (std) and biases ~ N(0, bias): tanh saturates, grads clip."""
    rng = np.random.default_rng(seed)
    std = scale / np.sqrt(H)
    Wxh = rng.standard_normal((H, V)) * max(std, 1.0)
    Whh = rng.standard_normal((H, H)) * std
    Why = rng.standard_normal((V, H)) * std
    bh = rng.standard_normal(H) * bias
    by = rng.standard_normal(V) * bias
    return Params(Wxh, Whh, Why, bh, by).astype(dtype)


def make_params(kind, V, H, seed=0, dtype=np.float64):
    if kind == "tiny":
        return tiny_params(V, H, seed, dtype)
    if kind == "large":
        return large_params(V, H, seed, dtype=dtype)
    raise ValueError(kind)


def random_ids(V, T, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, size=T, dtype=np.int64), rng.integers(0, V, size=T, dtype=np.int64)


def random_hidden(H, seed=0, scale=0.5):
    return np.tanh(np.random.default_rng(seed).standard_normal(H) * scale)


def load_corpus_ids(max_chars=None):
    """Ids of tiny shakespeare under the sorted vocabulary (vectorised), and V."""
    text = CORPUS.read_text(encoding="utf-8")
    if max_chars is not None:
        text = text[:max_chars]
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    full = np.frombuffer(CORPUS.read_text(encoding="utf-8").encode("utf-32-le"), dtype=np.uint32)
    vocab = np.unique(full)  # sorted vocabulary of the whole corpus
    ids = np.searchsorted(vocab, codes).astype(np.int64)
    return ids, int(vocab.size)


@pytest.fixture(scope="session")
def corpus_ids():
    return load_corpus_ids(max_chars=20_000)


# --- compile once ------------------------------------------------------------

def _warm(dtype):
    V, H, T = 3, 2, 2
    p = tiny_params(V, H, seed=0, dtype=dtype)
    ids = np.array([0, 2], np.int64)
    h = np.zeros(H, dtype)
    fastrnn.loss_and_grads(p, ids, ids, h)
    fastrnn.loss_and_grads(p, ids, ids, h, clip=None)
    fastrnn.sequence_loss(p, ids, ids, h)
    fastrnn.log_probs(p, ids, ids, h)
    fastrnn.train_step(p.copy(), p.zeros_like(), ids, ids, h, 0.1)
    fastrnn.adagrad_update(p.copy(), p.zeros_like(), p.zeros_like(), 0.1)
    fastrnn.sample(p, h, 0, 3, seed=0)
    fastrnn.sample(p, h, 0, 3, seed=0, argmax=True)
    fastrnn.sample(p, h, 0, 3, seed=0, top_k=2, top_p=0.9)
    data = np.array([0, 1, 2, 0, 1], np.int64)
    fastrnn.train_steps(p.copy(), p.zeros_like(), data, [0, 1], [True, False], np.zeros(H, dtype), 0.1,
                        fastrnn.Workspace(V, H, T, dtype))


def _warm_stack(dtype):
    """The generic engine (every cell; layer 0 and a layer above it) and the flat-buffer optimizers."""
    from fastrnn import engine, inference, optim
    from fastrnn.model import ModelSpec, init_model

    ids = np.array([[0, 2], [1, 0]], np.int64)
    for cell in fastrnn.CELLS:
        p = init_model(ModelSpec(cell, 2, 3, 2), seed=0, dtype=dtype)
        engine.stack_loss_and_grads(p, ids, ids)
        engine.stack_loss_and_grads(p, ids, ids, clip=None)
        inference.sequence_loss(p, ids[0], ids[0])
        inference.log_probs(p, ids[0], ids[0])
        inference.sample(p, None, 0, 2, seed=0)
        inference.sample(p, None, 0, 2, seed=0, argmax=True)
        inference.sample(p, None, 0, 2, seed=0, top_k=2, top_p=0.9)
    for name in fastrnn.OPTIMIZERS:
        opt = fastrnn.Optimizer(name)
        flat = p.flat.copy()
        optim.apply(opt, flat, p.flat.copy(), [np.zeros_like(flat) for _ in opt.state_names], 1, clip=5.0,
                    clip_norm=1.0)


@pytest.fixture(scope="session", autouse=True)
def warm_kernels():
    """Compile (or load from cache) every kernel for float64 and float32, once per session."""
    for dtype in (np.float64, np.float32):
        _warm(dtype)
        _warm_stack(dtype)
    return kernels


@pytest.fixture(params=["fast", "reference"])
def impl(request):
    """The fast path or the reference twin: same names, same meanings."""
    return fastrnn if request.param == "fast" else ref


def rewrite_npz(src, dst, **changes):
    """Copy the .npz ``src`` to ``dst`` with arrays replaced (``name=value``) or removed (``name=None``)."""
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(dst, **arrays)
    return dst
