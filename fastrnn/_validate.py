"""Argument checks shared by the fast path and the reference twin (numpy only).

Every public entry point normalises its arguments here before any kernel runs,
so a bad call fails with a ``ValueError`` that says what is wrong, and a stray
int32 or Fortran-ordered array never reaches (and recompiles) a kernel.
"""
from __future__ import annotations

import numpy as np

from .model import ModelParams, ModelSpec
from .params import PARAM_NAMES, Params

ID_DTYPE = np.int64
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_params(params, dtype=None) -> Params:
    """Return ``params`` as a :class:`Params` of C-contiguous arrays with 1-D biases.

    Arrays already in that form are returned as they are (no copy), so in-place
    updates reach the caller's arrays.
    """
    if not isinstance(params, Params):
        if hasattr(params, "as_seed") and hasattr(params, "spec"):  # a fastrnn.ModelParams of a 1-layer rnn
            params = params.as_seed()  # ValueError for any other model
        elif isinstance(params, dict):
            missing = [k for k in PARAM_NAMES if k not in params]
            if missing:
                raise ValueError(f"params is missing {', '.join(missing)}")
            params = Params(*(params[k] for k in PARAM_NAMES))
        elif isinstance(params, (tuple, list)) and len(params) == 5:
            params = Params(*params)
        else:
            raise ValueError("params must be a fastrnn.Params (Wxh, Whh, Why, bh, by)")
    arrays = []
    for name, a in zip(PARAM_NAMES, params):
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
        if a.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
        if name in ("bh", "by") and a.ndim == 2 and a.shape[1] == 1:
            a = a.reshape(-1)
        arrays.append(a)
    Wxh, Whh, Why, bh, by = arrays
    if Whh.ndim != 2 or Whh.shape[0] != Whh.shape[1] or Whh.shape[0] < 1:
        raise ValueError(f"Whh must be square (H, H), got shape {Whh.shape}")
    H = Whh.shape[0]
    if Why.ndim != 2 or Why.shape[1] != H or Why.shape[0] < 1:
        raise ValueError(f"Why must have shape (V, {H}), got {Why.shape}")
    V = Why.shape[0]
    expected = {"Wxh": (H, V), "bh": (H,), "by": (V,)}
    for name, a in zip(PARAM_NAMES, arrays):
        if name in expected and a.shape != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]}, got {a.shape}")
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1:
        raise ValueError(f"all parameters must share one dtype, got {sorted(map(str, dtypes))}")
    if dtype is not None and Whh.dtype != np.dtype(dtype):
        raise ValueError(f"expected {np.dtype(dtype)} parameters, got {Whh.dtype}")
    for name, a in zip(PARAM_NAMES, arrays):
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    return Params(*arrays)


def check_ids(ids, vocab_size, name="ids") -> np.ndarray:
    """Return ``ids`` as a non-empty 1-D C-contiguous int64 array of values in [0, vocab_size)."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of integer ids, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: a sequence needs at least one id")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=ID_DTYPE)
    # One reduction: seen as uint64, a negative id is larger than any vocabulary size.
    if int(arr.view(np.uint64).max()) < vocab_size:
        return arr
    lo, hi = int(arr.min()), int(arr.max())
    bad = lo if lo < 0 else hi
    raise ValueError(f"{name} holds id {bad}, outside the vocabulary [0, {vocab_size})")


def check_sequence_pair(inputs, targets, vocab_size):
    inputs = check_ids(inputs, vocab_size, "inputs")
    targets = check_ids(targets, vocab_size, "targets")
    if inputs.shape != targets.shape:
        raise ValueError(
            f"inputs and targets must have the same length, got {inputs.size} and {targets.size}"
        )
    return inputs, targets


def check_hidden(h, hidden_size, dtype=np.float64) -> np.ndarray:
    """Return a hidden state of shape (H,) or (H, 1) as a fresh 1-D array of ``dtype``."""
    arr = np.asarray(h)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"hprev must be a float array, got dtype {arr.dtype}")
    if arr.shape not in ((hidden_size,), (hidden_size, 1)):
        raise ValueError(f"hprev must have shape ({hidden_size},) or ({hidden_size}, 1), got {arr.shape}")
    return np.array(arr.reshape(-1), dtype=dtype)


def check_positive(value, name) -> float:
    """Return ``value`` as a float, or raise unless it is a positive finite number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def inverse_temperature(temperature, dtype):
    """``1 / temperature`` as a scalar of ``dtype``, or its largest finite value where that overflows.

    With the logits shifted by their maximum first (:func:`fastrnn.kernels.temper_inplace`),
    any finite inverse temperature gives finite scaled logits (the maximum 0, the rest
    <= 0 or -inf): a tiny temperature draws the most likely id, without NaNs or warnings.
    """
    inverse = 1.0 / check_positive(temperature, "temperature")  # a Python float: inf, not an error, past 1e308
    return np.dtype(dtype).type(min(inverse, float(np.finfo(dtype).max)))


