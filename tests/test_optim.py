"""Optimizers and gradient clipping over flat buffers (fastrnn.optim): the kernels, their twins, torch.optim.

The kernels compile without fastmath and follow their numpy twins'
(:func:`fastrnn.reference.flat_adagrad_update` ...) operation order, so the
two agree bit for bit (``np.array_equal``) over several steps, in float64
and float32. torch.optim computes the same formulas in another order
(``addcdiv``, ``lerp``; Adagrad's ``eps`` inside its accumulator), so it
agrees to rounding (~1e-12 relative over the steps here). torch is a
test-only oracle: its tests skip without it, except under CI (``CI`` set).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import fastrnn
from fastrnn import optim
from fastrnn import reference as ref
from fastrnn.model import ModelSpec, init_model

from conftest import allclose_report

N = 101  # entries in the flat buffers
STEPS = 6
HYPER = {  # not the defaults, so a swapped argument shows
    "adagrad": dict(learning_rate=0.07, eps=1e-6),
    "rmsprop": dict(learning_rate=3e-3, alpha=0.9, eps=1e-7),
    "adam": dict(learning_rate=4e-3, beta1=0.8, beta2=0.99, eps=1e-7),
}
CLIPS = {  # gradients ~ N(0, 1): ||g|| ~ 10, so clip_norm=1 scales every step, and clip=0.5 cuts ~60 % of entries
    "off": dict(clip=None, clip_norm=None),
    "value": dict(clip=0.5, clip_norm=None),
    "norm": dict(clip=None, clip_norm=1.0),
    "value+norm": dict(clip=0.5, clip_norm=1.0),
}


def gradient_sequence(dtype, seed=0, n=N, steps=STEPS):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(steps)]


def start(dtype, seed=1, n=N):
    return np.random.default_rng(seed).standard_normal(n).astype(dtype)


def twin_update(opt, param, grad, states, step, clip, clip_norm):
    """The numpy twin of :func:`fastrnn.optim.apply`, with the global-norm factor from ``optim.norm_scale``."""
    scale = optim.norm_scale(grad, clip, clip_norm)
    if opt.name == "adagrad":
        ref.flat_adagrad_update(param, grad, states[0], opt.learning_rate, opt.eps, clip, scale)
    elif opt.name == "rmsprop":
        ref.flat_rmsprop_update(param, grad, states[0], opt.learning_rate, opt.alpha, opt.eps, clip, scale)
    else:
        ref.flat_adam_update(param, grad, states[0], states[1], step, opt.learning_rate, opt.beta1, opt.beta2,
                             opt.eps, clip, scale)


@pytest.mark.parametrize("threads", [1, 3], ids=["one-piece", "3-pieces"])  # 3: 33 + 34 + 34 entries at once
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("clipping", list(CLIPS))
@pytest.mark.parametrize("name", fastrnn.OPTIMIZERS)
def test_kernel_is_bit_identical_to_twin(name, clipping, dtype, threads, monkeypatch):
    monkeypatch.setattr(optim, "PIECE_MIN", 10)
    opt = fastrnn.Optimizer(name, **HYPER[name])
    clip, clip_norm = CLIPS[clipping]["clip"], CLIPS[clipping]["clip_norm"]
    p_kernel, p_twin = start(dtype), start(dtype)
    s_kernel = [np.zeros(N, dtype) for _ in opt.state_names]
    s_twin = [np.zeros(N, dtype) for _ in opt.state_names]
    for step, g in enumerate(gradient_sequence(dtype), start=1):
        g_kernel, g_twin = g.copy(), g.copy()
        optim.apply(opt, p_kernel, g_kernel, s_kernel, step, clip=clip, clip_norm=clip_norm, threads=threads)
        twin_update(opt, p_twin, g_twin, s_twin, step, clip, clip_norm)
        assert np.array_equal(g_kernel, g_twin), f"step {step}: clipped gradient"
        assert np.array_equal(p_kernel, p_twin), f"step {step}: parameters"
        for state_name, a, b in zip(opt.state_names, s_kernel, s_twin):
            assert np.array_equal(a, b), f"step {step}: {state_name}"
        if clip is not None:
            assert np.max(np.abs(g_kernel)) <= clip and np.any(np.abs(g) > clip)
        if clip_norm is not None:  # the norm clip was active: the written-back gradient has norm ~clip_norm
            assert abs(np.linalg.norm(g_kernel.astype(np.float64)) - clip_norm) < 1e-5
    assert p_kernel.dtype == dtype and not np.array_equal(p_kernel, start(dtype))


def test_apply_writes_back_and_leaves_zero_padding_alone():
    """Over a model's flat buffer: zero gradient entries (the padding) leave their parameters and state at zero."""
    params = init_model(ModelSpec("gru", 2, 7, 5), seed=2)
    grads = params.zeros_like()
    rng = np.random.default_rng(2)
    for a in grads:
        a[...] = rng.standard_normal(a.shape)
    pad = np.ones(params.flat.size, bool)
    for a in params:
        pad[(a.ctypes.data - params.flat.ctypes.data) // a.itemsize + np.arange(a.size)] = False
    assert pad.any()
    for name in fastrnn.OPTIMIZERS:
        opt = fastrnn.Optimizer(name)
        p = params.copy()
        states = [params.zeros_like() for _ in opt.state_names]
        for step in (1, 2):
            optim.apply(opt, p.flat, grads.copy().flat, [s.flat for s in states], step, clip=0.5, clip_norm=1.0)
        assert not np.any(p.flat[pad]) and all(not np.any(s.flat[pad]) for s in states)
        assert not np.array_equal(p.flat, params.flat)


# --- torch.optim -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch():
    """PyTorch, the test-only oracle: skip without it, fail without it under CI."""
    if os.environ.get("CI"):
        import torch
        return torch
    return pytest.importorskip("torch")


def torch_optimizer(torch, opt, tensors):
    if opt.name == "adagrad":  # the seed's sqrt(m + eps): eps in the accumulator's start, none outside the sqrt
        return torch.optim.Adagrad(tensors, lr=opt.learning_rate, initial_accumulator_value=opt.eps, eps=0.0)
    if opt.name == "rmsprop":
        return torch.optim.RMSprop(tensors, lr=opt.learning_rate, alpha=opt.alpha, eps=opt.eps)
    return torch.optim.Adam(tensors, lr=opt.learning_rate, betas=(opt.beta1, opt.beta2), eps=opt.eps)


def torch_states(opt, torch_opt, tensor):
    """torch's per-parameter state as fastrnn's state arrays (Adagrad's sum less its eps start)."""
    state = torch_opt.state[tensor]
    if opt.name == "adagrad":
        return [state["sum"].numpy() - opt.eps]
    if opt.name == "rmsprop":
        return [state["square_avg"].numpy()]
    return [state["exp_avg"].numpy(), state["exp_avg_sq"].numpy()]


@pytest.mark.parametrize("clipping", ["value", "norm"])
@pytest.mark.parametrize("name", fastrnn.OPTIMIZERS)
def test_optimizer_matches_torch_optim(torch, name, clipping):
    opt = fastrnn.Optimizer(name, **HYPER[name])
    clip, clip_norm = CLIPS[clipping]["clip"], CLIPS[clipping]["clip_norm"]
    param = start(np.float64)
    states = [np.zeros(N) for _ in opt.state_names]
    tensor = torch.tensor(param.copy(), requires_grad=True)
    torch_opt = torch_optimizer(torch, opt, [tensor])
    for step, g in enumerate(gradient_sequence(np.float64), start=1):
        optim.apply(opt, param, g.copy(), states, step, clip=clip, clip_norm=clip_norm)
        tensor.grad = torch.tensor(g.copy())
        if clip is not None:
            torch.nn.utils.clip_grad_value_([tensor], clip)
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_([tensor], clip_norm)
        torch_opt.step()
        with torch.no_grad():
            expected = tensor.detach().numpy()
            ok, worst = allclose_report(param, expected, rtol=1e-12, atol_scale=1e-14)
            assert ok, f"step {step}: parameters differ from torch.optim (worst/tol {worst:.3g})"
            for state_name, a, e in zip(opt.state_names, states, torch_states(opt, torch_opt, tensor)):
                ok, worst = allclose_report(a, e, rtol=1e-12, atol_scale=1e-14)
                assert ok, f"step {step}: {state_name} differs from torch (worst/tol {worst:.3g})"


@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("clip_norm", [1.0, 1e3])
def test_clip_norm_matches_clip_grad_norm(torch, clip_norm, clip):
    """Over a model's named arrays: value clip then global-norm clip as torch's ``clip_grad_value_`` then
    ``clip_grad_norm_`` (the padding of the flat buffer adds nothing to the norm). 1e3: the norm is below it."""
    grads = init_model(ModelSpec("lstm", 2, 7, 5), seed=3).zeros_like()
    rng = np.random.default_rng(3)
    for a in grads:
        a[...] = rng.standard_normal(a.shape)
    tensors = []
    for a in grads:
        t = torch.zeros(a.shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.tensor(a.copy())
        tensors.append(t)
    if clip is not None:
        torch.nn.utils.clip_grad_value_(tensors, clip)
    total = float(torch.nn.utils.clip_grad_norm_(tensors, clip_norm))
    g = grads.copy()
    opt = fastrnn.Optimizer("adagrad")
    optim.apply(opt, np.zeros_like(g.flat), g.flat, [np.zeros_like(g.flat)], 1, clip=clip, clip_norm=clip_norm)
    scale = optim.norm_scale(grads.copy().flat, clip, clip_norm)
    assert (scale < 1) == (clip_norm < total)
    for a, t in zip(g, tensors):
        ok, worst = allclose_report(a, t.grad.numpy(), rtol=1e-12, atol_scale=1e-14)
        assert ok, f"clipped gradient differs from torch (worst/tol {worst:.3g})"
    if clip_norm > total and clip is None:
        assert np.array_equal(g.flat, grads.flat), "a norm below clip_norm must leave the gradient as it is"


# --- hyperparameters -----------------------------------------------------------------------------------

def test_defaults():
    assert fastrnn.Optimizer().name == "adagrad"
    assert {name: fastrnn.Optimizer(name).learning_rate for name in fastrnn.OPTIMIZERS} == optim.DEFAULT_LEARNING_RATE
    assert fastrnn.Optimizer("adam").state_names == ("exp_avg", "exp_avg_sq")


@pytest.mark.parametrize("kwargs", [
    dict(name="sgd"), dict(name="Adam"), dict(learning_rate=-0.1), dict(learning_rate=0.0),
    dict(learning_rate=float("nan")), dict(learning_rate=float("inf")), dict(learning_rate=True),
    dict(learning_rate="0.1"), dict(name="rmsprop", alpha=1.0), dict(name="rmsprop", alpha=-0.1),
    dict(name="adam", beta1=1.0), dict(name="adam", beta2=1.5), dict(eps=0.0), dict(eps=-1e-8),
    dict(eps=float("nan")),
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_bad_optimizer_values_raise(kwargs):
    with pytest.raises(ValueError):
        fastrnn.Optimizer(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(step=0), dict(clip=-1.0), dict(clip=float("nan")), dict(clip=float("inf"))])
def test_bad_apply_arguments_raise(kwargs):
    opt = fastrnn.Optimizer("adam")
    args = dict(step=1, clip=5.0) | kwargs
    with pytest.raises(ValueError):
        optim.apply(opt, np.zeros(4), np.ones(4), [np.zeros(4), np.zeros(4)], args["step"], clip=args["clip"])


def test_scheduled_rate_warms_up_then_decays_along_a_cosine_to_its_floor():
    rate = lambda step, **kw: optim.scheduled_rate(2.0, step, **kw)  # noqa: E731
    assert [rate(s) for s in (1, 50, 10**9)] == [2.0, 2.0, 2.0]  # constant
    assert [rate(s, warmup_steps=4) for s in (1, 2, 4, 5)] == [0.5, 1.0, 2.0, 2.0]
    cos = dict(schedule="cosine", warmup_steps=10, decay_steps=110, min_fraction=0.1)
    assert rate(10, **cos) == 2.0 and rate(11, **cos) < 2.0
    assert rate(60, **cos) == pytest.approx(0.2 + 1.8 * 0.5)  # half way: the mean of peak and floor
    assert rate(110, **cos) == pytest.approx(0.2) and rate(10**6, **cos) == pytest.approx(0.2)
    steps = np.arange(11, 111)
    assert np.all(np.diff([rate(s, **cos) for s in steps]) < 0)  # strictly decreasing over the decay
    assert rate(500, schedule="cosine", decay_steps=None) == 2.0  # decay not fixed yet: the peak
