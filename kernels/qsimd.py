"""The int8 micro-kernel: a register tile of int32 dot products, in LLVM IR.

For a tile of ``ROWS`` rows of quantized activations ``qx`` and ``COLS``
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
which the tests compare with NumPy bit for bit). The ``_fin`` tiles that
:func:`.qlinear.qlinear` runs go on in registers before that store: the
outlier channels' float32 products, then the float32 tile's epilogue (bias,
relu, residual, NoNorm; :func:`.simd.emit_epilogue`).

``dot4`` is what the CPU Numba compiles for has (:data:`VARIANT`, chosen from
:data:`.target.TARGET`):

* ``"vnni"`` (x86 AVX-512 VNNI): ``vpdpbusd`` multiplies *unsigned* by signed
  bytes and adds each lane's four products to it, one instruction. Activations
  are stored as ``q + 128`` (:data:`OFFSET`) and ``corr = 128 * sum_k W[c, k]``
  removes the offset again.
* ``"amx"`` (x86 with AMX-INT8: Xeon Sapphire Rapids and later, where Linux
  grants the process its tiles, :func:`.grants.amx_granted`): ``vnni``'s
  arithmetic, data and register tiles, plus :mod:`.amx`'s tile multiply
  (``tdpbusd``, 16 x 16 x 64 multiply-adds) for every 16 rows and 64 inputs
  the register tiles would otherwise do; its sums are finished by the same IR
  as theirs (``sums=True`` below), so the outputs are the ``vnni`` variant's,
  bit for bit. Forcing ``vnni`` on such a CPU leaves the tiles out.
* ``"sdot"`` (aarch64 with the dot-product extension, e.g. Cortex-A76 in the
  Raspberry Pi 5): ``sdot v.4s, v.16b, v.16b``, signed by signed, no offset.
* ``"maddubs"`` (x86 without VNNI: AVX-512BW, AVX2 or SSSE3; Skylake-SP/X,
  Intel cores before Ice Lake, AMD Zen 1-3): ``pmaddubsw`` multiplies
  *unsigned* by signed bytes and adds pairs into **saturating** int16, then
  ``pmaddwd`` by ones adds pairs of those into int32 and ``paddd``
  accumulates. Two products of a full-range unsigned and signed byte reach
  2 * 255 * 127 = 64 770 and would saturate, so the unsigned operand is |x|
  and the signed one w with x's sign (``psignb`` at 256 and 128 bits; a
  ``vpblendmb`` of w and -w under a lane mask at 512 bits): then two products
  reach at most 2 * 127 * 127 = 32 258 < 32 767, with the same full 8-bit
  activations as every other variant. The integer sums are exact, so the
  outputs equal the vnni variant's. The quantizer writes |q|, q and (at 512
  bits) the masks (:func:`.qlinear._quantize_row`). Rows with no negative
  input (a linear after a ReLU: four of MobileBERT's ten linears per layer)
  need no sign step, since |x| is x: the quantizer reports them and such rows
  run on ``qtile_rows_nonneg``, three instructions per vector like
  ``maddubs7`` but with the full 8-bit activations, and the same sums.
* ``"maddubs7"`` (same CPUs, only when forced): 7-bit activations instead, q
  in [-63, 63] stored as ``q + 64``, which ``pmaddubsw`` reads unsigned as
  they are: no sign step, one instruction fewer per vector, about 1.3x the
  speed of ``maddubs`` at twice its activation rounding error (the int8 bench
  compares them). The weights stay 8-bit, so the same int8 checkpoint serves
  every variant.
* ``"smull"`` (aarch64 without the dot-product extension: Cortex-A53 and A72,
  Raspberry Pi 3, Zero 2, 4): the gemmlowp/ruy scheme on the same panels.
  Two groups of 4 inputs are taken per step: ``smull`` multiplies the low 8
  bytes of x and w into int16 (the low two columns), ``smlal`` adds the next
  group's products to them (2 * 127 * 127 = 32 258 fits: no saturation with
  activations and weights in [-127, 127]), ``smull2``/``smlal2`` do the same
  for the high 8 bytes, and ``sadalp`` adds adjacent int16 pairs into two
  int32 accumulators per vector, which hold each column's sum in two lanes
  until one pairwise add at the end of the tile.
* ``"generic"`` (any other CPU, or forced): the same arithmetic as plain vector
  IR (widen, multiply, add the four products of each lane), which LLVM lowers
  to what the target has. Correct everywhere, slow everywhere.

The choice is made for the CPU Numba compiles for (:mod:`.target`: the host,
or the CPU that ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` name): an
instruction the target lacks fails LLVM's instruction selection, which aborts
the process. ``MBENGINE_INT8_KERNEL=<variant>`` forces one (for tests and for
comparing); forcing a variant the target cannot run is an error. The caller
guarantees the tile is in bounds.
"""