def check_count(value, name) -> int:
    """Return ``value`` as an int, or raise unless it is a non-negative integer."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def check_top(top_k, top_p) -> tuple:
    """``(top_k, top_p)`` as the sampling kernels take them: an int (0: off) and a float (1.0: off).

    ``top_k``: None or 0 (off), else a positive integer; ``top_p``: None (off)
    or a number in (0, 1] (1: off).
    """
    if top_k is None:
        top_k = 0
    if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"top_k must be a positive integer (or 0 / None: off), got {top_k!r}")
    if top_p is None:
        top_p = 1.0
    try:
        top_p = float(top_p)
    except (TypeError, ValueError):
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}") from None
    if not (0 < top_p <= 1):
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p}")
    return int(top_k), top_p


# --- any model's arguments (fastrnn.ModelParams) -------------------------------------

def check_model(params) -> ModelParams:
    if isinstance(params, Params):
        return ModelParams.from_seed(check_params(params))
    if not isinstance(params, ModelParams):
        raise ValueError("params must be a fastrnn.ModelParams (from init_params) or a fastrnn.Params")
    return params


def check_batch_ids(inputs, targets, vocab_size):
    """(B, T) int64 inputs and targets, and whether they came as one (T,) sequence."""
    a, b = np.asarray(inputs), np.asarray(targets)
    single = a.ndim == 1
    if single:
        a = a[None, :]
        b = b[None, :] if b.ndim == 1 else b
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"inputs must be a non-empty (T,) or (B, T) array of ids, got shape {np.shape(inputs)}")
    if b.shape != a.shape:
        raise ValueError(f"inputs and targets must have the same shape, got {np.shape(inputs)} and "
                         f"{np.shape(targets)}")
    a = check_ids(a.reshape(-1), vocab_size, "inputs").reshape(a.shape)
    b = check_ids(b.reshape(-1), vocab_size, "targets").reshape(b.shape)
    return a, b, single


def check_state(state, spec: ModelSpec, B, dtype, single=False):
    """``state`` in PyTorch's layout as a tuple of fresh C-contiguous (L, B, H) arrays of ``dtype``.

    Accepts None (zeros); for an lstm a pair (h, c); for rnn/gru ``h`` alone or
    a 1-tuple. ``single`` (a (T,) call) also takes (L, H) arrays, and (H,) for a
    1-layer model.
    """
    L, H, n = spec.num_layers, spec.hidden_size, len(spec.state_names)
    if state is None:
        return tuple(np.zeros((L, B, H), dtype) for _ in range(n))
    parts = tuple(state) if isinstance(state, (tuple, list)) else (state,)
    if len(parts) != n:
        what = "a pair (h, c)" if n == 2 else "one array h"
        raise ValueError(f"the state of a {spec.cell} is {what}, got {len(parts)} array(s)")
    out = []
    for name, s in zip(spec.state_names, parts):
        arr = np.asarray(s)
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"state {name} must be a float array, got dtype {arr.dtype}")
        allowed = [(L, B, H)] + ([(L, H)] if single else []) + ([(H,), (H, 1)] if single and L == 1 else [])
        if arr.shape not in allowed:
            raise ValueError(f"state {name} must have shape {' or '.join(map(str, allowed))}, got {arr.shape}")
        out.append(np.array(arr.reshape(L, B, H), dtype=dtype, order="C"))
    return tuple(out)
