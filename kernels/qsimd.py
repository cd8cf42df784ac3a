"""The int8 micro-kernel: a register tile of int32 dot products, in LLVM IR.

For a tile of ``rows`` rows of quantized activations ``qx`` and ``COLS``
columns of one weight panel ``wq`` (int8, packed by :func:`.qlinear.pack`:
``wq[g, 4 * c + j] = W[c, 4 * g + j]``),

    for g in range(K4):                             (4 inputs per step)
        w_v   = wq[g, v*4L : (v+1)*4L]              (VECS loads of 4L bytes)
        x_r   = broadcast(qx[xr + r, 4g : 4g + 4])  (4 bytes, as one int32)
        acc[r][v] += dot4(x_r, w_v)                 (L int32 lanes: lane c gets
                                                     sum_j x[4g+j] * W[c, 4g+j])

and the tile is then dequantized on its way out::

    out[orow + r, oc + c] = (acc[r][c] - corr[n0 + c]) * sx[xr + r] * sw[n0 + c]

(an int32 ``out`` receives ``acc - corr`` unscaled: the exact integer result,
which the tests compare with NumPy bit for bit).

``dot4`` is one instruction where the CPU has one (:data:`VARIANT`):

* ``"vnni"`` (x86 AVX-512 VNNI): ``vpdpbusd`` multiplies *unsigned* by signed
  bytes, so activations are stored as ``q + 128`` (:data:`OFFSET`) and
  ``corr = 128 * sum_k W[c, k]`` removes the offset again;
* ``"sdot"`` (aarch64 with the dot-product extension, e.g. Cortex-A76 in the
  Raspberry Pi 5): ``sdot v.4s, v.16b, v.16b``, signed by signed, no offset;
* ``"generic"`` (anything else, e.g. Cortex-A72 in the Pi 4, or x86 without
  VNNI): the same arithmetic as plain vector IR (widen, multiply, add the
  four products of each lane), which LLVM lowers to what the target has.

The choice is made for the CPU Numba compiles for: the host, or with
``NUMBA_CPU_NAME`` set (e.g. building a cache for another machine) only what
``NUMBA_CPU_FEATURES`` lists (``+dotprod``, ``+avx512vnni``): compiling ``sdot``
for a CPU without it aborts the process inside LLVM.
``MBENGINE_INT8_KERNEL=generic`` forces the portable variant (for tests and
for comparing); forcing a dot-product variant the target lacks is an error. The caller guarantees the tile is in bounds.
"""

import os

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import COLS, LANES, ROWS, VECS, splat  # the int8 tile has the float32 tile's geometry


def _target_features() -> dict[str, bool]:
    """The features of the CPU Numba compiles for: the host's, unless NUMBA_CPU_NAME names another.

    For a named CPU only NUMBA_CPU_FEATURES says what it has (a CPU name alone
    tells us nothing here); the dot-product variants need the feature, or LLVM
    aborts the process while compiling (seen for sdot on cortex-a72).
    """
    name = os.environ.get("NUMBA_CPU_NAME", "").strip()
    listed = os.environ.get("NUMBA_CPU_FEATURES", "").strip()
    if name and name != "host" or listed:
        return {f[1:]: f[0] == "+" for f in listed.replace(" ", "").split(",") if f[:1] in "+-" and len(f) > 1}
    return llvm_binding.get_host_cpu_features()


def _detected() -> str:
    features = _target_features()
    if LANES == 16 and features.get("avx512vnni") and features.get("avx512bw"):
        return "vnni"
    if LANES == 4 and features.get("dotprod") and llvm_binding.get_process_triple().startswith(("aarch64", "arm64")):
        return "sdot"
    return "generic"


def _variant() -> str:
    forced = os.environ.get("MBENGINE_INT8_KERNEL", "").strip().lower()
    if forced and forced not in ("generic", "vnni", "sdot"):
        raise ValueError(f"MBENGINE_INT8_KERNEL={forced!r}: expected generic, vnni or sdot")
    if forced and forced != "generic" and forced != _detected():
        raise ValueError(f"MBENGINE_INT8_KERNEL={forced}: the CPU Numba compiles for does not have that "
                         f"instruction (detected: {_detected()}; NUMBA_CPU_NAME / NUMBA_CPU_FEATURES count)")
    return forced or _detected()


VARIANT = _variant()
# Numba's cache is keyed by the CPU, not by this choice: kernels built on a
# forced variant are not cached, so a cache never serves another variant's code.
CACHE = VARIANT == _detected()
OFFSET = 128 if VARIANT == "vnni" else 0  # added to every quantized activation


def _dot4(builder, acc, xb, w, lanes):
    """acc + per-lane sums of four byte products (``xb`` and ``w``: <4*lanes x i8>)."""
    i32v = ir.VectorType(ir.IntType(32), lanes)
    bytes_v = ir.VectorType(ir.IntType(8), 4 * lanes)
    if VARIANT == "vnni":
        # LLVM 21 changed the byte operands' declared type; older versions take <16 x i32>
        byte_ty = bytes_v if llvm_binding.llvm_version_info >= (21,) else i32v
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32v, [i32v, byte_ty, byte_ty]),
                                            "llvm.x86.avx512.vpdpbusd.512")
        return builder.call(fn, [acc, builder.bitcast(xb, byte_ty), builder.bitcast(w, byte_ty)])
    if VARIANT == "sdot":
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32v, [i32v, bytes_v, bytes_v]),
                                            "llvm.aarch64.neon.sdot.v4i32.v16i8")
        return builder.call(fn, [acc, w, xb])
    wide = ir.VectorType(ir.IntType(32), 4 * lanes)
    prod = builder.mul(builder.sext(xb, wide), builder.sext(w, wide))
    for j in range(4):
        part = builder.shuffle_vector(prod, ir.Constant(wide, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                                  [4 * c + j for c in range(lanes)]))
        acc = builder.add(acc, part)
    return acc


