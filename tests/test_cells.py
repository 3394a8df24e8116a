"""Every cell and depth (tanh rnn, LSTM, GRU; 1 and 2 layers): the stack engine against its twin and PyTorch.

Chain of trust for the generic engine:

1. central finite differences (float64) check the twin
   :func:`fastrnn.reference.stack_loss_and_grads`;
2. PyTorch autograd (``torch.nn.RNN/LSTM/GRU`` + ``Linear``, one-hot inputs)
   checks the twin and the public :func:`fastrnn.loss_and_grads` through
   :func:`fastrnn.to_torch`;
3. the twin checks the kernels (:func:`fastrnn.engine.stack_loss_and_grads`)
   with saturated gates and an active clip, float64 at ``rtol=1e-10`` and
   float32 at ``1e-4``; a 1e-8 relative perturbation of any twin array is caught.

Sizes are tiny (V=7, H=5, T=4): every case runs in milliseconds, so the
parametrisation, not the size, carries the coverage. torch is a test-only
oracle: its tests skip without it, except under CI (``CI`` set), where a
missing torch fails them.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn import chunks, engine, inference, workspaces
from fastrnn import reference as ref
from fastrnn.model import CELLS, ModelParams, ModelSpec, init_model

from conftest import ATOL64_SCALE, RTOL64, allclose_report

V, H, T = 7, 5, 4
CELL_LAYERS = [(cell, layers) for cell in CELLS for layers in (1, 2)]
LARGE = 10.0  # std of every entry of a "large" model: many gates within 1e-6 of 0 / 1, gradients clip
SMALL_CLIP = 0.5  # below the largest gradient entry of every "large" case here
DROPOUT = engine.Dropout(0.3, 12345, 7, 8, 2)  # streams 2.. of a batch of 8 at step 7: masks off stream 0
TOL = {np.float64: dict(rtol=RTOL64, atol_scale=ATOL64_SCALE), np.float32: dict(rtol=1e-4, atol_scale=1e-5)}


# --- models, data and comparisons -------------------------------------------------------------

def case_seed(cell, num_layers, B=1, salt=0):
    return 1000 * salt + 100 * CELLS.index(cell) + 10 * num_layers + B


def make_model(cell, num_layers, kind="init", seed=0, dtype=np.float64, vocab_size=V, hidden_size=H):
    """kind "init": PyTorch's initialisation (U(-1/sqrt(H), 1/sqrt(H))); "large": every entry ~ N(0, LARGE^2)."""
    params = init_model(ModelSpec(cell, num_layers, vocab_size, hidden_size), seed=seed)
    if kind == "large":
        rng = np.random.default_rng(seed + 7919)
        for a in params:
            a[...] = rng.standard_normal(a.shape) * LARGE
    elif kind != "init":
        raise ValueError(kind)
    return params.astype(dtype)


def make_data(spec, B, seq_length=T, seed=0, dtype=np.float64):
    """(B, T) int64 inputs and targets, and a random state: PyTorch's layout, a tuple of (L, B, H)."""
    rng = np.random.default_rng(seed)
    inputs = rng.integers(0, spec.vocab_size, (B, seq_length), dtype=np.int64)
    targets = rng.integers(0, spec.vocab_size, (B, seq_length), dtype=np.int64)
    shape = (spec.num_layers, B, spec.hidden_size)
    h = np.tanh(rng.standard_normal(shape))
    state = (h, rng.standard_normal(shape)) if spec.cell == "lstm" else (h,)
    return inputs, targets, tuple(s.astype(dtype) for s in state)


def dropout_case(spec, B, mode, dtype=np.float64):
    """``(dropout, masks)`` for the engine and the twin: (None, None) for mode "off", else :data:`DROPOUT`
    (B <= 6 streams from stream 2) and the twin's same masks (L, T, B, H)."""
    if mode == "off":
        return None, None
    d = DROPOUT
    return d, ref.dropout_masks(d.seed, d.step, d.p, spec.num_layers, T, d.total_streams, spec.hidden_size,
                                range(d.first_stream, d.first_stream + B), dtype)


def as_given(spec, state):
    """The public API's state: the pair (h, c) for an LSTM, ``h`` alone otherwise."""
    return tuple(state) if spec.cell == "lstm" else state[0]


def as_parts(spec, state):
    return tuple(state) if spec.cell == "lstm" else (state,)


