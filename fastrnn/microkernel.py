"""The register-blocked micro-kernel: weights packed into column panels, and the tiled product over them.

``C (M, N) = A (M, K) @ W (K, N)`` with W packed once (per optimizer step) into panels of NR columns,
``Wp[panel, k, j] = W[k, panel * NR + j]`` (zero past N), so that the k loop of one MR x NR tile of C
reads one contiguous panel row per k. The tile's k loop is written in LLVM IR (an ``@intrinsic``): its
MR x NR accumulators are vector values carried through the loop by phi nodes (they stay in registers,
which plain Numba loops over a tile never achieved), each k broadcasts MR entries of A, loads NR / VW
vectors of the panel and issues ``llvm.fma`` on them; the tile is written to C once, after the loop.

The recurrence needs two layouts of ``Whh`` (G*H, H):
- forward, ``gates (B, G*H) = h (B, H) @ Whh.T``: W = Whh.T (K = H, N = G*H), the panels
  :func:`pack_panels_of_transpose` makes straight from Whh;
- backward, ``dh (B, H) = dgates (B, G*H) @ Whh``: W = Whh (K = G*H, N = H), packed by :func:`pack_panels`.
The cells pack both by part of the hidden units (:func:`fastrnn.cell_parts_kernels.pack_forward`, ``pack_backward``),
which on one part gives these same panels.

Every element of C is ``sum_k A[i, k] W[k, j]`` accumulated by one fused multiply-add per k in increasing
k from 0 (then added to C's old value in accumulate mode), whatever the tile, the edge or the split of
rows and panels among callers: so results are bit-identical however rows or panels are divided among
threads, and differ from BLAS only by summation order.

The tile shape follows the CPU Numba compiles for (:func:`host_tile_shapes`): AVX-512 8 x 32 float32 /
8 x 16 float64 (16 zmm accumulators), AVX2 6 x 16 / 6 x 8 (12 ymm accumulators), otherwise 4 x 8 /
4 x 4 on 128-bit vectors (fused only where the CPU has FMA). :func:`build_matmul` compiles the product for
any other shapes (tests exercise several). The numpy twin is :mod:`fastrnn.reference_microkernel`.
"""
from __future__ import annotations

import platform
import types as pytypes
from typing import NamedTuple

import llvmlite.binding as llvm_binding
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ._numba import exact


class TileShape(NamedTuple):
    """One tile of C: ``rows`` (MR) x ``vectors * width`` (NR) elements, ``rows * vectors`` accumulators of
    ``width`` lanes; ``fused``: one ``llvm.fma`` per lane and k (else a multiply then an add)."""
    rows: int
    width: int
    vectors: int
    fused: bool = True

    @property
    def columns(self) -> int:
        """NR: the panel width."""
        return self.width * self.vectors


def _target_features() -> tuple[str, set[str]]:
    """(CPU name, enabled features) Numba compiles for: the host's unless NUMBA_CPU_NAME/FEATURES say."""
    name = numba.config.CPU_NAME or llvm_binding.get_host_cpu_name()
    if numba.config.CPU_FEATURES is not None:
        flags = numba.config.CPU_FEATURES.split(",")
        return name, {f[1:] for f in flags if f.startswith("+")}
    if numba.config.CPU_NAME and numba.config.CPU_NAME != "host":
        return name, set()  # a named generic target: assume nothing beyond the baseline
    return name, {k for k, on in llvm_binding.get_host_cpu_features().items() if on}


def tile_shapes_for(features: set[str], machine: str = "") -> dict[type, TileShape]:
    """Tile per dtype for a CPU with ``features`` (llvm names) on ``machine`` (platform.machine())."""
    if "avx512f" in features:
        return {np.float32: TileShape(8, 16, 2), np.float64: TileShape(8, 8, 2)}
    if "avx2" in features and "fma" in features:
        return {np.float32: TileShape(6, 8, 2), np.float64: TileShape(6, 4, 2)}
    fused = "fma" in features or machine.lower() in ("aarch64", "arm64")
    return {np.float32: TileShape(4, 4, 2, fused), np.float64: TileShape(4, 2, 2, fused)}


def host_tile_shapes() -> dict[type, TileShape]:
    """The tile per dtype for the CPU Numba compiles for (see :func:`tile_shapes_for`)."""
    return tile_shapes_for(_target_features()[1], platform.machine())


def target_description() -> dict:
    """CPU name, SIMD level and tile shapes the default kernels use (for benchmark records)."""
    name, features = _target_features()
    isa = ("avx512" if "avx512f" in features else "avx2" if "avx2" in features else "portable")
    return {"cpu_name": name, "isa": isa,
            "tiles": {np.dtype(dt).name: f"{s.rows}x{s.columns} ({s.rows * s.vectors} x {s.width} lanes)"
                      for dt, s in HOST_TILES.items()}}


