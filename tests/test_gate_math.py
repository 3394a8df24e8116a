"""The gates' vectorisable sigmoid, tanh and expm1 (fastrnn.gate_math) against the exact values, in ulp, edges included.

"Exact" is numpy's function evaluated in extended precision (``np.longdouble``: x87's 80 bits on x86, quad on
aarch64), rounded to the dtype only in the ulp measure. Measuring against numpy's float64 functions instead would
move with the machine: numpy dispatches exp and tanh to SIMD code by CPU, and its AVX-512 float64 sigmoid
``1 / (1 + exp(-x))`` is itself 2.3 ulp off on Sapphire Rapids.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import gate_math
from fastrnn._numba import fast

FUNCTIONS = {"expm1": (0, np.expm1, 2), "sigmoid": (1, lambda v: 1 / (1 + np.exp(-v)), 3), "tanh": (2, np.tanh, 3)}


@fast
def _apply(out, x, which):
    for i in range(x.size):
        if which == 0:
            out[i] = gate_math.expm1(x[i])
        elif which == 1:
            out[i] = gate_math.sigmoid(x[i])
        else:
            out[i] = gate_math.tanh(x[i])


def _grid(dtype):
    tiny = np.geomspace(np.finfo(dtype).tiny, 60, 20_001)
    return np.concatenate([np.linspace(-60, 60, 200_001), tiny, -tiny, [0.0, -0.0]]).astype(dtype)


def _ulp_error(name, dtype):
    which, exact, _ = FUNCTIONS[name]
    x = _grid(dtype)
    out = np.empty_like(x)
    _apply(out, x, which)
    with np.errstate(over="ignore"):
        expected = exact(x.astype(np.longdouble))
    return _ulp_distance(out, expected, dtype)


def _ulp_distance(got, expected, dtype):
    """Largest |got - expected| in units of the dtype's last place at expected (finite, non-zero expected)."""
    keep = np.isfinite(expected) & (expected != 0)
    expected = expected[keep]
    ulp = np.spacing(np.abs(expected.astype(dtype))).astype(np.longdouble)
    return float(np.max(np.abs(got[keep].astype(np.longdouble) - expected) / ulp))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_within_a_few_ulp_of_the_exact_value(name, dtype):
    assert np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant, "needs an extended-precision long double"
    assert _ulp_error(name, dtype) <= FUNCTIONS[name][2]


# per dtype: (the largest finite argument tried, the clamped expm1 of +inf's lower bound, how close to 0 and 1)
EDGES = {np.float64: (1e308, 708.9, 1e307, 1e-300), np.float32: (3e38, 88.5, 1e38, 1e-37)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_edges_nan_and_limits(name, dtype):
    which = FUNCTIONS[name][0]
    largest, beyond_clamp, huge, close = EDGES[dtype]
    x = np.array([np.nan, np.inf, -np.inf, largest, -largest, beyond_clamp, -beyond_clamp], dtype)
    out = np.empty_like(x)
    _apply(out, x, which)
    assert np.isnan(out[0]) and not np.isnan(out[1:]).any()
    expected = {"expm1": [np.inf, -1.0, np.inf, -1.0, np.inf, -1.0], "sigmoid": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
                "tanh": [1.0, -1.0, 1.0, -1.0, 1.0, -1.0]}[name]
    for got, want in zip(out[1:], expected):
        if np.isinf(want):
            assert huge < got < np.inf  # clamped (at expm1(709) ~ 8.2e307, expm1(88) ~ 1.7e38): large, finite
        else:
            assert abs(got - want) < close


@fast
def _sigmoid_of(x):
    return gate_math.sigmoid(x)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_each_dtype_is_computed_in_its_own_arithmetic(dtype):
    """A float32 gate stays in float32 (no widening to float64 in the vectorised loop), a float64 in float64;
    the Python-level name computes what compiled code does."""
    x = dtype(0.3)
    value = _sigmoid_of(x)
    (signature,) = [s for s in _sigmoid_of.nopython_signatures if s.args[0].name == np.dtype(dtype).name]
    assert signature.return_type.name == np.dtype(dtype).name
    assert gate_math.sigmoid(x) == value
    assert abs(value - 1 / (1 + np.exp(-0.3))) < 4 * np.finfo(dtype).eps


def test_the_check_can_fail():
    """A function one ulp off everywhere is caught by the ulp measure used above."""
    x = _grid(np.float64)
    exact = np.tanh(x.astype(np.longdouble))
    off = np.nextafter(exact.astype(np.float64), np.inf) * (1 + 4 * np.finfo(np.float64).eps)
    assert _ulp_distance(off, exact, np.float64) > 3