def compare_stack(actual, expected, rtol=RTOL64, atol_scale=ATOL64_SCALE):
    """Compare two ``(loss, grads, state)`` results of the stack; return a list of failures (empty: close).

    One absolute scale for every gradient array (the largest entry of all of
    the expected gradients, as in ``conftest.compare_results``); the loss and
    each state array are scaled to themselves.
    """
    (l_a, g_a, s_a), (l_e, g_e, s_e) = actual, expected
    failures = []
    ok, worst = allclose_report(l_a, l_e, rtol, atol_scale)
    if not ok:
        failures.append(f"loss: {l_a!r} vs {l_e!r} (worst/tol {worst:.3g})")
    if g_a.names != g_e.names:
        return failures + [f"gradient names {g_a.names} vs {g_e.names}"]
    grad_scale = max(float(np.max(np.abs(a))) for a in g_e)
    for name in g_e.names:
        ok, worst = allclose_report(g_a[name], g_e[name], rtol, atol_scale, scale=grad_scale)
        if not ok:
            failures.append(f"d{name}: worst/tol {worst:.3g}")
    if len(s_a) != len(s_e):
        return failures + [f"{len(s_a)} state arrays vs {len(s_e)}"]
    for name, a, e in zip(("h", "c"), s_a, s_e):
        ok, worst = allclose_report(a, e, rtol, atol_scale)
        if not ok:
            failures.append(f"state {name}: worst/tol {worst:.3g}")
    return failures


def saturated_fraction(workspace):
    """Fraction of the gate activations (every layer, step and stream) within 1e-6 of 0, 1 or -1.

    After a step the workspace's ``gates`` hold the activations: [i, f, g, o]
    (LSTM), [r, z, n] (GRU), h itself (tanh rnn).
    """
    acts = np.concatenate([np.abs(a["gates"].astype(np.float64)).ravel() for a in workspace.layers])
    return float(np.mean(np.minimum(acts, 1 - acts) < 1e-6))


def padding_is_zero(grads):
    """The flat buffer holds nothing outside the named views (a global norm over ``flat`` relies on it)."""
    return np.count_nonzero(grads.flat) == sum(np.count_nonzero(a) for a in grads)


# --- 1. finite differences check the twin -------------------------------------------------------

def finite_difference_failures(params, inputs, targets, state, rng, rtol, atol_scale, eps=1e-5, per_array=3,
                               masks=None):
    """Central differences of the twin's loss at ``per_array`` entries of every array (the largest-gradient
    entry and random others) against the twin's unclipped gradient (with dropout ``masks``); return failures."""
    _, grads, _ = ref.stack_loss_and_grads(params, inputs, targets, state, clip=None, masks=masks)
    scale = max(float(np.max(np.abs(g))) for g in grads)
    failures = []
    for name in params.names:
        a, g = params[name], grads[name]
        picks = {int(np.argmax(np.abs(g)))} | {int(k) for k in rng.choice(a.size, min(per_array, a.size) - 1,
                                                                              replace=False)}
        for k in sorted(picks):
            idx = tuple(int(i) for i in np.unravel_index(k, a.shape))
            old = a[idx]
            a[idx] = up_at = old + eps
            up = ref.stack_loss_and_grads(params, inputs, targets, state, clip=None, masks=masks)[0]
            a[idx] = down_at = old - eps
            down = ref.stack_loss_and_grads(params, inputs, targets, state, clip=None, masks=masks)[0]
            a[idx] = old
            numeric = (up - down) / (up_at - down_at)
            if not abs(numeric - g[idx]) <= rtol * abs(g[idx]) + atol_scale * scale:
                failures.append(f"d{name}{idx}: numeric {numeric:.12g} vs twin {g[idx]:.12g}")
    return failures


@pytest.mark.parametrize("dropout", ["off", "on"])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_finite_differences_check_twin(cell, num_layers, B, dropout):
    seed = case_seed(cell, num_layers, B, salt=1)
    params = make_model(cell, num_layers, "init", seed=seed)
    inputs, targets, state = make_data(params.spec, B, seed=seed)
    _, masks = dropout_case(params.spec, B, dropout)
    # Measured: errors stay below 0.1 of this bound (truncation ~eps^2, rounding ~1e-16 * loss / eps).
    failures = finite_difference_failures(params, inputs, targets, state, np.random.default_rng(seed),
                                          rtol=1e-7, atol_scale=1e-9, masks=masks)
    assert not failures, failures


@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_finite_differences_check_twin_large_weights(cell, num_layers):
    """Saturated gates and steep softmaxes: larger third derivatives, so a 10x looser bound (measured: < 0.4 of it)."""
    seed = case_seed(cell, num_layers, 3, salt=2)
    params = make_model(cell, num_layers, "large", seed=seed)
    inputs, targets, state = make_data(params.spec, 3, seed=seed)
    failures = finite_difference_failures(params, inputs, targets, state, np.random.default_rng(seed),
                                          rtol=1e-6, atol_scale=1e-8)
    assert not failures, failures


# --- 2. the twin checks the kernels --------------------------------------------------------------

