"""The gates' nonlinearities, written so that a loop over them vectorises: ``expm1``, ``sigmoid``, ``tanh``.

libm's ``exp`` and ``tanh`` are scalar calls that LLVM cannot vectorise, and
at the hidden sizes a CPU trains (H <= 512) an LSTM or GRU step spends more
time in them than in its matrix product. These are the same functions built
from arithmetic alone (range reduction, a polynomial, an exponent written into
the bits of a float64), which LLVM inlines into the cell kernels' loops and
compiles to SIMD code. They compile with FMA contraction and no other
fastmath flag: LLVM's flags are per instruction, so the calling kernel's
reassociation does not reach the Cody-Waite reduction once inlined. Every value is computed in float64 and
rounded once to the caller's dtype. (Numba's on-disk cache keys a kernel on its
own file only: after editing this file, touch ``cell_kernels.py`` too.)

Accuracy: ``expm1`` within 2 ulp of the true value over all of float64, and
``sigmoid`` and ``tanh`` built from it within 3 ulp of the true values (measured on a
dense grid against extended precision and at the edges in ``tests/test_gate_math.py``); NaN stays NaN,
and the limits are those of the exact functions (``tanh(+-inf) = +-1``,
``sigmoid(-inf) = 0`` to within 1e-307, ``sigmoid(inf) = 1``). They are not
bit-identical to numpy, so the cell kernels match their numpy twins to
rounding (the 1e-10 checks), as their sums already do.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

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
def expm1(x):
    """``exp(x) - 1`` of a float64, accurate near 0 too; arguments above 709 are taken as 709, below -50
    (where the result rounds to -1) as -50."""
    if x > MAX_ARG:
        x = MAX_ARG
    if x < MIN_ARG:
        x = MIN_ARG
    k = np.floor(x * LOG2E + 0.5)
    if not k >= MIN_K:  # also NaN: keeps the conversion below defined; r stays NaN
        k = MIN_K
    r = (x - k * LN2_HI) - k * LN2_LO
    p = r * r * (C2 + r * (C3 + r * (C4 + r * (C5 + r * (C6 + r * (C7 + r * (C8 + r * (C9 + r * (
        C10 + r * (C11 + r * (C12 + r * C13)))))))))))
    p = r + p  # e^r - 1, |r| <= ln2 / 2
    # 2^k: k + 1023 written into the low bits of 2^52's mantissa, then shifted into the exponent field
    # (no float-to-int conversion, which AVX2 cannot do four at a time for int64)
    scale = _float64_from_bits(_float64_bits(k + EXPONENT_MAGIC) << np.int64(52))
    return scale * p + (scale - 1.0)  # 2^k (e^r - 1) + 2^k - 1 = e^x - 1; exact r's result when k = 0


@_gate
def sigmoid(x):
    """``1 / (1 + exp(-x))``, computed in float64 (x any float)."""
    return 1.0 / (2.0 + expm1(-np.float64(x)))


@_gate
def tanh(x):
    """``tanh(x)`` = e / (e + 2) with e = expm1(2x), computed in float64 (x any float)."""
    e = expm1(2.0 * np.float64(x))
    return e / (e + 2.0)