def _make_qtile(rows: int, vecs: int, lanes: int):
    """An intrinsic ``qtile(qx, xr, wq, out, orow, oc, K4, sx, sw, corr, n0)`` (see the module doc)."""

    @intrinsic
    def qtile(typingctx, qx, xr, wq, out, orow, oc, K4, sx, sw, corr, n0):
        if not (isinstance(qx, types.Array) and qx.ndim == 2 and qx.layout == "C"
                and qx.dtype in (types.int8, types.uint8)):
            return None
        if not (isinstance(wq, types.Array) and wq.ndim == 2 and wq.layout == "C" and wq.dtype == types.int8):
            return None
        if not (isinstance(out, types.Array) and out.ndim == 2 and out.layout == "C"
                and out.dtype in (types.float32, types.int32)):
            return None
        for a, dt in ((sx, types.float32), (sw, types.float32), (corr, types.int32)):
            if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == dt):
                return None
        for i in (xr, orow, oc, K4, n0):
            if not isinstance(i, types.Integer):
                return None
        exact = out.dtype == types.int32
        sig = types.void(qx, types.intp, wq, out, types.intp, types.intp, types.intp, sx, sw, corr, types.intp)

        def codegen(context, builder, signature, args):
            qx_v, xr_v, wq_v, out_v, orow_v, oc_v, k4_v, sx_v, sw_v, corr_v, n0_v = args
            i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
            f32 = ir.FloatType()
            i32v = ir.VectorType(i32, lanes)
            f32v = ir.VectorType(f32, lanes)
            bytes_v = ir.VectorType(i8, 4 * lanes)
            X = context.make_array(signature.args[0])(context, builder, qx_v)
            W = context.make_array(signature.args[2])(context, builder, wq_v)
            O = context.make_array(signature.args[3])(context, builder, out_v)
            SX = context.make_array(signature.args[7])(context, builder, sx_v)
            SW = context.make_array(signature.args[8])(context, builder, sw_v)
            C = context.make_array(signature.args[9])(context, builder, corr_v)
            x_cols = builder.extract_value(X.shape, 1)
            w_cols = builder.extract_value(W.shape, 1)
            o_cols = builder.extract_value(O.shape, 1)
            zero_i32 = ir.Constant(i32v, [0] * lanes)

            def const(v):
                return ir.Constant(i64, v)

            acc = [[cgutils.alloca_once_value(builder, zero_i32) for _ in range(vecs)] for _ in range(rows)]
            x_row = [builder.mul(builder.add(xr_v, const(r)), x_cols) for r in range(rows)]
            with cgutils.for_range(builder, k4_v) as loop:
                g = loop.index
                w_at = builder.mul(g, w_cols)
                w = [builder.load(builder.bitcast(builder.gep(W.data, [builder.add(w_at, const(v * 4 * lanes))]),
                                                  bytes_v.as_pointer()), align=1) for v in range(vecs)]
                for r in range(rows):
                    ptr = builder.bitcast(builder.gep(X.data, [builder.add(x_row[r], builder.mul(g, const(4)))]),
                                          i32.as_pointer())
                    xb = builder.bitcast(splat(builder, builder.load(ptr, align=1), i32v), bytes_v)
                    for v in range(vecs):
                        builder.store(_dot4(builder, builder.load(acc[r][v]), xb, w[v], lanes), acc[r][v])
            for v in range(vecs):
                col = builder.add(n0_v, const(v * lanes))
                corr = builder.load(builder.bitcast(builder.gep(C.data, [col]), i32v.as_pointer()), align=4)
                if not exact:
                    sw = builder.load(builder.bitcast(builder.gep(SW.data, [col]), f32v.as_pointer()), align=4)
                for r in range(rows):
                    value = builder.sub(builder.load(acc[r][v]), corr)
                    if not exact:
                        sx = splat(builder, builder.load(builder.gep(SX.data, [builder.add(xr_v, const(r))])), f32v)
                        value = builder.fmul(builder.fmul(builder.sitofp(value, f32v), sw), sx)
                    o_at = builder.add(builder.mul(builder.add(orow_v, const(r)), o_cols),
                                       builder.add(oc_v, const(v * lanes)))
                    builder.store(value, builder.bitcast(builder.gep(O.data, [o_at]), value.type.as_pointer()),
                                  align=4)
            return context.get_dummy_value()

        return sig, codegen

    return qtile


qtile_rows = _make_qtile(ROWS, VECS, LANES)  # the main tile: ROWS x COLS
qtile_row = _make_qtile(1, VECS, LANES)  # leftover rows, one at a time


@intrinsic
def float_from_bits(typingctx, bits):
    """The float32 whose IEEE bit pattern is the low 32 bits of the integer ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if v.type.width != 32:
            v = builder.trunc(v, ir.IntType(32)) if v.type.width > 32 else builder.zext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(bits), codegen