@pytest.mark.parametrize("parts", [1, 3], ids=["whole", "parts3"])  # 3: H = 5 units cut 1 + 2 + 2, run at once
@pytest.mark.parametrize("dropout", ["off", "on"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("clip", [None, SMALL_CLIP], ids=["noclip", "clip"])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_kernels_match_twin_saturated(cell, num_layers, B, clip, dtype, dropout, parts):
    """The kernels against the twin; ``parts``: each recurrence's units, and the rows of the products over
    all T * B rows, cut into 3 parts run at once (the split of a multi-threaded step at large H)."""
    seed = case_seed(cell, num_layers, B, salt=3)
    params = make_model(cell, num_layers, "large", seed=seed, dtype=dtype)
    inputs, targets, state = make_data(params.spec, B, seed=seed, dtype=dtype)
    drop, masks = dropout_case(params.spec, B, dropout, dtype)
    ws = workspaces.StackWorkspace(params.spec, T, B, dtype, parts=parts)
    assert ws.parts == parts and (parts == 1 or list(ws.unit_bounds) == [0, 1, 3, 5])
    fast = engine.stack_loss_and_grads(params, inputs, targets, state, clip=clip, workspace=ws, dropout=drop)
    twin = ref.stack_loss_and_grads(params, inputs, targets, state, clip=clip, masks=masks)
    assert saturated_fraction(ws) > 0.2, "the case must saturate gates"
    if clip is not None:
        for grads in (fast[1], twin[1]):
            assert np.max(np.abs(grads.flat)) == dtype(clip), "the case must hit the clip"
    assert fast[1].dtype == dtype and all(s.dtype == dtype for s in fast[2])
    assert padding_is_zero(fast[1])
    # In float32 with dropout, saturated gates amplify each side's own rounding (the kernels compute gates in
    # float64, the twin in float32) up to 2e-3 relative in these cases: a 10x looser bound there.
    tol = dict(rtol=1e-3, atol_scale=1e-4) if drop is not None and dtype == np.float32 else TOL[dtype]
    failures = compare_stack(fast, twin, **tol)
    assert not failures, failures
    if drop is not None:
        without = ref.stack_loss_and_grads(params, inputs, targets, state, clip=clip)
        assert compare_stack(fast, without, **TOL[dtype]), "dropout must change the result"


@pytest.mark.parametrize("what", ["loss", "grad", "state"])
@pytest.mark.parametrize("cell", CELLS)
def test_comparison_can_fail(cell, what):
    """A 1e-8 relative perturbation of any one twin array (each gradient array, the loss, each state) is caught."""
    params = make_model(cell, 2, "large", seed=case_seed(cell, 2, 3, salt=4))
    inputs, targets, state = make_data(params.spec, 3, seed=case_seed(cell, 2, 3, salt=4))
    fast = engine.stack_loss_and_grads(params, inputs, targets, state, clip=None)
    twin = ref.stack_loss_and_grads(params, inputs, targets, state, clip=None)
    assert not compare_stack(fast, twin)
    loss, grads, last = twin
    perturbed = []
    if what == "loss":
        perturbed.append((loss * (1 + 1e-8), grads, last))
    elif what == "grad":
        for name in grads.names:
            g = grads.copy()
            g[name][...] *= 1 + 1e-8
            perturbed.append((loss, g, last))
    else:
        for i in range(len(last)):
            s = list(last)
            s[i] = s[i] * (1 + 1e-8)
            perturbed.append((loss, grads, tuple(s)))
    for p in perturbed:
        assert compare_stack(fast, p), "a 1e-8 relative error went unnoticed"
    # One mid-sized entry (about a tenth of the largest) of one array: the atol must not hide it.
    g = grads.copy()
    flat = np.abs(g.flat)
    k = int(np.argmin(np.abs(flat - 0.1 * flat.max())))
    g.flat[k] *= 1 + 1e-8
    assert compare_stack(fast, (loss, g, last))


# --- 3. PyTorch autograd checks the twin and the public function ----------------------------------

@pytest.fixture(scope="module")
def torch():
    """PyTorch, the test-only oracle: skip without it, fail without it under CI."""
    if os.environ.get("CI"):
        import torch
        return torch
    return pytest.importorskip("torch")


def torch_model(torch, cell, vocab_size, hidden_size, num_layers, dtype=None):
    """The module fastrnn's names map onto (see :mod:`fastrnn.interop`), float64 unless ``dtype``."""
    rnn_class = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]

    class CharModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn_class(vocab_size, hidden_size, num_layers, batch_first=True)
            self.decoder = torch.nn.Linear(hidden_size, vocab_size)

    return CharModel().to(dtype or torch.float64)


def load_into_torch(torch, module, params):
    module.load_state_dict({k: torch.tensor(v) for k, v in fastrnn.to_torch(params).items()}, strict=True)
    return module


def torch_loss_and_grads(torch, module, inputs, targets, state):
    """Autograd's ``(loss, {name: .grad}, state_last)``: cross-entropy summed over B * T / B, one-hot inputs."""
    vocab_size = module.decoder.out_features
    dtype = module.decoder.weight.dtype
    B = inputs.shape[0]
    x = torch.nn.functional.one_hot(torch.from_numpy(inputs), vocab_size).to(dtype)
    s0 = tuple(torch.from_numpy(np.ascontiguousarray(s)) for s in state)
    module.zero_grad()
    out, last = module.rnn(x, s0 if len(s0) == 2 else s0[0])
    logits = module.decoder(out)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab_size), torch.from_numpy(targets).reshape(-1),
                                             reduction="sum") / B
    loss.backward()
    last = last if isinstance(last, tuple) else (last,)
    grads = {k: v.grad.detach().numpy().copy() for k, v in module.named_parameters()}
    return float(loss.item()), grads, tuple(s.detach().numpy().copy() for s in last)


