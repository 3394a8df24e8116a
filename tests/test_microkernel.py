"""The packed micro-kernel (fastrnn.microkernel) against its numpy twin, edges and splits included.

The bound. The kernel sums k in increasing order with one FMA per k; the twin (BLAS) in its own order
and blocking. Each is within gamma_n = n u / (1 - n u) (u = eps / 2, n = K + 1 roundings counting
accumulate's final add) of the exact value, relative to ``|C_old| + |A| @ |W|`` (Higham, Accuracy and
Stability of Numerical Algorithms, 2nd ed., 3.1), so they differ by at most twice that, element by element.
For K <= 129 this is <= 2.9e-14 of |A| @ |W| in float64 and <= 1.6e-5 in float32: the "rtol 1e-12 / 1e-5"
of a plain relative test, made per element so that sums that cancel to ~0 do not need a looser rtol.
``test_the_bound_catches_a_wrong_weight`` shows the bound is tight enough to see a 1e-9 error in one weight.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import microkernel as mk
from fastrnn.microkernel import TileShape
from fastrnn.reference_microkernel import matmul_packed_reference, unpack_panels

DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["f64", "f32"]
PACKINGS = ["W", "transpose"]


def _operands(M, K, N, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype),
            rng.standard_normal((M, N)).astype(dtype))


def _pack(W, packing, columns):
    """W (K, N)'s panels, by pack_panels from W or by pack_panels_of_transpose from W.T (N, K)."""
    K, N = W.shape
    Wp = np.full((mk.panel_count(N, columns), K, columns), np.nan, W.dtype)  # padding must be written
    if packing == "W":
        mk.pack_panels(W, Wp)
    else:
        mk.pack_panels_of_transpose(np.ascontiguousarray(W.T), Wp)
    return Wp


def _bound(A, W, old, accumulate):
    """2 gamma_{K+1} (|old| + |A| @ |W|), elementwise, in float64 (see the module docstring)."""
    u = np.finfo(A.dtype).eps / 2
    n = A.shape[1] + 1
    gamma = n * u / (1 - n * u)
    scale = np.abs(A.astype(np.float64)) @ np.abs(W.astype(np.float64))
    if accumulate:
        scale += np.abs(old.astype(np.float64))
    return 2 * gamma * scale


def _check(matmul, A, W, old, packing, columns, accumulate):
    Wp = _pack(W, packing, columns)
    N = W.shape[1]
    got, expected = old.copy(), old.copy()
    matmul(A, Wp, N, got, accumulate)
    matmul_packed_reference(A, Wp, N, expected, accumulate)
    err = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    bound = _bound(A, W, old, accumulate)
    assert np.all(err <= bound), f"worst err/bound {np.max(err / np.where(bound > 0, bound, 1)):.3g}"
    return got


@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
@pytest.mark.parametrize("packing", PACKINGS)
@pytest.mark.parametrize("N", [1, 31, 512, 515])
@pytest.mark.parametrize("K", [1, 5, 128, 129])
@pytest.mark.parametrize("M", [1, 3, 8, 32, 33])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_equals_the_twin(dtype, M, K, N, packing, accumulate):
    A, W, old = _operands(M, K, N, dtype)
    _check(mk.matmul_packed, A, W, old, packing, mk.HOST_TILES[dtype].columns, accumulate)


def _other_tiles():
    """Tile shapes beside the host's: a one-row tile, a 3 x 3-vector one, the AVX-512 and AVX2 choices and
    the portable, unfused one. Wider vectors than the CPU has are split by LLVM: correct, only slow."""
    host = mk.HOST_TILES
    shapes = {
        "1x1vec": {dt: TileShape(1, s.width, 1) for dt, s in host.items()},
        "3x3vec": {dt: TileShape(3, s.width, 3) for dt, s in host.items()},
        "avx512": mk.tile_shapes_for({"avx512f", "fma"}),
        "avx2": mk.tile_shapes_for({"avx2", "fma"}),
        "portable-unfused": mk.tile_shapes_for(set()),
    }
    return shapes


OTHER_TILES = _other_tiles()


@pytest.fixture(scope="module", params=list(OTHER_TILES))
def other_kernel(request):
    shapes = OTHER_TILES[request.param]
    return shapes, mk.build_matmul(shapes)


