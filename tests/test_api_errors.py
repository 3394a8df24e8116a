"""Bad arguments to the public API raise ValueError naming the problem, before any kernel runs.

For the fast path every Numba kernel is replaced by a stub that fails the test if it is
called, so "before any kernel runs" is checked, not assumed; in-place functions must also
leave their arguments untouched. The reference twin has the same names and meanings, so
it must reject the same calls.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import fastrnn
from fastrnn import Params, kernels
from fastrnn import reference as ref

from conftest import tiny_params

V, H = 7, 5
IDS = np.array([0, 1, 2, 3], np.int64)


class KernelCalled(AssertionError):
    pass


@pytest.fixture
def no_kernels(monkeypatch):
    """Replace every compiled kernel the seed's API calls (fastrnn.kernels, stream_kernels, optim_kernels)
    by a stub that raises KernelCalled."""
    from fastrnn import optim_kernels, stream_kernels
    replaced = []
    for module in (kernels, stream_kernels, optim_kernels):
        for name in dir(module):
            obj = getattr(module, name)
            if hasattr(obj, "py_func") and hasattr(obj, "signatures"):  # a Numba dispatcher
                def stub(*args, _name=name, **kwargs):
                    raise KernelCalled(f"kernel {_name} ran")
                monkeypatch.setattr(module, name, stub)
                replaced.append(name)
    assert {"loss_and_grads", "train_step", "train_steps", "adagrad_update", "sample_ids",
            "sequence_loss"} <= set(replaced)
    return replaced


def test_stubs_really_intercept_kernels(no_kernels):
    """Sanity of the fixture: a valid call does reach a (stubbed) kernel."""
    with pytest.raises(KernelCalled):
        fastrnn.loss_and_grads(tiny_params(V, H), IDS, IDS, np.zeros(H))
    with pytest.raises(KernelCalled):
        fastrnn.sample(tiny_params(V, H), np.zeros(H), 0, 3)


IMPLS = {"fast": fastrnn, "reference": ref}


@pytest.fixture(params=["fast", "reference"])
def api(request, no_kernels):
    return IMPLS[request.param]


def _snapshot(*param_sets):
    return [a.copy() for ps in param_sets for a in ps]


def _unchanged(before, *param_sets):
    after = [a for ps in param_sets for a in ps]
    return all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after))


def sequence_calls(api, params, inputs, targets, hprev=None):
    """Every public function that takes (inputs, targets), as zero-argument callables."""
    hprev = np.zeros(params.hidden_size) if hprev is None else hprev
    memory = params.zeros_like()
    calls = {
        "loss_and_grads": lambda: api.loss_and_grads(params, inputs, targets, hprev),
        "sequence_loss": lambda: api.sequence_loss(params, inputs, targets, hprev),
        "train_step": lambda: api.train_step(params, memory, inputs, targets, hprev, 0.1),
    }
    if hasattr(api, "log_probs"):
        calls["log_probs"] = lambda: api.log_probs(params, inputs, targets, hprev)
    return calls


def assert_rejects(api, inputs, targets, match, hprev=None, params=None, skip=()):
    params = tiny_params(V, H) if params is None else params
    before = _snapshot(params)
    for name, call in sequence_calls(api, params, inputs, targets, hprev).items():
        if name in skip:
            continue
        with pytest.raises(ValueError, match=match):
            call()
        assert _unchanged(before, params), f"{name} modified params before failing"


# --- ids -----------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["inputs", "targets"])
@pytest.mark.parametrize("bad_id", [-1, V, V + 100, -(2**40)])
def test_ids_out_of_range(api, which, bad_id):
    bad = IDS.copy()
    bad[2] = bad_id
    inputs, targets = (bad, IDS) if which == "inputs" else (IDS, bad)
    assert_rejects(api, inputs, targets, rf"{which}.*{bad_id}.*vocabulary|{which}.*vocabulary.*{bad_id}")


def test_ids_out_of_range_python_list(api):
    assert_rejects(api, [0, 1, 7], [1, 2, 3], r"inputs.*7.*vocabulary")


def test_empty_sequence(api):
    assert_rejects(api, [], [], r"(?i)inputs.*empty")
    assert_rejects(api, np.array([], np.int64), np.array([], np.int64), r"(?i)inputs.*empty")


@pytest.mark.parametrize("lengths", [(4, 3), (1, 2), (4, 0)])
def test_mismatched_lengths(api, lengths):
    a, b = lengths
    match = r"(?i)targets.*empty" if b == 0 else r"(?i)same length.*\b%d\b.*\b%d\b" % (a, b)
    assert_rejects(api, IDS[:a] if a <= 4 else None, np.arange(b) % V, match)


@pytest.mark.parametrize("bad", [
    pytest.param([0.5, 1.0, 2.0, 3.0], id="floats"),
    pytest.param(np.array([0.0, 1.0, 2.0, 3.0]), id="integral-floats"),
    pytest.param(np.array([0, 1, 2, 3], np.float32), id="float32"),
    pytest.param(["a", "b", "c", "d"], id="strings"),
    pytest.param("abcd", id="a-string"),
    pytest.param([True, False, True, False], id="bools"),
    pytest.param(np.array([1, None, 2, 3], dtype=object), id="object"),
    pytest.param([1, 2, np.nan, 3], id="nan"),
    pytest.param(np.array([1 + 0j, 2, 3, 4]), id="complex"),
])
@pytest.mark.parametrize("which", ["inputs", "targets"])
def test_non_integer_ids(api, which, bad):
    inputs, targets = (bad, IDS) if which == "inputs" else (IDS, bad)
    assert_rejects(api, inputs, targets, rf"{which}.*(?i:integer)")


@pytest.mark.parametrize("bad", [IDS.reshape(2, 2), IDS.reshape(1, 4), np.int64(3)],
                         ids=["2x2", "1x4", "scalar"])
def test_ids_not_one_dimensional(api, bad):
    assert_rejects(api, bad, bad, r"inputs.*1-D")


def test_unusual_integer_dtypes_are_accepted():
    """Any integer dtype (int8, uint16, int32, Python ints) is an id array, not an error."""
    params = tiny_params(V, H)
    expected = fastrnn.loss_and_grads(params, IDS, IDS, np.zeros(H))[0]
    for dtype in (np.int8, np.uint16, np.int32, np.uint64):
        ids = IDS.astype(dtype)
        assert fastrnn.loss_and_grads(params, ids, ids, np.zeros(H))[0] == expected
        assert ref.loss_and_grads(params, ids, ids, np.zeros(H))[0] == pytest.approx(expected, rel=1e-12)
    assert fastrnn.loss_and_grads(params, [0, 1, 2, 3], (0, 1, 2, 3), np.zeros(H))[0] == expected


# --- hidden state ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(H + 1,), (H - 1,), (1, H), (H, 2), (), (H, 1, 1)],
                         ids=str)
def test_wrong_hprev_shape(api, shape):
    # (1, H) is the (num_layers, H) state that fastrnn.loss_and_grads takes for one sequence (PyTorch's layout).
    skip = ("loss_and_grads",) if api is fastrnn and shape == (1, H) else ()
    assert_rejects(api, IDS, IDS, r"hprev.*shape", hprev=np.zeros(shape), skip=skip)


def test_loss_and_grads_takes_the_layered_state_of_one_sequence():
    p, h = tiny_params(V, H), np.random.default_rng(0).standard_normal(H)
    loss, grads, h_last = fastrnn.loss_and_grads(p, IDS, IDS, h)
    for layout in ((1, H), (1, 1, H)):
        loss2, grads2, h_last2 = fastrnn.loss_and_grads(p, IDS, IDS, h.reshape(layout))
        assert loss2 == loss and h_last2.shape == layout and np.array_equal(h_last2.reshape(H), h_last)
        assert all(np.array_equal(a, b) for a, b in zip(grads, grads2))


def test_hprev_not_numeric(api):
    assert_rejects(api, IDS, IDS, r"hprev", hprev=np.array(["x"] * H))


# --- parameters ---------------------------------------------------------------------------

def _bad_params():
    p = tiny_params(V, H)
    f32 = p.Wxh.astype(np.float32)
    return {
        "Wxh-cols": (p._replace(Wxh=np.zeros((H, V + 1))), r"Wxh.*shape"),
        "Wxh-rows": (p._replace(Wxh=np.zeros((H + 1, V))), r"Wxh.*shape"),
        "Whh-not-square": (p._replace(Whh=np.zeros((H, H + 1))), r"Whh.*\(H, H\)|Whh.*square"),
        "Why": (p._replace(Why=np.zeros((V, H + 1))), r"Why.*shape"),
        "bh": (p._replace(bh=np.zeros(H + 1)), r"bh.*shape"),
        "by": (p._replace(by=np.zeros((V, 2))), r"by.*shape"),
        "mixed-dtypes": (p._replace(Wxh=f32), r"(?i)dtype"),
        "int-weights": (p._replace(Whh=np.zeros((H, H), np.int64)), r"Whh.*float"),
        "list-weights": (p._replace(Whh=p.Whh.tolist()), r"Whh.*numpy array"),
        "fortran-order": (p._replace(Wxh=np.asfortranarray(p.Wxh)), r"Wxh.*contiguous"),
        "dict-missing": ({"Wxh": p.Wxh, "Whh": p.Whh}, r"missing.*Why"),
        "not-params": ("weights", r"(?i)params"),
    }


@pytest.mark.parametrize("case", list(_bad_params()))
def test_bad_params(api, case):
    params, match = _bad_params()[case]
    for name, call in {
        "loss_and_grads": lambda: api.loss_and_grads(params, IDS, IDS, np.zeros(H)),
        "sequence_loss": lambda: api.sequence_loss(params, IDS, IDS, np.zeros(H)),
        "sample": lambda: api.sample(params, np.zeros(H), 0, 3, seed=0),
    }.items():
        with pytest.raises(ValueError, match=match):
            call()


def test_params_as_dict_and_tuple_are_accepted():
    p = tiny_params(V, H)
    expected = fastrnn.loss_and_grads(p, IDS, IDS, np.zeros(H))[0]
    assert fastrnn.loss_and_grads(dict(p._asdict()), IDS, IDS, np.zeros(H))[0] == expected
    assert fastrnn.loss_and_grads(tuple(p), IDS, IDS, np.zeros(H))[0] == expected


@pytest.mark.parametrize("which", ["memory", "grads"])
def test_adagrad_layout_mismatch(api, which):
    p = tiny_params(V, H)
    other = tiny_params(V + 1, H)  # a model of another vocabulary
    grads, memory = p.zeros_like(), p.zeros_like()
    if which == "memory":
        memory = other.zeros_like()
    else:
        grads = other.zeros_like()
    before = _snapshot(p, memory)
    with pytest.raises(ValueError, match=rf"{which}|shape"):
        api.adagrad_update(p, grads, memory, 0.1)
    assert _unchanged(before, p, memory)


def test_adagrad_dtype_mismatch_fast(no_kernels):
    p = tiny_params(V, H)
    with pytest.raises(ValueError, match=r"memory.*float32"):
        fastrnn.adagrad_update(p, p.zeros_like(), p.zeros_like().astype(np.float32), 0.1)


def test_train_step_memory_mismatch(api):
    p = tiny_params(V, H)
    memory = tiny_params(V, H + 1).zeros_like()
    before = _snapshot(p, memory)
    with pytest.raises(ValueError, match=r"memory|shape"):
        api.train_step(p, memory, IDS, IDS, np.zeros(H), 0.1)
    assert _unchanged(before, p, memory)


# --- scalars -----------------------------------------------------------------------------

BAD_POSITIVE = [0.0, -0.1, float("nan"), float("inf")]


def test_non_positive_learning_rate_adagrad(api):
    p = tiny_params(V, H)
    grads, memory = tiny_params(V, H, seed=1), p.zeros_like()
    before = _snapshot(p, memory)
    for lr in BAD_POSITIVE:
        with pytest.raises(ValueError, match=r"learning_rate"):
            api.adagrad_update(p, grads, memory, lr)
        assert _unchanged(before, p, memory), f"learning_rate={lr} modified the parameters"


def test_non_positive_learning_rate_train_step(api):
    p = tiny_params(V, H)
    memory = p.zeros_like()
    before = _snapshot(p, memory)
    for lr in BAD_POSITIVE:
        with pytest.raises(ValueError, match=r"learning_rate"):
            api.train_step(p, memory, IDS, IDS, np.zeros(H), lr)
        assert _unchanged(before, p, memory), f"learning_rate={lr} modified the parameters"


def test_non_positive_temperature(api):
    p = tiny_params(V, H)
    for t in BAD_POSITIVE:
        with pytest.raises(ValueError, match=r"temperature"):
            api.sample(p, np.zeros(H), 0, 5, seed=0, temperature=t)


def test_negative_n(api):
    with pytest.raises(ValueError, match=r"\bn\b.*-1"):
        api.sample(tiny_params(V, H), np.zeros(H), 0, -1, seed=0)


@pytest.mark.parametrize("seed_ix", [-1, V, 2.0, "a"])
def test_bad_seed_ix(api, seed_ix):
    with pytest.raises(ValueError, match=r"seed_ix"):
        api.sample(tiny_params(V, H), np.zeros(H), seed_ix, 5, seed=0)


def test_sample_bad_hprev(api):
    with pytest.raises(ValueError, match=r"hprev.*shape"):
        api.sample(tiny_params(V, H), np.zeros(H + 1), 0, 5, seed=0)


def test_bad_clip(no_kernels):
    p = tiny_params(V, H)
    for clip in (0.0, -5.0, float("nan")):
        with pytest.raises(ValueError, match=r"clip"):
            fastrnn.loss_and_grads(p, IDS, IDS, np.zeros(H), clip=clip)


def test_workspace_too_small(no_kernels):
    p = tiny_params(V, H)
    ws = fastrnn.Workspace(V, H, 3)
    with pytest.raises(ValueError, match=r"workspace"):
        fastrnn.loss_and_grads(p, IDS, IDS, np.zeros(H), workspace=ws)  # T = 4 > 3
    ws32 = fastrnn.Workspace(V, H, 4, np.float32)
    with pytest.raises(ValueError, match=r"workspace"):
        fastrnn.train_step(p, p.zeros_like(), IDS, IDS, np.zeros(H), 0.1, workspace=ws32)


@pytest.mark.parametrize("args", [(0, 5), (V, 0), (-1, 5)])
def test_init_params_bad_sizes(args):
    with pytest.raises(ValueError, match=r"(?i)vocab_size and hidden_size must be positive"):
        fastrnn.init_params(*args)


def test_init_params_bad_dtype():
    with pytest.raises(ValueError, match=r"dtype"):
        fastrnn.init_params(V, H, dtype=np.int32)


# --- every cell alike: the state's dtype, clip ---------------------------------------------

def _model(cell, num_layers=2, dtype=np.float64):
    from fastrnn.model import init_model
    return init_model(fastrnn.ModelSpec(cell, num_layers, V, H), seed=0, dtype=dtype)


def _zero_state(params, dtype):
    L = params.spec.num_layers
    state = tuple(np.zeros((L, 1, H), dtype) for _ in params.spec.state_names)
    return state if len(state) == 2 else state[0]


@pytest.mark.parametrize("cell, num_layers", [("rnn", 1), ("rnn", 2), ("lstm", 1), ("gru", 2)])
@pytest.mark.parametrize("dtype, other", [(np.float64, np.float32), (np.float32, np.float64)], ids=["64-32", "32-64"])
def test_loss_and_grads_takes_a_state_of_the_other_dtype_as_a_copy_in_its_own(cell, num_layers, dtype, other):
    """A float64 ``np.zeros`` state with float32 parameters (or the reverse) is converted, as the seed's
    ``hprev`` functions convert it: the same results as the state in the parameters' dtype, nothing promoted."""
    params = _model(cell, num_layers, dtype)
    ids = IDS.reshape(1, -1)
    loss, grads, last = fastrnn.loss_and_grads(params, ids, ids, _zero_state(params, other))
    loss0, grads0, last0 = fastrnn.loss_and_grads(params, ids, ids, _zero_state(params, dtype))
    assert loss == loss0 and np.array_equal(grads.flat, grads0.flat)
    for a, b in zip(last if isinstance(last, tuple) else (last,), last0 if isinstance(last0, tuple) else (last0,)):
        assert a.dtype == np.dtype(dtype) and np.array_equal(a, b)
    if cell == "rnn" and num_layers == 1:  # the seed's (H,) hprev too
        _, _, h = fastrnn.loss_and_grads(params.as_seed(), IDS, IDS, np.zeros(H, other))
        assert h.dtype == np.dtype(dtype)