import os

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .grants import amx_granted
from .simd import COLS, LANES, VECS, emit_epilogue, splat  # noqa: F401 (COLS re-exported: the int8 tile has the float32 tile's columns)
from .target import TARGET

VARIANTS = ("amx", "vnni", "sdot", "maddubs", "maddubs7", "smull", "generic")


def _detected() -> str:
    """The fastest variant the compile target can run."""
    if LANES == 16 and TARGET.avx512vnni and TARGET.avx512bw:
        return "amx" if TARGET.amx and amx_granted() else "vnni"
    if TARGET.arch == "aarch64" and TARGET.neon:
        return "sdot" if TARGET.dotprod and LANES == 4 else "smull"
    if TARGET.arch == "x86_64" and (
        (LANES == 16 and TARGET.avx512bw) or (LANES == 8 and TARGET.avx2) or (LANES == 4 and TARGET.ssse3)
    ):
        return "maddubs"
    return "generic"


def _runnable() -> set[str]:
    """Every variant the compile target can run: the detected one, the slower ones it implies, generic."""
    detected = _detected()
    x86 = {"maddubs", "maddubs7"} if detected in ("amx", "vnni", "maddubs") else set()
    vnni = {"vnni"} if detected == "amx" else set()
    return {"generic", detected} | x86 | vnni


def _variant() -> str:
    forced = os.environ.get("MBENGINE_INT8_KERNEL", "").strip().lower()
    if forced and forced not in VARIANTS:
        raise ValueError(f"MBENGINE_INT8_KERNEL={forced!r}: expected one of {', '.join(VARIANTS)}")
    if forced and forced not in _runnable():
        raise ValueError(
            f"MBENGINE_INT8_KERNEL={forced}: the CPU Numba compiles for ({TARGET.describe()}) "
            f"cannot run it (it can run: {', '.join(sorted(_runnable()))}; "
            f"NUMBA_CPU_NAME / NUMBA_CPU_FEATURES count)"
        )
    return forced or _detected()


VARIANT = _variant()
# Numba's cache is keyed by the CPU, not by this choice: kernels built on a
# forced variant are not cached, so a cache never serves another variant's code.
# On an AMX CPU a process Linux refuses the tiles detects vnni: it does not cache
# either, or a process granted them could load its code, and it theirs (SIGILL).
CACHE = VARIANT == _detected() and not (TARGET.amx and VARIANT != "amx")
OFFSET = {"amx": 128, "vnni": 128, "maddubs7": 64}.get(VARIANT, 0)  # added to every quantized activation
XMAX = 63 if VARIANT == "maddubs7" else 127  # quantized activations lie in [-XMAX, XMAX]
# the tile's rows: ROWS x VECS accumulators (two per vector for smull) + weights + broadcasts in registers
ROWS = 4 if VARIANT == "smull" else 8 if TARGET.registers >= 32 else 6
GROUPS = 2 if VARIANT == "smull" else 1  # groups of 4 inputs per step of the k loop
# maddubs reads two planes per row of the activation scratch: |q| (the first 4 * K4 bytes), then the
# signed bytes q; with 16 lanes it reads a third instead, one 64-bit lane mask per group of 4 inputs
SIGN_BYTES = (3 if LANES == 16 else 1) if VARIANT == "maddubs" else 0  # scratch bytes per input for the signs