def compare_with_torch(result, torch_result, rtol=RTOL64, atol_scale=ATOL64_SCALE):
    """Compare a fastrnn ``(loss, grads, state parts)`` against autograd's; return failures."""
    (loss, grads, state), (t_loss, t_grads, t_state) = result, torch_result
    failures = []
    ok, worst = allclose_report(loss, t_loss, rtol, atol_scale)
    if not ok:
        failures.append(f"loss {loss!r} vs torch {t_loss!r}")
    mine = fastrnn.to_torch(grads)
    if set(mine) != set(t_grads):
        return failures + [f"names {sorted(mine)} vs torch {sorted(t_grads)}"]
    scale = max(float(np.max(np.abs(g))) for g in t_grads.values())
    for name, g in t_grads.items():
        ok, worst = allclose_report(mine[name], g, rtol, atol_scale, scale=scale)
        if not ok:
            failures.append(f"{name}.grad: worst/tol {worst:.3g}")
    for name, a, e in zip(("h", "c"), state, t_state):
        ok, worst = allclose_report(np.reshape(a, e.shape), e, rtol, atol_scale)
        if not ok:
            failures.append(f"state {name}: worst/tol {worst:.3g}")
    return failures


@pytest.mark.parametrize("kind", ["init", "large"])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_torch_autograd_checks_twin_and_loss_and_grads(torch, cell, num_layers, B, kind):
    seed = case_seed(cell, num_layers, B, salt=5)
    params = make_model(cell, num_layers, kind, seed=seed)
    spec = params.spec
    inputs, targets, state = make_data(spec, B, seed=seed)
    module = load_into_torch(torch, torch_model(torch, cell, V, H, num_layers), params)
    expected = torch_loss_and_grads(torch, module, inputs, targets, state)
    twin = ref.stack_loss_and_grads(params, inputs, targets, state, clip=None)
    assert not compare_with_torch(twin, expected)
    loss, grads, last = fastrnn.loss_and_grads(params, inputs, targets, as_given(spec, state), clip=None)
    assert isinstance(grads, ModelParams) and grads.is_gradient
    assert not compare_with_torch((loss, grads, as_parts(spec, last)), expected)