@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 129, 37), (33, 64, 515), (9, 5, 48)])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_other_tile_shapes_equal_the_twin(other_kernel, dtype, M, K, N, accumulate):
    shapes, matmul = other_kernel
    A, W, old = _operands(M, K, N, dtype, seed=1)
    _check(matmul, A, W, old, "W", shapes[dtype].columns, accumulate)


def test_the_portable_tile_is_unfused_without_fma():
    assert not mk.tile_shapes_for(set(), "x86_64")[np.float32].fused
    assert mk.tile_shapes_for(set(), "aarch64")[np.float32].fused


@pytest.mark.parametrize("features,float32,float64", [
    ({"avx512f", "avx2", "fma"}, (8, 32), (8, 16)),
    ({"avx2", "fma"}, (6, 16), (6, 8)),
    (set(), (4, 8), (4, 4)),
], ids=["avx512", "avx2", "none"])
def test_tile_shape_per_isa(features, float32, float64):
    shapes = mk.tile_shapes_for(features)
    assert (shapes[np.float32].rows, shapes[np.float32].columns) == float32
    assert (shapes[np.float64].rows, shapes[np.float64].columns) == float64
    assert all(s.rows * s.vectors <= 16 for s in shapes.values())  # accumulators fit the register file


@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_split_rows_and_panels_give_the_same_bits(dtype, accumulate):
    """Rows split in two calls, or panels split in two calls, give exactly one call's result (fixed k
    order): threads splitting the batch or the hidden units change no bit."""
    M, K, N = 33, 129, 515
    A, W, old = _operands(M, K, N, dtype, seed=2)
    Wp = _pack(W, "transpose", mk.HOST_TILES[dtype].columns)
    whole = old.copy()
    mk.matmul_packed(A, Wp, N, whole, accumulate)
    MR = mk.HOST_TILES[dtype].rows
    for cut in (1, MR - 1, MR + 1, 17):
        rows = old.copy()
        mk.matmul_packed(A[:cut], Wp, N, rows[:cut], accumulate)
        mk.matmul_packed(A[cut:], Wp, N, rows[cut:], accumulate)
        assert np.array_equal(rows, whole), cut
    NR = Wp.shape[2]
    for panels in (1, Wp.shape[0] - 1):
        cols = old.copy()
        mk.matmul_packed(A, Wp[:panels], panels * NR, cols[:, :panels * NR], accumulate)
        mk.matmul_packed(A, Wp[panels:], N - panels * NR, cols[:, panels * NR:], accumulate)
        assert np.array_equal(cols, whole), panels


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_any_strides_of_A(dtype):
    """A as a column-major array and as a strided view: the same bits as its contiguous copy."""
    M, K, N = 13, 40, 70
    A, W, _ = _operands(M, K, N, dtype, seed=3)
    Wp = _pack(W, "W", mk.HOST_TILES[dtype].columns)
    expected = np.empty((M, N), dtype)
    mk.matmul_packed(A, Wp, N, expected, False)
    for view in (np.asfortranarray(A), np.repeat(A, 2, axis=1)[:, ::2]):
        got = np.empty((M, N), dtype)
        mk.matmul_packed(view, Wp, N, got, False)
        assert np.array_equal(got, expected)