def _call(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _half(builder, v, high):
    """The low or high half of a vector."""
    n = v.type.count // 2
    return builder.shuffle_vector(
        v,
        ir.Constant(v.type, ir.Undefined),
        ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(high * n, high * n + n))),
    )


def _zero_accumulators(lanes):
    """The zero accumulators of one (row, vector): one <lanes x i32>, or two for smull (module doc)."""
    zero = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    return [zero, zero] if VARIANT == "smull" else [zero]


def _x_operand(builder, data, row, plane, g, lanes, signed=True):
    """What group ``g`` of the quantized row starting at byte ``row`` gives the multiply-adds: its 4 bytes in
    every lane (<4*lanes x i8>), and for maddubs also the signs (from the second plane, ``plane`` bytes on)
    unless the rows are known to hold no negative input (``signed`` False: |q| is q)."""
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    bytes_v = ir.VectorType(i8, 4 * lanes)

    def splat_word(offset):
        word = builder.load(builder.bitcast(builder.gep(data, [offset]), i32.as_pointer()), align=1)
        return builder.bitcast(splat(builder, word, ir.VectorType(i32, lanes)), bytes_v)

    at = builder.add(row, builder.mul(g, ir.Constant(i64, 4)))
    xb = splat_word(at)
    if VARIANT != "maddubs" or not signed:
        return xb
    if lanes == 16:  # the lane mask of the negative inputs, precomputed by the quantizer
        at_mask = builder.add(builder.add(row, builder.add(plane, plane)), builder.mul(g, ir.Constant(i64, 8)))
        bits = builder.load(builder.bitcast(builder.gep(data, [at_mask]), i64.as_pointer()), align=1)
        return xb, builder.bitcast(bits, ir.VectorType(ir.IntType(1), 64))
    return xb, splat_word(builder.add(at, plane))