@pytest.mark.parametrize("cell, num_layers", [("rnn", 1), ("rnn", 2), ("lstm", 1), ("gru", 1)])
@pytest.mark.parametrize("clip", [0, 0.0, -1.0, float("nan"), float("inf")])
def test_clip_zero_is_refused_for_every_cell(cell, num_layers, clip):
    """From Python, no clipping is ``clip=None`` (as TrainConfig takes it); 0 is refused alike for every cell."""
    with pytest.raises(ValueError, match="clip must be a positive finite number"):
        fastrnn.loss_and_grads(_model(cell, num_layers), IDS, IDS, clip=clip)
    with pytest.raises(fastrnn.ConfigError, match="clip must be a positive number"):
        fastrnn.TrainConfig(cell=cell, num_layers=num_layers, clip=clip).validate()


# --- from_torch: every inconsistency of a state_dict named -----------------------------------

def _state_dict(cell, num_layers=2):
    return fastrnn.to_torch(_model(cell, num_layers))


def _edited(state_dict, **changes):
    out = dict(state_dict)
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del out[key]
        else:
            out[key] = value
    return out


G = {"rnn": 1, "lstm": 4, "gru": 3}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("edit, message", [
    (lambda sd, g: _edited(sd, rnn__weight_ih_l1=None), r"missing rnn\.weight_ih_l1 \({gh}, 5\) for a 2-layer"),
    (lambda sd, g: _edited(sd, rnn__bias_hh_l0=None), r"missing rnn\.bias_hh_l0 \({gh},\)"),
    (lambda sd, g: _edited(sd, decoder__bias=None), r"missing decoder\.bias \(7,\)"),
    (lambda sd, g: _edited(sd, decoder__weight=None), r"missing decoder\.weight"),
    (lambda sd, g: _edited(sd, rnn__weight_hh_l2=np.zeros((g * H, H))), r"missing rnn\.weight_ih_l2 .* 3-layer"),
    (lambda sd, g: _edited(sd, rnn__bias_ih_l0=np.zeros(1)), r"rnn\.bias_ih_l0 has shape \(1,\); .* has \({gh},\)"),
    (lambda sd, g: _edited(sd, rnn__weight_hh_l1=np.zeros((g * H, H + 1))), r"rnn\.weight_hh_l1 has shape"),
    (lambda sd, g: _edited(sd, rnn__weight_ih_l0=np.zeros(g * H * V)), r"rnn\.weight_ih_l0 has shape \({n},\)"),
    (lambda sd, g: _edited(sd, decoder__weight=np.zeros(V * H)), r"decoder\.weight must have shape \(vocab, hidden\), got \(35,\)"),
    (lambda sd, g: _edited(sd, decoder__bias=np.zeros((V, 1))), r"decoder\.bias has shape \(7, 1\)"),
    (lambda sd, g: _edited(sd, **{"embedding.weight": np.zeros((V, H))}), r"has keys .* does not: embedding\.weight"),
    (lambda sd, g: _edited(sd, **{"rnn.weight_ih_l0_reverse": np.zeros((g * H, V))}), r"does not: rnn\.weight_ih_l0_reverse"),
    (lambda sd, g: _edited(sd, rnn__bias_ih_l1=np.zeros(g * H, np.int64)), r"rnn\.bias_ih_l1 must be a float"),
    (lambda sd, g: {}, r"missing decoder\.weight"),
    (lambda sd, g: {"decoder.weight": sd["decoder.weight"]}, r"no rnn\.weight_ih_l0"),
], ids=lambda x: "" if callable(x) else re.sub(r"\W+", "_", x.replace("\\", ""))[:48])
def test_from_torch_names_each_inconsistency(cell, edit, message):
    g = G[cell]
    with pytest.raises(ValueError, match=message.format(gh=g * H, n=g * H * V)):
        fastrnn.from_torch(edit(_state_dict(cell), g), cell)


@pytest.mark.parametrize("not_a_mapping", [None, [("decoder.weight", np.zeros((V, H)))], np.zeros(3)])
def test_from_torch_of_a_non_mapping_is_a_type_error(not_a_mapping):
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        fastrnn.from_torch(not_a_mapping, "lstm")