@pytest.mark.parametrize("N", [1, 17, 512, 515])
@pytest.mark.parametrize("K", [1, 129])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_packing_round_trip(dtype, K, N):
    """Both packings give the same panels; unpacking gives W back; the padding is zero."""
    _, W, _ = _operands(1, K, N, dtype, seed=4)
    columns = mk.HOST_TILES[dtype].columns
    from_w, from_t = _pack(W, "W", columns), _pack(W, "transpose", columns)
    assert np.array_equal(from_w, from_t)
    assert np.array_equal(unpack_panels(from_w, N), W)
    assert not np.any(from_w.transpose(1, 0, 2).reshape(K, -1)[:, N:])
    assert from_w.shape == (-(-N // columns), K, columns)
    assert mk.empty_panels(K, N, dtype).shape == from_w.shape


@pytest.mark.parametrize("M,K,N", [(0, 4, 5), (3, 0, 5), (3, 4, 0)])
@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
def test_empty_dimensions(M, K, N, accumulate):
    """M, K or N zero: an empty product (C = 0, or C unchanged when accumulating)."""
    A, W, old = _operands(M, K, N, np.float64)
    Wp = _pack(W, "W", mk.HOST_TILES[np.float64].columns)
    got = old.copy()
    mk.matmul_packed(A, Wp, N, got, accumulate)
    assert np.array_equal(got, old if accumulate else np.zeros_like(old))


def test_the_bound_catches_a_wrong_weight():
    """One weight changed by 1e-9 relative (float64) takes the kernel outside the bound of the twin."""
    M, K, N = 8, 129, 40
    A, W, old = _operands(M, K, N, np.float64, seed=5)
    wrong = W.copy()
    wrong[7, 3] *= 1 + 1e-9
    Wp = _pack(wrong, "W", mk.HOST_TILES[np.float64].columns)
    got = np.empty((M, N))
    mk.matmul_packed(A, Wp, N, got, False)
    assert np.any(np.abs(got - A @ W) > _bound(A, W, old, False))


@pytest.mark.parametrize("case", ["panel width", "K", "too few panels", "out rows", "out columns strided"])
def test_mismatched_shapes_are_refused(case):
    dtype = np.float64
    M, K, N = 4, 6, 10
    A, W, _ = _operands(M, K, N, dtype)
    NR = mk.HOST_TILES[dtype].columns
    Wp, out = mk.empty_panels(K, N, dtype), np.empty((M, N), dtype)
    if case == "panel width":
        Wp = np.zeros((N, K, NR + 1), dtype)
    elif case == "K":
        Wp = mk.empty_panels(K + 1, N, dtype)
    elif case == "too few panels":
        N = Wp.shape[0] * NR + 1
        out = np.empty((M, N), dtype)
    elif case == "out rows":
        out = np.empty((M + 1, N), dtype)
    else:
        out = np.empty((M, 2 * N), dtype)[:, ::2]
    with pytest.raises(ValueError, match="matmul_packed"):
        mk.matmul_packed(A, Wp, N, out, False)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("G", [1, 3, 4])
@pytest.mark.parametrize("H, parts", [(5, 1), (5, 3), (40, 2), (70, 3)])
def test_the_recurrence_packed_by_part_gives_the_whole_products_bits(dtype, G, H, parts):
    """pack_forward / pack_backward on one part are the panels of Whh.T / Whh, and pack_parts (the parts at
    once) writes the same; on several parts, each part's product is bit for bit its columns of the whole one
    (the parts kernels run the same sums as the whole-layer ones)."""
    from fastrnn.cell_parts_kernels import pack_backward, pack_forward, pack_parts, panel_bounds, unit_bounds

    rng = np.random.default_rng(H * parts + G)
    Whh = rng.standard_normal((G * H, H)).astype(dtype)
    h, dgates = rng.standard_normal((3, H)).astype(dtype), rng.standard_normal((3, G * H)).astype(dtype)
    NR = mk.HOST_TILES[np.dtype(dtype).type].columns
    one, bounds = np.array([0, H]), unit_bounds(H, parts)
    packed = {}
    for name, pack, per_unit, K in [("forward", pack_forward, G, H), ("backward", pack_backward, 1, G * H)]:
        for b in (one, bounds):
            first = panel_bounds(b, per_unit, NR)
            panels = np.full((first[-1], K, NR), np.nan, dtype)  # every entry, padding too, must be written
            pack(panels, Whh, b, first)
            at_once = np.full_like(panels, np.nan)
            pack_parts(at_once, Whh, b, first, name == "forward")
            assert np.array_equal(at_once, panels)
            packed[name, len(b)] = panels, first
    assert np.array_equal(packed["forward", 2][0], _pack(np.ascontiguousarray(Whh.T), "W", NR))
    assert np.array_equal(packed["backward", 2][0], _pack(Whh, "W", NR))
    whole_u, whole_d = np.empty((3, G * H), dtype), np.empty((3, H), dtype)
    mk.matmul_packed(h, packed["forward", 2][0], G * H, whole_u)
    mk.matmul_packed(dgates, packed["backward", 2][0], H, whole_d)
    (fw, ffirst), (bw, bfirst) = packed["forward", len(bounds)], packed["backward", len(bounds)]
    for p, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        n = hi - lo
        u, d = np.empty((3, G * n), dtype), np.empty((3, n), dtype)
        mk.matmul_packed(h, fw[ffirst[p]:ffirst[p + 1]], G * n, u)
        mk.matmul_packed(dgates, bw[bfirst[p]:bfirst[p + 1]], n, d)
        columns = np.concatenate([np.arange(g * H + lo, g * H + hi) for g in range(G)])
        assert np.array_equal(u, whole_u[:, columns]) and np.array_equal(d, whole_d[:, lo:hi])