def _step(builder, acc, xs, ws, lanes, signed=True):
    """One step of the k loop for one (row, vector): ``xs``/``ws`` hold GROUPS (or fewer, at an odd
    tail) activation operands (:func:`_x_operand`) and <4*lanes x i8> weight vectors; returns the new
    accumulators. ``signed`` False (maddubs): no input of these rows is negative, so |x| is x and the
    weights need no sign step (module doc)."""
    i16, i32 = ir.IntType(16), ir.IntType(32)
    i32v = ir.VectorType(i32, lanes)
    if VARIANT in ("vnni", "amx"):  # (amx: its register tiles, for the rows and inputs no AMX tile covers)
        # LLVM 21 changed the byte operands' declared type; older versions take <16 x i32>
        byte_ty = xs[0].type if llvm_binding.llvm_version_info >= (21,) else i32v
        return [
            _call(
                builder,
                "llvm.x86.avx512.vpdpbusd.512",
                i32v,
                [acc[0], builder.bitcast(xs[0], byte_ty), builder.bitcast(ws[0], byte_ty)],
            )
        ]
    if VARIANT == "sdot":
        return [_call(builder, "llvm.aarch64.neon.sdot.v4i32.v16i8", i32v, [acc[0], ws[0], xs[0]])]
    if VARIANT in ("maddubs", "maddubs7"):  # |x| (unsigned) times w * sign(x), or x + 64 times w (module doc)
        i16v = ir.VectorType(i16, 2 * lanes)
        madd_ubsw, madd_wd = {
            16: ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512"),
            8: ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"),
            4: ("llvm.x86.ssse3.pmadd.ub.sw.128", "llvm.x86.sse2.pmadd.wd"),
        }[lanes]
        if VARIANT == "maddubs7" or not signed:  # x + 64 in 1..127, or x >= 0: unsigned as it is
            ax, signed_w = xs[0], ws[0]
        elif lanes == 16:  # no vpsignb at 512 bits: a masked select of -w (vpblendmb, off the multiply port)
            (ax, sign), w = xs[0], ws[0]
            signed_w = builder.select(sign, builder.sub(ir.Constant(w.type, [0] * (4 * lanes)), w), w)
        else:  # psignb: w where x > 0, -w where x < 0, 0 where x == 0
            (ax, sign), w = xs[0], ws[0]
            signed_w = _call(
                builder, {8: "llvm.x86.avx2.psign.b", 4: "llvm.x86.ssse3.psign.b.128"}[lanes], w.type, [w, sign]
            )
        pairs = _call(builder, madd_ubsw, i16v, [ax, signed_w])  # unsigned operand first
        quads = _call(builder, madd_wd, i32v, [pairs, ir.Constant(i16v, [1] * (2 * lanes))])
        return [builder.add(acc[0], quads)]
    if VARIANT == "smull":  # lanes == 4: 16 bytes = 4 columns x 4 inputs
        i16x8 = ir.VectorType(i16, 8)
        out = []
        for high in (0, 1):  # columns 0-1 (low 8 bytes), columns 2-3 (high 8 bytes)
            prod = None
            for x, w in zip(xs, ws):
                p = _call(
                    builder, "llvm.aarch64.neon.smull.v8i16", i16x8, [_half(builder, x, high), _half(builder, w, high)]
                )
                prod = p if prod is None else builder.add(prod, p)  # smlal / smlal2
            pairs = _call(builder, "llvm.aarch64.neon.saddlp.v4i32.v8i16", i32v, [prod])
            out.append(builder.add(acc[high], pairs))  # sadalp
        return out
    wide = ir.VectorType(i32, 4 * lanes)
    prod = builder.mul(builder.sext(xs[0], wide), builder.sext(ws[0], wide))
    a = acc[0]
    for j in range(4):
        part = builder.shuffle_vector(
            prod,
            ir.Constant(wide, ir.Undefined),
            ir.Constant(ir.VectorType(i32, lanes), [4 * c + j for c in range(lanes)]),
        )
        a = builder.add(a, part)
    return [a]


def _finish(builder, acc, lanes):
    """The tile's <lanes x i32> sums from one (row, vector)'s accumulators."""
    if len(acc) == 1:
        return acc[0]
    i32 = ir.IntType(32)
    both = builder.shuffle_vector(acc[0], acc[1], ir.Constant(ir.VectorType(i32, 2 * lanes), list(range(2 * lanes))))
    undef = ir.Constant(both.type, ir.Undefined)
    even, odd = (
        builder.shuffle_vector(both, undef, ir.Constant(ir.VectorType(i32, lanes), [2 * c + j for c in range(lanes)]))
        for j in (0, 1)
    )
    return builder.add(even, odd)  # addp


