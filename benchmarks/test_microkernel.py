"""Group ``microkernel``: the recurrence's per-step product on fastrnn's micro-kernel, beside ``np.dot``.

Each shape is the per-thread (B, K) @ (K, N) product of one time step of a model the speed targets
name: forward ``h (B, H) @ Whh.T`` (K = H, N = G*H) and backward ``dgates (B, G*H) @ Whh`` (K = G*H,
N = H). One timed call is ``ITERATIONS`` products on one thread, float32 and float64:

- ``microkernel``: :func:`fastrnn.microkernel.matmul_packed` on Whh packed once (outside the timing);
- ``numpy-dot``: ``np.dot(A, Whh.T, out)`` forward, ``np.dot(A, Whh, out)`` backward, as the engine
  calls BLAS today (OpenBLAS packs the weight slice again on every call);
- ``pack``: packing Whh for that direction once (``pack_panels_of_transpose`` forward, ``pack_panels``
  backward): paid once per optimizer step, i.e. once per T products;
- ``gemm-2048``: numpy's matmul of two 2048 x 2048 matrices, the same run's GEMM peak per dtype.

``extra_info`` holds the flops of one call, the GFLOP/s of the median (timed runs only), the tile
shape, the ISA the kernel was compiled for and the BLAS kernel (threadpoolctl's ``architecture``).
``python -m benchmarks.report`` skips these rows (kind ``microkernel``); compare them within one run.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import microkernel as mk

from ._support import QUICK, blas_threads, plan

try:
    from threadpoolctl import threadpool_info
except ImportError:  # pragma: no cover - depends on the environment
    threadpool_info = None

KIND = "microkernel"
#: name -> (B, H, G): the per-thread products of LSTM (G = 4) and GRU (G = 3) stacks
MODELS = {"lstm-512-b32": (32, 512, 4), "lstm-256-b32": (32, 256, 4), "lstm-128-b50": (50, 128, 4),
          "gru-512-b32": (32, 512, 3)}
DIRECTIONS = ("forward", "backward")
DTYPES = {"float32": np.float32, "float64": np.float64}
ITERATIONS = 10
ROUNDS = 15
GEMM_SIZE = 2048
GEMM_ROUNDS = 5


def _blas_architecture():
    """The BLAS libraries' kernels (threadpoolctl's ``architecture``), e.g. ['SkylakeX']."""
    if threadpool_info is None:
        return None
    return sorted({lib.get("architecture") for lib in threadpool_info() if lib.get("user_api") == "blas"}
                  - {None})


def _describe(benchmark, implementation, dtype, flops, **more):
    target = mk.target_description()
    benchmark.group = KIND
    benchmark.extra_info.update(
        kind=KIND, implementation=implementation, dtype=np.dtype(dtype).name, threads=1,
        flops_per_call=flops, isa=target["isa"], cpu_name=target["cpu_name"],
        tile=target["tiles"][np.dtype(dtype).name], blas_architecture=_blas_architecture(),
        blas_threads=blas_threads(), quick=QUICK, **more)


def _record_rate(benchmark):
    if not benchmark.disabled:
        benchmark.extra_info["gflops"] = benchmark.extra_info["flops_per_call"] / benchmark.stats.stats.median / 1e9


def _operands(model, direction, dtype):
    """(A (B, K), Whh (G*H, H)) with K and N of ``direction``; random normal, seed 0."""
    B, H, G = MODELS[model]
    rng = np.random.default_rng(0)
    Whh = rng.standard_normal((G * H, H)).astype(dtype)
    K = H if direction == "forward" else G * H
    return rng.standard_normal((B, K)).astype(dtype), Whh


def _packed(Whh, direction):
    """Whh's panels for ``direction``: Whh.T's forward (K = H, N = G*H), Whh's backward (K = G*H, N = H)."""
    N, K = Whh.shape if direction == "forward" else Whh.shape[::-1]
    Wp = mk.empty_panels(K, N, Whh.dtype)
    (mk.pack_panels_of_transpose if direction == "forward" else mk.pack_panels)(Whh, Wp)
    return Wp, N


def _repeat(fn, *args):
    def call():
        for _ in range(ITERATIONS):
            fn(*args)
    return call


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("implementation", ["microkernel", "numpy-dot"])
def test_microkernel(benchmark, threads, implementation, model, direction, dtype):
    A, Whh = _operands(model, direction, DTYPES[dtype])
    if implementation == "microkernel":
        Wp, N = _packed(Whh, direction)
        out = np.empty((A.shape[0], N), A.dtype)
        call = _repeat(mk.matmul_packed, A, Wp, N, out, False)
    else:
        W = Whh.T if direction == "forward" else Whh
        N = W.shape[1]
        out = np.empty((A.shape[0], N), A.dtype)
        call = _repeat(np.dot, A, W, out)
    M, K = A.shape
    _describe(benchmark, implementation, dtype, ITERATIONS * 2 * M * K * N, model=model, direction=direction,
              shape=f"({M} x {K}) @ ({K} x {N})", iterations_per_call=ITERATIONS)
    if not benchmark.disabled:
        call()  # compile or load from cache, warm the caches
    benchmark.pedantic(call, **plan(ROUNDS))
    _record_rate(benchmark)
    reference = A @ (Whh.T if direction == "forward" else Whh)
    np.testing.assert_allclose(out, reference, rtol=1e-3 if dtype == "float32" else 1e-10,
                               atol=1e-3 * float(np.max(np.abs(reference))))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("model", list(MODELS))
def test_pack(benchmark, threads, model, direction, dtype):
    _, Whh = _operands(model, direction, DTYPES[dtype])
    Wp, _ = _packed(Whh, direction)
    pack = mk.pack_panels_of_transpose if direction == "forward" else mk.pack_panels
    _describe(benchmark, "pack", dtype, 0, model=model, direction=direction,
              shape=f"Whh {Whh.shape[0]} x {Whh.shape[1]}", bytes_written=Wp.nbytes)
    benchmark.pedantic(pack, args=(Whh, Wp), **plan(ROUNDS))


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_gemm_peak(benchmark, threads, dtype):
    """The run's GEMM peak beside the products: 2048^3 matmul on one BLAS thread."""
    n = GEMM_SIZE if not benchmark.disabled else 64  # the smoke call needs no 2048^3 product
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(DTYPES[dtype]) for _ in range(2))
    c = np.empty((n, n), a.dtype)
    _describe(benchmark, "gemm-2048", dtype, 2 * n ** 3, matrix_size=n)
    if not benchmark.disabled:
        np.matmul(a, b, out=c)
    benchmark.pedantic(np.matmul, args=(a, b), kwargs={"out": c}, **plan(GEMM_ROUNDS))
    _record_rate(benchmark)
