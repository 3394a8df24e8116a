"""The gates' nonlinearities, written so that a loop over them vectorises: ``expm1``, ``sigmoid``, ``tanh``.

libm's ``exp`` and ``tanh`` are scalar calls that LLVM cannot vectorise, and
at the hidden sizes a CPU trains (H <= 512) an LSTM or GRU step spends more
time in them than in its matrix product. These are the same functions built
from arithmetic alone (range reduction, a polynomial, an exponent written into
the bits of a float), which LLVM inlines into the cell kernels' loops and
compiles to SIMD code. They compile with FMA contraction and no other
fastmath flag: LLVM's flags are per instruction, so the calling kernel's
reassociation does not reach the Cody-Waite reduction once inlined.

A float32 argument is computed in float32 arithmetic (float32 constants, a
7th-degree polynomial, eight lanes to a 256-bit vector); any other number in
float64 (a 13th-degree polynomial). In compiled code the public names pick
the function by the argument's type when the caller compiles (``overload``).

Accuracy, in either dtype: ``expm1`` within 2 ulp of the true value, and
``sigmoid`` and ``tanh`` built from it within 3 ulp of the true values (measured on a
dense grid against extended precision and at the edges in ``tests/test_gate_math.py``); NaN stays NaN,
and the limits are those of the exact functions (``tanh(+-inf) = +-1``,
``sigmoid(-inf) = 0`` to within 1e-307 in float64 and 1e-38 in float32, ``sigmoid(inf) = 1``). They are not
bit-identical to numpy, so the cell kernels match their numpy twins to
rounding (the 1e-10 checks), as their sums already do.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

import numba

from ._numba import _COMMON

LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * LN2_HI is exact for |k| <= 2^11
LN2_LO = 1.90821492927058770002e-10
MAX_ARG = 709.0  # expm1(709) ~ 8.2e307: arguments are clamped here, so no intermediate overflows
MIN_ARG = -50.0  # expm1(-50) = -1 + 2e-22, which rounds to -1: the polynomial never sees -inf
MIN_K = -1022.0  # 2^k must be a normal float64
EXPONENT_MAGIC = 1023.0 + 2.0 ** 52  # k + this has the bits of k + 1023 in its low mantissa bits

# 1 / n! for n = 2..13: expm1(r) = r + r^2 / 2! + ... + r^13 / 13!, |r| <= ln2 / 2, error < 2^-60 relative
_C = [1.0 / float(np.prod(np.arange(1, n + 1, dtype=np.float64))) for n in range(2, 14)]
C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13 = _C


def _gate(fn):
    """Compiled with FMA contraction only (no reassociation: the reduction's order is what makes it exact)."""
    return numba.njit(fastmath={"contract"}, **_COMMON)(fn)


@intrinsic
def _float64_bits(typingctx, x):
    """The IEEE-754 bits of the float64 ``x`` as an int64 (a bitcast)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _float64_from_bits(typingctx, bits):
    """The float64 whose IEEE-754 bits are the int64 ``bits`` (a bitcast: one instruction, vectorisable)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@_gate
def _reduce(x, max_arg, min_arg, log2e, half, min_k, ln2_hi, ln2_lo):
    """(k, r) with x = k ln2 + r, |r| <= ln2 / 2 and k an integer (as a float), after clamping x to
    [min_arg, max_arg]: the Cody-Waite reduction of both dtypes, in the arguments' dtype (all one dtype)."""
    if x > max_arg:
        x = max_arg
    if x < min_arg:
        x = min_arg
    k = np.floor(x * log2e + half)
    if not k >= min_k:  # also NaN: keeps the power of two defined; r stays NaN
        k = min_k
    return k, (x - k * ln2_hi) - k * ln2_lo


@_gate
def _expm1_f64(x):
    """``exp(x) - 1`` of a float64, accurate near 0 too; arguments above 709 are taken as 709, below -50
    (where the result rounds to -1) as -50."""
    k, r = _reduce(x, MAX_ARG, MIN_ARG, LOG2E, 0.5, MIN_K, LN2_HI, LN2_LO)
    p = r * r * (C2 + r * (C3 + r * (C4 + r * (C5 + r * (C6 + r * (C7 + r * (C8 + r * (C9 + r * (
        C10 + r * (C11 + r * (C12 + r * C13)))))))))))
    p = r + p  # e^r - 1, |r| <= ln2 / 2
    # 2^k: k + 1023 written into the low bits of 2^52's mantissa, then shifted into the exponent field
    # (no float-to-int conversion, which AVX2 cannot do four at a time for int64)
    scale = _float64_from_bits(_float64_bits(k + EXPONENT_MAGIC) << np.int64(52))
    return scale * p + (scale - 1.0)  # 2^k (e^r - 1) + 2^k - 1 = e^x - 1; exact r's result when k = 0


@_gate
def _sigmoid_f64(x):
    """``1 / (1 + exp(-x))``, computed in float64 (x any float but float32)."""
    return 1.0 / (2.0 + _expm1_f64(-np.float64(x)))


@_gate
def _tanh_f64(x):
    """``tanh(x)`` = e / (e + 2) with e = expm1(2x), computed in float64 (x any float but float32)."""
    e = _expm1_f64(2.0 * np.float64(x))
    return e / (e + 2.0)


# --- float32: the same construction in float32 arithmetic (eight lanes to a 256-bit vector, not four) ---
# Every constant is a float32, so that no operation widens to float64.

LOG2E_F32 = np.float32(LOG2E)
LN2_HI_F32 = np.float32(0.693145751953125)  # 0x3f317200: its low 8 bits are 0, so k * LN2_HI_F32 is exact
LN2_LO_F32 = np.float32(1.428606765330187e-06)  # ln 2 - LN2_HI_F32
MAX_ARG_F32 = np.float32(88.0)  # expm1(88) ~ 1.65e38 < float32's largest, 3.4e38
MIN_ARG_F32 = np.float32(-18.0)  # expm1(-18) = -1 + 1.5e-8, which rounds to -1 in float32
MIN_K_F32 = np.float32(-126.0)  # 2^k must be a normal float32
HALF_F32, ONE_F32, TWO_F32 = np.float32(0.5), np.float32(1.0), np.float32(2.0)
# 1 / n! for n = 2..7: the Taylor polynomial's error on |r| <= ln2 / 2 is below 2e-8 relative (a third of
# float32's half ulp)
D2, D3, D4, D5, D6, D7 = (np.float32(c) for c in _C[:6])


@intrinsic
def _float32_power_of_two(typingctx, k):
    """2^k as a float32, for a float32 ``k`` holding an integer in [-126, 127]: k + 127 + 2^23 puts k + 127 in
    the low mantissa bits, which a shift by 23 moves into the exponent field (all in vector registers)."""
    if k != types.float32:
        return None

    def codegen(context, builder, signature, args):
        biased = builder.fadd(args[0], ir.Constant(ir.FloatType(), 127.0 + 2.0 ** 23))
        bits = builder.shl(builder.bitcast(biased, ir.IntType(32)), ir.Constant(ir.IntType(32), 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


@_gate
def _expm1_f32(x):
    """``exp(x) - 1`` of a float32 in float32 arithmetic; arguments above 88 are taken as 88, below -18
    (where the result rounds to -1) as -18."""
    k, r = _reduce(x, MAX_ARG_F32, MIN_ARG_F32, LOG2E_F32, HALF_F32, MIN_K_F32, LN2_HI_F32, LN2_LO_F32)
    p = r + r * r * (D2 + r * (D3 + r * (D4 + r * (D5 + r * (D6 + r * D7)))))
    scale = _float32_power_of_two(k)
    return scale * p + (scale - ONE_F32)


@_gate
def _sigmoid_f32(x):
    """``1 / (1 + exp(-x))`` of a float32, in float32."""
    return ONE_F32 / (TWO_F32 + _expm1_f32(-x))


@_gate
def _tanh_f32(x):
    """``tanh(x)`` = e / (e + 2) with e = expm1(2x), of a float32, in float32."""
    e = _expm1_f32(TWO_F32 * x)
    return e / (e + TWO_F32)


# --- the public names: float32 in float32, anything else in float64, in compiled code and in Python ---

def expm1(x):
    """``exp(x) - 1``: a float32 in float32 arithmetic, any other number in float64 (see the module)."""
    return _expm1_f32(x) if isinstance(x, np.float32) else _expm1_f64(x)


def sigmoid(x):
    """``1 / (1 + exp(-x))``: a float32 in float32 arithmetic, any other number in float64."""
    return _sigmoid_f32(x) if isinstance(x, np.float32) else _sigmoid_f64(x)


def tanh(x):
    """``tanh(x)``: a float32 in float32 arithmetic, any other number in float64."""
    return _tanh_f32(x) if isinstance(x, np.float32) else _tanh_f64(x)


def _by_dtype(for_float32, for_others):
    """The typing of a public name in compiled code: the float32 function for a float32, else the other."""
    def typing(x):
        chosen = for_float32 if x == types.float32 else for_others
        return lambda x: chosen(x)
    return typing


for _name, _f32, _f64 in ((expm1, _expm1_f32, _expm1_f64), (sigmoid, _sigmoid_f32, _sigmoid_f64),
                          (tanh, _tanh_f32, _tanh_f64)):
    overload(_name, jit_options=dict(fastmath={"contract"}))(_by_dtype(_f32, _f64))