def _make_qtile(rows: int, vecs: int, lanes: int, signed: bool = True, epilogue: bool = False, sums: bool = False):
    """An intrinsic ``qtile(qx, xr, wq, out, orow, oc, K4, sx, sw, corr, n0)`` (see the module doc); with
    ``signed`` False, for rows with no negative input (maddubs skips the sign step).

    With ``sums``, the tile's int32 sums are not computed but read: ``qx`` is then an int32 array of
    sums (the AMX tiles', :mod:`.amx`), ``K4`` the row of it that holds row ``xr``'s, and ``wq`` is not
    read; the rest (dequantize, epilogue, store) is the same IR, so a row finishes to the same bits.

    With ``epilogue``, the float tile is finished in registers before it is stored, and the intrinsic takes
    ``(..., n0, x, xc, oidx, ow, fuse, b, relu, res, rc, nonorm, nw, nb)``: first the outlier channels,
    ``y += x[xr + r, xc + oidx[j]] * ow[j, n0 + c]`` for each j in order, then, if ``fuse`` != 0, the
    float32 kernel's epilogue (:func:`.simd.emit_epilogue`: bias, relu, residual ``res[orow + r, rc +
    c]``, NoNorm; columns ``n0 + c`` of b, nw, nb)."""

    def typed(qx, xr, wq, out, orow, oc, K4, sx, sw, corr, n0, finish):
        """(signature, codegen) for these argument types, or None (finish: the epilogue's argument types)."""
        qx_dtype = types.int32 if sums else types.uint8 if OFFSET or SIGN_BYTES else types.int8
        if not (isinstance(qx, types.Array) and qx.ndim == 2 and qx.layout == "C" and qx.dtype == qx_dtype):
            return None
        if not (isinstance(wq, types.Array) and wq.ndim == 2 and wq.layout == "C" and wq.dtype == types.int8):
            return None
        if not (
            isinstance(out, types.Array)
            and out.ndim == 2
            and out.layout == "C"
            and out.dtype in (types.float32, types.int32)
        ):
            return None
        for a, dt in ((sx, types.float32), (sw, types.float32), (corr, types.int32)):
            if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == dt):
                return None
        for i in (xr, orow, oc, K4, n0):
            if not isinstance(i, types.Integer):
                return None
        exact = out.dtype == types.int32
        ip = types.intp
        sig = types.void(qx, ip, wq, out, ip, ip, ip, sx, sw, corr, ip)
        if epilogue:
            if exact or len(finish) != 12:
                return None
            x, _, oidx, ow, _, b, _, res, _, _, nw, nb = finish
            f32_2d = (x, ow, res)
            if not all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.float32 for a in f32_2d):
                return None
            if not all(a.ndim == 2 for a in f32_2d) or not all(
                isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == types.float32
                for a in (b, nw, nb)
            ):
                return None
            if not (isinstance(oidx, types.Array) and oidx.ndim == 1 and oidx.dtype == types.int64):
                return None
            if not all(isinstance(finish[i], types.Integer) for i in (1, 4, 6, 8, 9)):
                return None
            sig = types.void(*sig.args, x, ip, oidx, ow, ip, b, ip, res, ip, ip, nw, nb)

        def codegen(context, builder, signature, args):
            qx_v, xr_v, wq_v, out_v, orow_v, oc_v, k4_v, sx_v, sw_v, corr_v, n0_v = args[:11]
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

            def const(v):
                return ir.Constant(i64, v)

            acc = [
                [[cgutils.alloca_once_value(builder, z) for z in _zero_accumulators(lanes)] for _ in range(vecs)]
                for _ in range(rows)
            ]
            x_row = [builder.mul(builder.add(xr_v, const(r)), x_cols) for r in range(rows)]
            plane = builder.mul(k4_v, const(4))  # where the sign plane of a row starts (maddubs)

            def step(g0, groups):
                """Groups g0 .. g0 + groups - 1 of every (row, vector) into the accumulators."""
                w = [
                    [
                        builder.load(
                            builder.bitcast(
                                builder.gep(
                                    W.data,
                                    [builder.add(builder.mul(builder.add(g0, const(j)), w_cols), const(v * 4 * lanes))],
                                ),
                                bytes_v.as_pointer(),
                            ),
                            align=1,
                        )
                        for j in range(groups)
                    ]
                    for v in range(vecs)
                ]
                for r in range(rows):
                    xb = []
                    for j in range(groups):
                        g = builder.add(g0, const(j))
                        xb.append(_x_operand(builder, X.data, x_row[r], plane, g, lanes, signed))
                    for v in range(vecs):
                        new = _step(builder, [builder.load(a) for a in acc[r][v]], xb, w[v], lanes, signed)
                        for a, value in zip(acc[r][v], new):
                            builder.store(value, a)

            if sums:  # read: row K4 + r of the sums array
                tile_sums = [
                    [
                        builder.load(
                            builder.bitcast(
                                builder.gep(
                                    X.data,
                                    [builder.add(builder.mul(builder.add(k4_v, const(r)), x_cols), const(v * lanes))],
                                ),
                                i32v.as_pointer(),
                            ),
                            align=4,
                        )
                        for v in range(vecs)
                    ]
                    for r in range(rows)
                ]
            else:
                whole = builder.udiv(k4_v, const(GROUPS)) if GROUPS > 1 else k4_v
                with cgutils.for_range(builder, whole) as loop:
                    step(builder.mul(loop.index, const(GROUPS)), GROUPS)
                if GROUPS > 1:  # an odd last group (K4 is even at every MobileBERT width)
                    with builder.if_then(builder.icmp_unsigned("!=", builder.urem(k4_v, const(GROUPS)), const(0))):
                        step(builder.mul(whole, const(GROUPS)), 1)
                tile_sums = [
                    [_finish(builder, [builder.load(a) for a in acc[r][v]], lanes) for v in range(vecs)]
                    for r in range(rows)
                ]
            values = [[None] * vecs for _ in range(rows)]
            for v in range(vecs):
                col = builder.add(n0_v, const(v * lanes))
                corr = builder.load(builder.bitcast(builder.gep(C.data, [col]), i32v.as_pointer()), align=4)
                if not exact:
                    sw = builder.load(builder.bitcast(builder.gep(SW.data, [col]), f32v.as_pointer()), align=4)
                for r in range(rows):
                    value = builder.sub(tile_sums[r][v], corr)
                    if not exact:
                        sx = splat(builder, builder.load(builder.gep(SX.data, [builder.add(xr_v, const(r))])), f32v)
                        value = builder.fmul(builder.fmul(builder.sitofp(value, f32v), sw), sx)
                    values[r][v] = value
            if epilogue:
                values = _finish_tile(context, builder, signature, args, values, lanes)
            for r in range(rows):
                for v in range(vecs):
                    value = values[r][v]
                    o_at = builder.add(
                        builder.mul(builder.add(orow_v, const(r)), o_cols), builder.add(oc_v, const(v * lanes))
                    )
                    builder.store(value, builder.bitcast(builder.gep(O.data, [o_at]), value.type.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    if not epilogue:

        @intrinsic
        def qtile(typingctx, qx, xr, wq, out, orow, oc, K4, sx, sw, corr, n0):
            return typed(qx, xr, wq, out, orow, oc, K4, sx, sw, corr, n0, ())

        return qtile

    @intrinsic
    def qtile_finished(
        typingctx,
        qx,
        xr,
        wq,
        out,
        orow,
        oc,
        K4,
        sx,
        sw,
        corr,
        n0,
        x,
        xc,
        oidx,
        ow,
        fuse,
        b,
        relu,
        res,
        rc,
        nonorm,
        nw,
        nb,
    ):
        finish = (x, xc, oidx, ow, fuse, b, relu, res, rc, nonorm, nw, nb)
        return typed(qx, xr, wq, out, orow, oc, K4, sx, sw, corr, n0, finish)

    return qtile_finished


def _finish_tile(context, builder, signature, args, values, lanes):
    """IR: the epilogue of an ``epilogue`` qtile (:func:`_make_qtile`) on its dequantized float tile
    ``values`` ([row][vec] <lanes x float>); returns the finished values."""
    i64 = ir.IntType(64)
    f32v = ir.VectorType(ir.FloatType(), lanes)
    xr_v, orow_v, n0_v = args[1], args[4], args[10]
    x_v, xc_v, oidx_v, ow_v, fuse_v, b_v, relu_v, res_v, rc_v, nonorm_v, nw_v, nb_v = args[11:]
    arg_types = signature.args[11:]
    X, OIDX, OW, B, R, NW, NB = (
        context.make_array(arg_types[i])(context, builder, a)
        for i, a in ((0, x_v), (2, oidx_v), (3, ow_v), (5, b_v), (7, res_v), (10, nw_v), (11, nb_v))
    )
    x_cols = builder.extract_value(X.shape, 1)
    ow_cols = builder.extract_value(OW.shape, 1)
    outliers = builder.extract_value(OIDX.shape, 0)
    acc = [[cgutils.alloca_once_value(builder, value) for value in row] for row in values]
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(f32v, [f32v, f32v, f32v]), f"llvm.fmuladd.v{lanes}f32"
    )
    with cgutils.for_range(builder, outliers) as loop:  # J is a few channels, or none
        j = loop.index
        channel = builder.add(xc_v, builder.load(builder.gep(OIDX.data, [j])))
        w = [
            builder.load(
                builder.bitcast(
                    builder.gep(
                        OW.data, [builder.add(builder.mul(j, ow_cols), builder.add(n0_v, ir.Constant(i64, v * lanes)))]
                    ),
                    f32v.as_pointer(),
                ),
                align=4,
            )
            for v in range(len(acc[0]))
        ]
        for r, row in enumerate(acc):
            at = builder.add(builder.mul(builder.add(xr_v, ir.Constant(i64, r)), x_cols), channel)
            xo = splat(builder, builder.load(builder.gep(X.data, [at])), f32v)
            for v, a in enumerate(row):
                builder.store(builder.call(fma, [xo, w[v], builder.load(a)]), a)
    with builder.if_then(builder.icmp_signed("!=", fuse_v, ir.Constant(i64, 0))):
        emit_epilogue(builder, acc, lanes, orow_v, n0_v, (B, R, NW, NB), relu_v, rc_v, nonorm_v)
    return [[builder.load(a) for a in row] for row in acc]


qtile_rows = _make_qtile(ROWS, VECS, LANES)  # the main tile: ROWS x COLS
qtile_row = _make_qtile(1, VECS, LANES)  # leftover rows, one at a time
# the same for rows with no negative input (after a ReLU): only maddubs has a sign step to leave out
qtile_rows_nonneg, qtile_row_nonneg = (
    (_make_qtile(ROWS, VECS, LANES, signed=False), _make_qtile(1, VECS, LANES, signed=False))
    if VARIANT == "maddubs"
    else (qtile_rows, qtile_row)
)
# the same tiles finishing their outputs (outlier channels, bias, relu, residual, NoNorm) before the store
qtile_rows_fin = _make_qtile(ROWS, VECS, LANES, epilogue=True)
qtile_row_fin = _make_qtile(1, VECS, LANES, epilogue=True)
# AMX's sums (.amx) finished by the same IR, ROWS rows at a time
qtile_rows_sums_fin = _make_qtile(ROWS, VECS, LANES, epilogue=True, sums=True)
qtile_rows_nonneg_fin, qtile_row_nonneg_fin = (
    (
        _make_qtile(ROWS, VECS, LANES, signed=False, epilogue=True),
        _make_qtile(1, VECS, LANES, signed=False, epilogue=True),
    )
    if VARIANT == "maddubs"
    else (qtile_rows_fin, qtile_row_fin)
)


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


# v + ROUNDER, for |v| < 2**22, is v rounded to an integer (ties to even, as rint: between 2**23 and
# 2**24 floats are the integers, and ROUNDER is even) plus 1.5 * 2**23 + OFFSET, and that float's low
# byte is then rint(v) + OFFSET (its mantissa is 2**22 + OFFSET + rint(v), and 2**22 is a multiple of 256)
ROUNDER = 1.5 * 2**23 + OFFSET


@intrinsic
def quantize_values(typingctx, row, q, n, inv, clamp):
    """q[k] = min(max(rint(row[k] * inv), -XMAX), XMAX) + OFFSET for k < n, as bytes, a vector of float32
    lanes at a time (then one at a time for the rest): :func:`.qlinear._quantize_row`'s rounding loop.

    Computed as the low byte of ``min(max(row[k] * inv, -XMAX), XMAX) + ROUNDER`` (clamped first, then
    rounded, which gives the same integer; a NaN becomes -XMAX either way): a multiply, two
    comparisons, an add and a narrowing per vector, where rint, the clamps, a conversion to integers
    and the offset's add were seven operations. With ``clamp`` False the clamps are left out, for a
    caller that knows every |row[k] * inv| is at most XMAX + 1/2 and none is NaN (a row scaled by its
    own finite maximum): the same bytes then. No fast-math flags (the multiply and the add must round
    separately, and the add must not be folded away), so the bytes do not depend on the target; and
    LLVM, left to vectorise the loop, used 256-bit vectors on AVX-512 CPUs it tunes for narrower ones
    (Intel's). ``row``: float32, ``q``: int8 or uint8, both 1-D and contiguous; ``inv`` float32."""
    if not (isinstance(row, types.Array) and row.ndim == 1 and row.dtype == types.float32 and row.layout == "C"):
        return None
    if not (isinstance(q, types.Array) and q.ndim == 1 and q.dtype in (types.int8, types.uint8)):
        return None
    if q.layout != "C" or not isinstance(n, types.Integer) or inv != types.float32:
        return None
    if not isinstance(clamp, types.Boolean):
        return None

    def codegen(context, builder, signature, args):
        row_v, q_v, n_v, inv_v, clamp_v = args
        f32, i8, i32, i64 = ir.FloatType(), ir.IntType(8), ir.IntType(32), ir.IntType(64)
        R = context.make_array(signature.args[0])(context, builder, row_v)
        Q = context.make_array(signature.args[1])(context, builder, q_v)
        n_v = context.cast(builder, n_v, signature.args[2], types.int64)

        def steps(width, start, count, clamped):
            """``count`` steps of ``width`` values from value ``start`` on."""
            fv = ir.VectorType(f32, width) if width > 1 else f32
            iv = ir.VectorType(i32, width) if width > 1 else i32
            bv = ir.VectorType(i8, width) if width > 1 else i8
            suffix = f"v{width}f32" if width > 1 else "f32"

            def const(value):
                return ir.Constant(fv, [value] * width) if width > 1 else ir.Constant(fv, value)

            scale = splat(builder, inv_v, fv) if width > 1 else inv_v
            with cgutils.for_range(builder, count) as loop:
                at = builder.add(start, builder.mul(loop.index, ir.Constant(i64, width)))
                x = builder.load(builder.bitcast(builder.gep(R.data, [at]), fv.as_pointer()), align=4)
                y = builder.fmul(x, scale)
                if clamped:
                    y = _call(builder, f"llvm.maxnum.{suffix}", fv, [y, const(-float(XMAX))])
                    y = _call(builder, f"llvm.minnum.{suffix}", fv, [y, const(float(XMAX))])
                b = builder.trunc(builder.bitcast(builder.fadd(y, const(ROUNDER)), iv), bv)
                builder.store(b, builder.bitcast(builder.gep(Q.data, [at]), bv.as_pointer()), align=1)

        whole = builder.udiv(n_v, ir.Constant(i64, LANES))
        done = builder.mul(whole, ir.Constant(i64, LANES))
        with builder.if_else(cgutils.as_bool_bit(builder, clamp_v)) as (clamped, unclamped):
            for block, flag in ((clamped, True), (unclamped, False)):
                with block:
                    steps(LANES, ir.Constant(i64, 0), whole, flag)
                    steps(1, done, builder.sub(n_v, done), flag)
        return context.get_dummy_value()

    return types.void(row, q, n, inv, clamp), codegen