@pytest.mark.parametrize("B", [1, 3])
def test_torch_checks_seed_params(torch, B):
    """``init_params(V, H)`` is the seed's :class:`fastrnn.Params`; to_torch maps it and its gradients too."""
    params = fastrnn.init_params(V, H, seed=11)
    assert isinstance(params, fastrnn.Params)
    rng = np.random.default_rng(11)
    for a in params:  # the seed's init (randn * 0.01, zero biases) is nearly linear: move away from it
        a[...] = rng.standard_normal(a.shape) * 1.5
    spec = ModelSpec("rnn", 1, V, H)
    inputs, targets, (h,) = make_data(spec, B, seed=11)
    module = load_into_torch(torch, torch_model(torch, "rnn", V, H, 1), params)
    expected = torch_loss_and_grads(torch, module, inputs, targets, (h,))
    if B == 1:  # one sequence with the seed's (H,) hidden state
        loss, grads, last = fastrnn.loss_and_grads(params, inputs[0], targets[0], h[0, 0], clip=None)
        assert last.shape == (H,)
    else:
        loss, grads, last = fastrnn.loss_and_grads(params, inputs, targets, h, clip=None)
        assert last.shape == (1, B, H)
    assert isinstance(grads, fastrnn.Params)
    assert not compare_with_torch((loss, grads, (last,)), expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_from_torch_inverts_to_torch(cell, num_layers, dtype):
    params = make_model(cell, num_layers, "init", seed=case_seed(cell, num_layers, salt=6), dtype=dtype)
    back = fastrnn.from_torch(fastrnn.to_torch(params), cell)
    assert back.spec == params.spec and back.dtype == params.dtype
    assert np.array_equal(back.flat, params.flat)


@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_from_torch_of_a_torch_module_matches_torch(torch, cell, num_layers):
    """A module's own (random, two-bias) state_dict: same loss, gradients and state as autograd."""
    torch.manual_seed(case_seed(cell, num_layers, salt=7))
    module = torch_model(torch, cell, V, H, num_layers)
    params = fastrnn.from_torch(module.state_dict(), cell)
    assert params.spec == ModelSpec(cell, num_layers, V, H) and params.dtype == np.float64
    inputs, targets, state = make_data(params.spec, 3, seed=case_seed(cell, num_layers, salt=7))
    expected = torch_loss_and_grads(torch, module, inputs, targets, state)
    loss, grads, last = fastrnn.loss_and_grads(params, inputs, targets, as_given(params.spec, state), clip=None)
    assert not compare_with_torch((loss, grads, as_parts(params.spec, last)), expected)
    assert fastrnn.from_torch(torch_model(torch, cell, V, H, num_layers, torch.float32).state_dict(),
                              cell).dtype == np.float32


# --- 4. a batch is its streams ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["init", "large"])
@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_batch_is_mean_of_streams(cell, num_layers, kind):
    """B=3 through the kernels equals the twin run on each stream alone (B=1), losses and gradients averaged."""
    B = 3
    seed = case_seed(cell, num_layers, B, salt=8)
    params = make_model(cell, num_layers, kind, seed=seed)
    inputs, targets, state = make_data(params.spec, B, seed=seed)
    fast = engine.stack_loss_and_grads(params, inputs, targets, state, clip=None)
    loss, grads, last = 0.0, params.zeros_like(), [np.empty_like(s) for s in state]
    for b in range(B):
        l_b, g_b, s_b = ref.stack_loss_and_grads(params, inputs[b:b + 1], targets[b:b + 1],
                                                 tuple(s[:, b:b + 1] for s in state), clip=None)
        loss += l_b
        grads.flat[:] += g_b.flat
        for out, s in zip(last, s_b):
            out[:, b] = s[:, 0]
    grads.flat[:] /= B
    failures = compare_stack(fast, (loss / B, grads, tuple(last)))
    assert not failures, failures


# --- 5. the public loss_and_grads: layouts, clip, bad states -----------------------------------------

@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_loss_and_grads_state_layouts(cell, num_layers):
    """(B, T) takes and returns (L, B, H); (T,) takes (L, H), (L, 1, H) (and (H,) at one layer) and returns
    what it was given, (L, H) for None; lstm's state is the pair (h, c), the others' ``h`` alone."""
    B, L = 3, num_layers
    seed = case_seed(cell, num_layers, B, salt=9)
    params = make_model(cell, num_layers, "init", seed=seed)
    spec = params.spec
    inputs, targets, state = make_data(spec, B, seed=seed)

    def check_layout(last, shape):
        if cell == "lstm":
            assert isinstance(last, tuple) and len(last) == 2
        else:
            assert isinstance(last, np.ndarray)
        assert all(np.shape(s) == shape for s in as_parts(spec, last))

    for given in (state, None):
        twin = ref.stack_loss_and_grads(params, inputs, targets, given, clip=None)
        result = fastrnn.loss_and_grads(params, inputs, targets, None if given is None else as_given(spec, given),
                                        clip=None)
        check_layout(result[2], (L, B, H))
        assert isinstance(result[1], ModelParams) and result[1].spec == spec
        failures = compare_stack((result[0], result[1], as_parts(spec, result[2])), twin)
        assert not failures, failures

    b = 1
    one = tuple(s[:, b:b + 1] for s in state)  # (L, 1, H)
    twin = ref.stack_loss_and_grads(params, inputs[b:b + 1], targets[b:b + 1], one, clip=None)
    layouts = [(L, H), (L, 1, H)] + ([(H,)] if L == 1 else [])
    for layout in layouts:
        given = as_given(spec, tuple(s.reshape(layout) for s in one))
        result = fastrnn.loss_and_grads(params, inputs[b], targets[b], given, clip=None)
        check_layout(result[2], layout)
        got = tuple(s.reshape(L, 1, H) for s in as_parts(spec, result[2]))
        failures = compare_stack((result[0], result[1], got), twin)
        assert not failures, (layout, failures)
    result = fastrnn.loss_and_grads(params, inputs[b], targets[b], clip=None)
    check_layout(result[2], (L, H))


@pytest.mark.parametrize("cell,num_layers", [(c, n) for c, n in CELL_LAYERS if c != "lstm"])
def test_loss_and_grads_state_as_one_tuple(cell, num_layers):
    """rnn and gru also take ``(h,)``, and return ``h`` in its layout (the 1-layer rnn's seed path too)."""
    params = make_model(cell, num_layers, "init", seed=case_seed(cell, num_layers, salt=10))
    inputs, targets, state = make_data(params.spec, 3, seed=case_seed(cell, num_layers, salt=10))
    plain = fastrnn.loss_and_grads(params, inputs, targets, state[0])
    tupled = fastrnn.loss_and_grads(params, inputs, targets, (state[0],))
    assert isinstance(tupled[2], np.ndarray) and tupled[2].shape == state[0].shape
    assert tupled[0] == plain[0] and np.array_equal(tupled[2], plain[2])
    single = fastrnn.loss_and_grads(params, inputs[0], targets[0], (state[0][:, 0],))
    assert isinstance(single[2], np.ndarray) and single[2].shape == (num_layers, H)


@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_loss_and_grads_clip(cell, num_layers):
    """clip=None leaves the gradient unclipped; the default clips it to [-5, 5]."""
    params = make_model(cell, num_layers, "init", seed=case_seed(cell, num_layers, salt=11))
    params["by"][0] = -30.0  # p(target 0) ~ e^-30: dby[0] ~ -T, beyond the clip
    inputs, _, state = make_data(params.spec, 3, seq_length=8, seed=case_seed(cell, num_layers, salt=11))
    targets = np.zeros_like(inputs)
    twin = ref.stack_loss_and_grads(params, inputs, targets, state, clip=None)
    assert twin[1]["by"][0] < -7.9
    unclipped = fastrnn.loss_and_grads(params, inputs, targets, as_given(params.spec, state), clip=None)
    failures = compare_stack((unclipped[0], unclipped[1], as_parts(params.spec, unclipped[2])), twin)
    assert not failures, failures
    loss, grads, last = fastrnn.loss_and_grads(params, inputs, targets, as_given(params.spec, state))
    assert grads["by"][0] == -5.0 and np.max(np.abs(grads.flat)) == 5.0
    clipped = twin[1].copy()
    np.clip(clipped.flat, -5.0, 5.0, out=clipped.flat)
    assert not compare_stack((loss, grads, as_parts(params.spec, last)), (twin[0], clipped, twin[2]))


@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_loss_and_grads_bad_states(cell, num_layers):
    B, L = 3, num_layers
    params = make_model(cell, num_layers, "init", seed=0)
    inputs, targets, _ = make_data(params.spec, B, seed=0)
    n = len(params.spec.state_names)

    def state(*shape, count=n):
        parts = tuple(np.zeros(shape) for _ in range(count))
        return parts if count == 2 else parts[0]

    batched = [state(L, B - 1, H), state(L + 1, B, H), state(L, B, H + 1), state(L, H), state(B, H),
               state(L, B, H, count=3 - n), state(L, B, H)[:1] if n == 2 else (state(L, B, H),) * 2]
    single = [state(L, B, H), state(L + 1, H), state(L, H + 1), state(L, 2, H), state(L, H, count=3 - n)]
    for bad in batched:
        with pytest.raises(ValueError):
            fastrnn.loss_and_grads(params, inputs, targets, bad)
    for bad in single:
        with pytest.raises(ValueError):
            fastrnn.loss_and_grads(params, inputs[0], targets[0], bad)
    with pytest.raises(ValueError):
        engine.stack_loss_and_grads(params, inputs, targets, (np.zeros((L, B, H)),) * (3 - n))


# --- 6. threads -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_one_blas_thread_equals_two_bit_for_bit(cell, num_layers):
    """H=64, B=16, T=8: the products over all T*B rows (weight gradients, a second layer's input projection)
    are above OpenBLAS's default threshold for threading a GEMM (m * n * k >= 4 * 65536), so two threads
    split them; the results must not change by a bit."""
    V64, H64, B64, T64 = 7, 64, 16, 8
    seed = case_seed(cell, num_layers, salt=12)
    params = make_model(cell, num_layers, "init", seed=seed, vocab_size=V64, hidden_size=H64)
    inputs, targets, state = make_data(params.spec, B64, seq_length=T64, seed=seed)
    results = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            results.append(engine.stack_loss_and_grads(params, inputs, targets, state, clip=None))
    (l1, g1, s1), (l2, g2, s2) = results
    assert l1 == l2
    assert np.array_equal(g1.flat, g2.flat)
    assert all(np.array_equal(a, b) for a, b in zip(s1, s2))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_an_lstm_streams_state_does_not_depend_on_its_batch(dtype):
    """One LSTM layer's recurrent products run on the micro-kernel (fastrnn.microkernel), whose k order is
    fixed: each stream's last state has the same bits in a batch of 7 streams as alone (BLAS, which
    multiplies a single stream by a matrix-vector kernel, did not guarantee this)."""
    V7, H7, B7, T7 = 11, 37, 7, 9
    params = make_model("lstm", 1, "init", seed=17, dtype=dtype, vocab_size=V7, hidden_size=H7)
    inputs, _, state = make_data(params.spec, B7, seq_length=T7, seed=17, dtype=dtype)
    _, (h_all, c_all) = inference.logits(params, inputs, state)
    for b in range(B7):
        _, (h_one, c_one) = inference.logits(params, inputs[b:b + 1], tuple(s[:, b:b + 1] for s in state))
        assert np.array_equal(h_one[:, 0], h_all[:, b]) and np.array_equal(c_one[:, 0], c_all[:, b]), b


@pytest.mark.parametrize("split", ["streams", "units"])
@pytest.mark.parametrize("threads, B", [(2, 3), (3, 5), (4, 2)])  # uneven chunks; more threads than streams
@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_stream_chunks_on_threads_match_twin(cell, num_layers, threads, B, split):
    """The trainer's step on threads: "streams" cuts the B streams into chunks run at once and sums their
    gradients, "units" cuts each recurrence's units (and the products' rows) into parts run at once. With
    saturated weights either is the twin's whole-batch loss, gradient and last state (float64, 1e-10); it
    is the same bit for bit from one run to the next, and (streams) the same as each chunk's streams run one
    after another as steps of their own, their sums added in chunk order (as MPI ranks add theirs)."""
    seed = case_seed(cell, num_layers, B, salt=13)
    params = make_model(cell, num_layers, "large", seed=seed)
    inputs, targets, state = make_data(params.spec, B, seed=seed)
    ws = workspaces.ParallelWorkspace(params.spec, T, B, np.float64, threads=threads, split=split)
    if split == "streams":
        assert ws.n_chunks == min(threads, B)
        assert all(cw.layers[i]["forward_panels"] is a["forward_panels"]  # packed once, read by every chunk
                   for cw in ws.chunks[1:] for i, a in enumerate(ws.chunks[0].layers))
    else:
        assert ws.n_chunks == 1 and ws.chunks[0].parts == min(threads, H)
    runs = []
    for _ in range(2):
        st = tuple(h.copy() for h in state)
        loss, grads = chunks.chunked_loss_and_grads(params, ws, inputs, targets, st)
        runs.append((loss / B, grads.copy(), st))  # the twin's loss is divided by B
    if split == "streams":
        runs.append(chunks_one_after_another(params, ws.bounds, inputs, targets, state))
    twin = ref.stack_loss_and_grads(params, inputs, targets, state, clip=None)
    failures = compare_stack(runs[0], twin, **TOL[np.float64])
    assert not failures, failures
    for loss, grads, st in runs[1:]:
        assert loss == runs[0][0] and np.array_equal(grads.flat, runs[0][1].flat)
        assert all(np.array_equal(a, b) for a, b in zip(st, runs[0][2]))


def chunks_one_after_another(params, bounds, inputs, targets, state):
    """``(loss / B, grads, last state)`` of the streams of each chunk ``bounds[c]:bounds[c + 1]`` as a step of
    its own (one chunk, the divisor the whole B), the losses and gradients added in chunk order."""
    B = inputs.shape[0]
    loss, grads, last = 0.0, None, tuple(h.copy() for h in state)
    for lo, hi in zip(bounds, bounds[1:]):
        one = workspaces.ParallelWorkspace(params.spec, inputs.shape[1], hi - lo, params.dtype)
        part = tuple(h[:, lo:hi].copy() for h in state)
        chunk_loss, chunk_grads = chunks.chunked_loss_and_grads(params, one, inputs[lo:hi], targets[lo:hi], part,
                                                                total_batch=B)
        if grads is None:
            loss, grads = chunk_loss, chunk_grads.copy()
        else:
            loss += chunk_loss
            np.add(grads.flat, chunk_grads.flat, out=grads.flat)
        for h, p in zip(last, part):
            h[:, lo:hi] = p
    return loss / B, grads, last


# --- 9. scoring and sampling ---------------------------------------------------------------------------

def twin_step_losses(params, inputs, targets, state):
    """The twin one step at a time, carrying the state: each step's loss (-log p(target)) and the last state."""
    losses = []
    for t in range(inputs.shape[1]):
        loss, _, state = ref.stack_loss_and_grads(params, inputs[:, t:t + 1], targets[:, t:t + 1], state, clip=None)
        losses.append(loss)
    return np.array(losses), state


@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_sequence_loss_and_log_probs_across_chunks(cell, num_layers):
    """A sequence of 10 scored 3 steps at a time equals one pass of the twin (B=1: the summed loss)."""
    seed = case_seed(cell, num_layers, salt=13)
    params = make_model(cell, num_layers, "init", seed=seed)
    inputs, targets, state = make_data(params.spec, 1, seq_length=10, seed=seed)
    kept = tuple(s.copy() for s in state)
    twin_loss, _, twin_state = ref.stack_loss_and_grads(params, inputs, targets, state, clip=None)
    loss, last = inference.sequence_loss(params, inputs[0], targets[0], state, chunk=3)
    assert not compare_stack((loss, params.zeros_like(), last), (twin_loss, params.zeros_like(), twin_state))
    whole, _ = inference.sequence_loss(params, inputs[0], targets[0], state)
    assert allclose_report(whole, twin_loss)[0]
    logp, last = inference.log_probs(params, inputs[0], targets[0], state, chunk=3)
    assert logp.shape == (10,) and logp.dtype == np.float64
    step_losses, step_state = twin_step_losses(params, inputs, targets, state)
    assert allclose_report(-logp, step_losses)[0]
    assert all(allclose_report(a, e)[0] for a, e in zip(step_state, twin_state))
    assert allclose_report(-logp.sum(), twin_loss)[0]
    assert all(allclose_report(a, e)[0] for a, e in zip(last, twin_state))
    assert all(np.array_equal(a, b) for a, b in zip(state, kept)), "the caller's state must not change"


def twin_sample(params, state, first_id, n, seed, temperature, argmax):
    """The twin's draws: one step at a time, inverse CDF of softmax(logits / temperature), or greedy."""
    rng = np.random.default_rng(seed)
    x, out = first_id, []
    for _ in range(n):
        _, _, state = ref.stack_loss_and_grads(params, np.array([[x]]), np.array([[x]]), state, clip=None)
        logits = state[0][-1, 0] @ params["Why"].T + params["by"]
        u = rng.random()
        if argmax:
            x = int(np.argmax(logits))
        else:
            p = np.exp((logits - logits.max()) / temperature)
            cdf = np.cumsum(p / p.sum())
            x = min(int(np.searchsorted(cdf / cdf[-1], u, side="right")), len(cdf) - 1)
        out.append(x)
    return np.array(out)


@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_sample_is_seeded_and_argmax_is_greedy(cell, num_layers):
    seed = case_seed(cell, num_layers, salt=14)
    params = make_model(cell, num_layers, "init", seed=seed)
    params["Why"][...] *= 8  # sharper distributions: greedy and sampled paths differ
    _, _, state = make_data(params.spec, 1, seed=seed)
    a = inference.sample(params, state, 2, 30, seed=5, temperature=0.8)
    assert a.dtype == np.int64 and a.shape == (30,)
    assert np.array_equal(a, inference.sample(params, state, 2, 30, seed=5, temperature=0.8))
    assert not np.array_equal(a, inference.sample(params, state, 2, 30, seed=6, temperature=0.8))
    assert np.array_equal(a, twin_sample(params, state, 2, 30, 5, 0.8, argmax=False))
    greedy = inference.sample(params, state, 2, 30, seed=5, argmax=True)
    assert np.array_equal(greedy, twin_sample(params, state, 2, 30, 5, 1.0, argmax=True))
    assert np.array_equal(greedy, inference.sample(params, state, 2, 30, seed=9, argmax=True))


# --- 10. the same bits in every process ------------------------------------------------------------

def every_kernel_case():
    """Gradients (flat) of every cell, dtype and split (whole, 2 unit parts, 2 chunks of streams) at H = 40,
    enough units for the gate loops' SIMD code (at H = 5 the difference below did not show), with dropout:
    a dict."""
    out = {}
    for cell in CELLS:
        for dtype in (np.float32, np.float64):
            for parts in (1, 2):
                seed = case_seed(cell, 2, 3, salt=15)
                params = make_model(cell, 2, "init", seed=seed, dtype=dtype, hidden_size=40)
                inputs, targets, state = make_data(params.spec, 3, seed=seed, dtype=dtype)
                ws = workspaces.StackWorkspace(params.spec, T, 3, dtype, parts=parts)
                _, grads, _ = engine.stack_loss_and_grads(params, inputs, targets, state, clip=None, workspace=ws,
                                                          dropout=DROPOUT._replace(total_streams=3, first_stream=0))
                out[f"{cell}-{np.dtype(dtype).name}-{parts}"] = grads.flat.copy()
            two = workspaces.ParallelWorkspace(params.spec, T, 3, dtype, threads=2, split="streams")
            _, grads = chunks.chunked_loss_and_grads(params, two, inputs, targets, state,
                                                     dropout=DROPOUT._replace(total_streams=3, first_stream=0))
            out[f"{cell}-{np.dtype(dtype).name}-chunks"] = grads.flat.copy()
    return out


def test_another_process_computes_the_same_bits(tmp_path):
    """A kernel loaded from Numba's cache runs the instructions of the one compiled here: a second process
    gets every cell's gradients bit for bit (a resume in a new process, and MPI ranks, rely on it). Under CI
    the cache starts empty, so this process compiles what the other loads. Seen failing: parallel kernels
    compiled with fastmath, and helpers compiled as functions of their own, gave other bits once cached."""
    import subprocess
    import sys

    here = every_kernel_case()
    out = tmp_path / "other.npz"
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from test_cells import every_kernel_case; "
            "np.savez(sys.argv[2], **every_kernel_case())")
    r = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), str(out)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    with np.load(out) as other:
        differ = [k for k in here if not np.array_equal(here[k], other[k])]
    assert not differ, f"not bit for bit in another process: {differ}"