# --- packing --------------------------------------------------------------------------------------------

def panel_count(N: int, columns: int) -> int:
    """Panels of ``columns`` needed for N columns (at least one)."""
    return max(1, -(-N // columns))


def empty_panels(K: int, N: int, dtype, columns: int | None = None) -> np.ndarray:
    """A zeroed (panels, K, NR) array for a (K, N) matrix; NR = the host tile's columns for ``dtype``."""
    if columns is None:
        columns = HOST_TILES[np.dtype(dtype).type].columns
    return np.zeros((panel_count(N, columns), K, columns), dtype)


@exact
def pack_panels(W, out):
    """out (P, K, NR)[p, k, j] = W (K, N)[k, p * NR + j], zero where p * NR + j >= N (P * NR >= N)."""
    K, N = W.shape
    P, Kp, NR = out.shape
    if Kp != K or P * NR < N:
        raise ValueError("pack_panels: out must be (>= ceil(N / NR), K, NR)")
    for k in range(K):  # W read once, row after row (panel after panel swept W's rows P times)
        src = W[k]
        for p in range(P):
            j0 = p * NR
            n = min(NR, max(N - j0, 0))
            row = out[p, k]
            for j in range(n):
                row[j] = src[j0 + j]
            for j in range(n, NR):
                row[j] = 0


@exact
def pack_panels_of_transpose(Wt, out):
    """out (P, K, NR)[p, k, j] = Wt (N, K)[p * NR + j, k]: the panels of ``Wt.T`` read straight from Wt,
    zero where p * NR + j >= N."""
    N, K = Wt.shape
    P, Kp, NR = out.shape
    if Kp != K or P * NR < N:
        raise ValueError("pack_panels_of_transpose: out must be (>= ceil(N / NR), K, NR)")
    for p in range(P):
        j0 = p * NR
        n = min(NR, max(N - j0, 0))
        panel = out[p]
        for j in range(n):
            src = Wt[j0 + j]
            for k in range(K):
                panel[k, j] = src[k]
        for k in range(K):
            for j in range(n, NR):
                panel[k, j] = 0


# --- the tile, in LLVM IR -------------------------------------------------------------------------------

def _byte_offset(builder, ptr, offset, elem_ptr_type):
    """``ptr`` moved by ``offset`` bytes (an intp value), as ``elem_ptr_type``."""
    raw = builder.bitcast(ptr, ir.IntType(8).as_pointer())
    return builder.bitcast(builder.gep(raw, [offset]), elem_ptr_type)


def _emit_tile(builder, shape, mr, scalar, a_row0, sa0, sa1, panel, K, c_tile, sc0, accumulate, done):
    """The k loop of an mr x NR tile (mr <= shape.rows) and its store; branches to ``done`` after."""
    intp = sa0.type
    vec = ir.VectorType(scalar, shape.width)
    vec_ptr = vec.as_pointer()
    elem_ptr = scalar.as_pointer()
    nacc = mr * shape.vectors
    bits = 32 if isinstance(scalar, ir.FloatType) else 64
    fma = (cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                          f"llvm.fma.v{shape.width}f{bits}") if shape.fused else None)
    zero = ir.Constant(vec, [0.0] * shape.width)
    splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), shape.width), [0] * shape.width)
    itemsize = ir.Constant(intp, bits // 8)
    nr = ir.Constant(intp, shape.columns)

    entry = builder.block
    header = builder.append_basic_block(f"tile{mr}.header")
    body = builder.append_basic_block(f"tile{mr}.body")
    store = builder.append_basic_block(f"tile{mr}.store")
    builder.branch(header)

    builder.position_at_end(header)
    k = builder.phi(intp, name="k")
    k.add_incoming(ir.Constant(intp, 0), entry)
    accs = []
    for a in range(nacc):
        phi = builder.phi(vec, name=f"acc{a}")
        phi.add_incoming(zero, entry)
        accs.append(phi)
    builder.cbranch(builder.icmp_signed("<", k, K), body, store)

    builder.position_at_end(body)
    row = builder.gep(panel, [builder.mul(k, nr)])
    w = [builder.load(builder.bitcast(builder.gep(row, [ir.Constant(intp, v * shape.width)]), vec_ptr),
                      align=itemsize.constant)
         for v in range(shape.vectors)]
    a_k = builder.mul(k, sa1)
    new = []
    for i in range(mr):
        offset = builder.add(builder.mul(ir.Constant(intp, i), sa0), a_k)
        a = builder.load(_byte_offset(builder, a_row0, offset, elem_ptr))
        a_vec = builder.shuffle_vector(builder.insert_element(ir.Constant(vec, ir.Undefined), a,
                                                              ir.Constant(ir.IntType(32), 0)),
                                       ir.Constant(vec, ir.Undefined), splat_mask)
        for v in range(shape.vectors):
            acc = accs[i * shape.vectors + v]
            if fma is not None:
                new.append(builder.call(fma, [a_vec, w[v], acc]))
            else:
                new.append(builder.fadd(acc, builder.fmul(a_vec, w[v])))
    k_next = builder.add(k, ir.Constant(intp, 1))
    k.add_incoming(k_next, body)
    for phi, value in zip(accs, new):
        phi.add_incoming(value, body)
    builder.branch(header)

    builder.position_at_end(store)
    pointers = []
    for i in range(mr):
        row_ptr = _byte_offset(builder, c_tile, builder.mul(ir.Constant(intp, i), sc0), elem_ptr)
        for v in range(shape.vectors):
            pointers.append(builder.bitcast(builder.gep(row_ptr, [ir.Constant(intp, v * shape.width)]),
                                            vec_ptr))
    with builder.if_else(accumulate) as (add_to_c, overwrite_c):
        with add_to_c:
            for ptr, acc in zip(pointers, accs):
                old = builder.load(ptr, align=itemsize.constant)
                builder.store(builder.fadd(old, acc), ptr, align=itemsize.constant)
        with overwrite_c:
            for ptr, acc in zip(pointers, accs):
                builder.store(acc, ptr, align=itemsize.constant)
    builder.branch(done)


def _tile_intrinsic(shapes: dict):
    """An intrinsic ``tile(A, row0, mr, Wp, panel, C, crow0, ccol0, accumulate)``:

    ``C[crow0 + i, ccol0 + j] (+)= sum_k A[row0 + i, k] * Wp[panel, k, j]`` for i < mr (1 <= mr <= MR),
    j < NR, with the tile shape of ``shapes[A.dtype]``. C's rows must be contiguous and hold NR columns
    from ccol0; A may have any strides. No bounds checks: :func:`build_matmul`'s product does them.
    """
    by_dtype = {numba.from_dtype(np.dtype(dt)): s for dt, s in shapes.items()}

    @intrinsic
    def tile(typingctx, a, row0, mr, wp, panel, c, crow0, ccol0, accumulate):
        arrays = (a, wp, c)
        if not all(isinstance(t, types.Array) for t in arrays):
            return None
        if a.ndim != 2 or c.ndim != 2 or wp.ndim != 3 or len({t.dtype for t in arrays}) != 1:
            return None
        shape = by_dtype.get(a.dtype)
        if shape is None or not isinstance(accumulate, types.Boolean):
            return None
        ints = (row0, mr, panel, crow0, ccol0)
        if not all(isinstance(t, types.Integer) for t in ints):
            return None
        sig = types.void(a, types.intp, types.intp, wp, types.intp, c, types.intp, types.intp,
                         types.boolean)

        def codegen(context, builder, signature, args):
            a_arr = context.make_array(signature.args[0])(context, builder, args[0])
            wp_arr = context.make_array(signature.args[3])(context, builder, args[3])
            c_arr = context.make_array(signature.args[5])(context, builder, args[5])
            row0_v, mr_v, panel_v, crow0_v, ccol0_v = (args[1], args[2], args[4], args[6], args[7])
            flag = args[8]
            sa0, sa1 = builder.extract_value(a_arr.strides, 0), builder.extract_value(a_arr.strides, 1)
            sc0, sc1 = builder.extract_value(c_arr.strides, 0), builder.extract_value(c_arr.strides, 1)
            K = builder.extract_value(wp_arr.shape, 1)
            NR = builder.extract_value(wp_arr.shape, 2)
            scalar = context.get_data_type(signature.args[0].dtype)
            elem_ptr = scalar.as_pointer()
            a_row0 = _byte_offset(builder, a_arr.data, builder.mul(row0_v, sa0), elem_ptr)
            panel_ptr = builder.gep(wp_arr.data, [builder.mul(panel_v, builder.mul(K, NR))])
            c_offset = builder.add(builder.mul(crow0_v, sc0), builder.mul(ccol0_v, sc1))
            c_tile = _byte_offset(builder, c_arr.data, c_offset, elem_ptr)
            if flag.type != ir.IntType(1):
                flag = builder.icmp_unsigned("!=", flag, ir.Constant(flag.type, 0))

            done = builder.append_basic_block("tile.done")
            cases = [builder.append_basic_block(f"tile{m}") for m in range(1, shape.rows + 1)]
            switch = builder.switch(mr_v, done)
            for m, block in enumerate(cases, start=1):
                switch.add_case(ir.Constant(mr_v.type, m), block)
            for m, block in enumerate(cases, start=1):
                builder.position_at_end(block)
                _emit_tile(builder, shape, m, scalar, a_row0, sa0, sa1, panel_ptr, K, c_tile, sc0, flag,
                           done)
            builder.position_at_end(done)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _constant_intrinsic(values: dict):
    """An intrinsic ``f(A) -> intp``: ``values[A.dtype]``, a compile-time constant."""
    by_dtype = {numba.from_dtype(np.dtype(dt)): v for dt, v in values.items()}

    @intrinsic
    def constant(typingctx, a):
        if not isinstance(a, types.Array) or a.dtype not in by_dtype:
            return None
        value = by_dtype[a.dtype]

        def codegen(context, builder, signature, args):
            return context.get_constant(types.intp, value)

        return types.intp(a), codegen

    return constant


# --- the product ----------------------------------------------------------------------------------------

def _matmul(A, Wp, N, out, accumulate=False):
    """out (M, N) = A (M, K) @ W, or out += A @ W when ``accumulate``; Wp (P, K, NR): W (K, N) packed by
    :func:`pack_panels` (or :func:`pack_panels_of_transpose`) with this kernel's NR. A, Wp and out share
    one dtype; out's rows must be contiguous; A may be any 2-D view. Any M >= 0 and N >= 0.

    Panels outer, row blocks inner (a panel stays in cache while every row block uses it). Full panels
    are written by the tile in place; the last, partial panel's tiles go through a scratch tile whose
    first N - j0 columns are then copied (or added) to out: the same IEEE additions either way.
    """
    M, K = A.shape
    P, Kp, NR = Wp.shape
    if NR != _tile_columns(A):
        raise ValueError("matmul_packed: Wp's panel width is not this kernel's")
    if Kp != K or P * NR < N or out.shape[0] != M or out.shape[1] != N:
        raise ValueError("matmul_packed: shapes differ (A (M, K), Wp (>= ceil(N / NR), K, NR), out (M, N))")
    if N > 0 and M > 0 and out.strides[1] != out.itemsize:
        raise ValueError("matmul_packed: out's rows must be contiguous")
    MR = _tile_rows(A)
    full = N // NR
    for p in range(full):
        for i0 in range(0, M, MR):
            _tile(A, i0, min(MR, M - i0), Wp, p, out, i0, p * NR, accumulate)
    rest = N - full * NR
    if rest > 0 and M > 0:
        scratch = np.empty((MR, NR), out.dtype)
        j0 = full * NR
        for i0 in range(0, M, MR):
            mr = min(MR, M - i0)
            _tile(A, i0, mr, Wp, full, scratch, 0, 0, False)
            for i in range(mr):
                dst = out[i0 + i]
                if accumulate:
                    for j in range(rest):
                        dst[j0 + j] += scratch[i, j]
                else:
                    for j in range(rest):
                        dst[j0 + j] = scratch[i, j]


def _kernel_globals(shapes: dict) -> dict:
    """The names :func:`_matmul` calls, bound to the intrinsics of ``shapes``."""
    return {"_tile": _tile_intrinsic(shapes),
            "_tile_rows": _constant_intrinsic({dt: s.rows for dt, s in shapes.items()}),
            "_tile_columns": _constant_intrinsic({dt: s.columns for dt, s in shapes.items()})}


def _compile(fn):
    return numba.njit(fastmath=False, nogil=True, error_model="numpy")(fn)


def build_matmul(shapes: dict):
    """``matmul(A, Wp, N, out, accumulate=False)`` (:func:`_matmul`) compiled in memory for ``shapes``
    ({np.float32: TileShape, np.float64: TileShape}): for tests of other tile shapes than the host's.

    The same code object as :data:`matmul_packed`, run with other intrinsics bound to its global names
    (a closure would do, but Numba's disk cache cannot key a closure over intrinsics: it would recompile
    in every process). Shapes whose vectors the CPU lacks still run (LLVM splits them), slowly.
    """
    bound = dict(_matmul.__globals__, **_kernel_globals(shapes))
    return _compile(pytypes.FunctionType(_matmul.__code__, bound, "matmul", _matmul.__defaults__))


HOST_TILES = host_tile_shapes()

_HOST_KERNEL = _kernel_globals(HOST_TILES)
_tile, _tile_rows, _tile_columns = (_HOST_KERNEL[k] for k in ("_tile", "_tile_rows", "_tile_columns"))
#: ``matmul_packed(A, Wp, N, out, accumulate=False)``: :func:`_matmul` with the host's tiles, cached on disk.
matmul_packed = numba.njit(fastmath=False, cache=True, nogil=True, error_model="numpy")(_matmul)
