"""A register-tiled matmul micro-kernel written as LLVM vector IR.

Numba's loop vectoriser turns a dot-product loop into vector code, but it
keeps one accumulator per output and pays a horizontal reduction for each;
an accumulator tile held in an array stays in memory. Here the inner product
is spelled out in LLVM IR with explicit vectors, as a BLAS micro-kernel is:
for a tile of ``ROWS`` rows of x and ``VECS * LANES`` columns of the packed
(K, N) weight,

    for k in range(K):
        w_v   = wt[k, n0 + v*LANES : n0 + (v+1)*LANES]      (VECS vector loads)
        x_r   = broadcast(x[i0 + r, xc + k])                (ROWS broadcasts)
        acc[r][v] = fma(x_r, w_v, acc[r][v])                (ROWS * VECS FMAs)

and the ROWS * VECS accumulators live in vector registers for the whole loop
(16 of AVX-512's 32 registers with the defaults). The IR is generic (no x86
intrinsics): LLVM lowers the same vectors to NEON on aarch64, where LANES is 4.

:data:`LANES` is the float32 vector width of the CPU Numba compiles for
(:mod:`.target`: 16 with AVX-512, 8 with AVX, else 4); a tile covers
``COLS = VECS * LANES`` columns.

The caller guarantees the tile is in bounds: no checks happen here.
"""

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .target import TARGET

LANES = TARGET.lanes  # float32 lanes of the CPU Numba compiles for (kernels.target)
VECS = 2
COLS = VECS * LANES
# ROWS * VECS accumulators + VECS weight vectors + one broadcast must fit the
# register file: 8 x 2 with 32 registers (AVX-512, NEON); 6 x 2 with 16 (AVX2, SSE)
ROWS = 8 if TARGET.registers >= 32 else 6


def _is_matrix(a) -> bool:
    return isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C" and a.dtype == types.float32


def _is_vector(a) -> bool:
    return isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == types.float32


def splat(builder, scalar, vec_ty):
    """IR: ``scalar`` in every lane of a ``vec_ty`` vector."""
    lanes = vec_ty.count
    return builder.shuffle_vector(
        builder.insert_element(ir.Constant(vec_ty, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0)),
        ir.Constant(vec_ty, ir.Undefined),
        ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes),
    )


def _tile_products(context, builder, sig, args, rows, vecs, lanes, valid=None):
    """Emit the K loop of a tile; return its accumulators ([row][vec] allocas) and ``store()``.

    ``args`` start with (x, xr, xc, wt, n0, out, orow, oc, K); ``store()`` emits
    the stores of the accumulators to out[orow + r, oc + v * lanes ...]. With ``valid``
    (an IR integer, 1 <= valid <= rows) only x rows xr .. xr + valid - 1 are read (the rows
    after them repeat the last one) and ``store()`` stores only the first ``valid`` rows.
    """
    x_v, xr_v, xc_v, wt_v, n0_v, out_v, orow_v, oc_v, k_v = args[:9]
    i64 = ir.IntType(64)
    vec = ir.VectorType(ir.FloatType(), lanes)
    X = context.make_array(sig.args[0])(context, builder, x_v)
    W = context.make_array(sig.args[3])(context, builder, wt_v)
    O = context.make_array(sig.args[5])(context, builder, out_v)
    x_cols = builder.extract_value(X.shape, 1)
    w_cols = builder.extract_value(W.shape, 1)
    o_cols = builder.extract_value(O.shape, 1)
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fmuladd.v{lanes}f32"
    )
    zero = ir.Constant(vec, [0.0] * lanes)

    def const(v):
        return ir.Constant(i64, v)

    # accumulators as entry-block allocas: LLVM promotes them to registers
    acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(vecs)] for _ in range(rows)]

    def row(r):  # x row r, or the last valid one
        if valid is None or r == 0:
            return const(r)
        return builder.select(builder.icmp_signed("<", const(r), valid), const(r), builder.sub(valid, const(1)))

    x_row = [builder.add(builder.mul(builder.add(xr_v, row(r)), x_cols), xc_v) for r in range(rows)]
    with cgutils.for_range(builder, k_v) as loop:
        k = loop.index
        w_at = builder.add(builder.mul(k, w_cols), n0_v)
        w = [
            builder.load(
                builder.bitcast(builder.gep(W.data, [builder.add(w_at, const(v * lanes))]), vec.as_pointer()), align=4
            )
            for v in range(vecs)
        ]
        for r in range(rows):
            xb = splat(builder, builder.load(builder.gep(X.data, [builder.add(x_row[r], k)])), vec)
            for v in range(vecs):
                builder.store(builder.call(fma, [xb, w[v], builder.load(acc[r][v])]), acc[r][v])

    def store_row(r):
        o_at = builder.add(builder.mul(builder.add(orow_v, const(r)), o_cols), oc_v)
        for v in range(vecs):
            ptr = builder.bitcast(builder.gep(O.data, [builder.add(o_at, const(v * lanes))]), vec.as_pointer())
            builder.store(builder.load(acc[r][v]), ptr, align=4)

    def store():
        for r in range(rows):
            if valid is None or r == 0:
                store_row(r)
            else:
                with builder.if_then(builder.icmp_signed("<", const(r), valid)):
                    store_row(r)

    return acc, store


def _make_tile(rows: int, vecs: int, lanes: int):
    """An intrinsic ``tile(x, xr, xc, wt, n0, out, orow, oc, K)``.

    out[orow + r, oc + c] = sum_k x[xr + r, xc + k] * wt[k, n0 + c]
    for r < rows, c < vecs * lanes. All three arrays are 2-D, C-contiguous float32.
    """

    @intrinsic
    def tile(typingctx, x, xr, xc, wt, n0, out, orow, oc, K):
        if not all(_is_matrix(a) for a in (x, wt, out)):
            return None
        if not all(isinstance(i, types.Integer) for i in (xr, xc, n0, orow, oc, K)):
            return None
        sig = types.void(x, types.intp, types.intp, wt, types.intp, out, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            _, store = _tile_products(context, builder, signature, args, rows, vecs, lanes)
            store()
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _make_tile_upto(rows: int, vecs: int, lanes: int):
    """An intrinsic ``tile(x, xr, xc, wt, n0, out, orow, oc, K, n)``: the tile of :func:`_make_tile` for
    its first ``n`` rows only (1 <= n <= rows), at the full tile's speed.

    x rows xr + n .. are not read (the products repeat row xr + n - 1) and out rows orow + n .. are
    not written. One row at a time would leave the FMA units waiting: a 1 x COLS tile has only
    VECS accumulators, each a chain of dependent FMAs.
    """

    @intrinsic
    def tile(typingctx, x, xr, xc, wt, n0, out, orow, oc, K, n):
        if not all(_is_matrix(a) for a in (x, wt, out)):
            return None
        if not all(isinstance(i, types.Integer) for i in (xr, xc, n0, orow, oc, K, n)):
            return None
        ip = types.intp
        sig = types.void(x, ip, ip, wt, ip, out, ip, ip, ip, ip)

        def codegen(context, builder, signature, args):
            _, store = _tile_products(context, builder, signature, args, rows, vecs, lanes, valid=args[9])
            store()
            return context.get_dummy_value()

        return sig, codegen

    return tile


def emit_epilogue(builder, acc, lanes, orow, bc, arrays, relu, rc, nonorm):
    """IR: finish the float tile ``acc`` ([row][vec] allocas of <lanes x float>) in registers,

        y = y + b[bc + c]
        y = max(y, 0)                      if relu != 0 (NaN stays NaN)
        y = y + res[orow + r, rc + c]      if rc >= 0
        y = y * nw[bc + c] + nb[bc + c]    if nonorm != 0

    in that order, the order of the linear kernels' separate epilogue (``_epilogue_cols``).
    ``arrays``: the made arrays (b, res, nw, nb); the other arguments are IR integers."""
    i64 = ir.IntType(64)
    vec = ir.VectorType(ir.FloatType(), lanes)
    B, R, NW, NB = arrays
    r_cols = builder.extract_value(R.shape, 1)
    vecs = len(acc[0])

    def vload(data, at):
        return builder.load(builder.bitcast(builder.gep(data, [at]), vec.as_pointer()), align=4)

    def column(v):
        return builder.add(bc, ir.Constant(i64, v * lanes))

    def update(fn):
        for r in range(len(acc)):
            for v in range(vecs):
                builder.store(fn(r, v, builder.load(acc[r][v])), acc[r][v])

    zero = ir.Constant(vec, [0.0] * lanes)
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fmuladd.v{lanes}f32"
    )
    bias = [vload(B.data, column(v)) for v in range(vecs)]
    update(lambda r, v, y: builder.fadd(y, bias[v]))
    with builder.if_then(builder.icmp_signed("!=", relu, ir.Constant(i64, 0))):
        # y < 0 ? 0 : y, so that a NaN stays NaN (llvm.maxnum would return the 0: bad input must show)
        update(lambda r, v, y: builder.select(builder.fcmp_ordered("<", y, zero), zero, y))
    with builder.if_then(builder.icmp_signed(">=", rc, ir.Constant(i64, 0))):

        def add_res(r, v, y):
            at = builder.add(
                builder.mul(builder.add(orow, ir.Constant(i64, r)), r_cols),
                builder.add(rc, ir.Constant(i64, v * lanes)),
            )
            return builder.fadd(y, vload(R.data, at))

        update(add_res)
    with builder.if_then(builder.icmp_signed("!=", nonorm, ir.Constant(i64, 0))):
        scale = [vload(NW.data, column(v)) for v in range(vecs)]
        shift = [vload(NB.data, column(v)) for v in range(vecs)]
        update(lambda r, v, y: builder.call(fma, [y, scale[v], shift[v]]))


def _make_tile_epilogue(rows: int, vecs: int, lanes: int):
    """A tile that finishes its outputs in registers before storing them:
    ``tile(x, xr, xc, wt, n0, out, orow, oc, K, b, bc, relu, res, rc, nonorm, nw, nb)``

        out[orow + r, oc + c] = epilogue(sum_k x[xr + r, xc + k] * wt[k, n0 + c])

    with :func:`emit_epilogue`'s steps.
    """

    @intrinsic
    def tile(typingctx, x, xr, xc, wt, n0, out, orow, oc, K, b, bc, relu, res, rc, nonorm, nw, nb):
        if not (all(_is_matrix(a) for a in (x, wt, out, res)) and all(_is_vector(a) for a in (b, nw, nb))):
            return None
        if not all(isinstance(i, types.Integer) for i in (xr, xc, n0, orow, oc, K, bc, relu, rc, nonorm)):
            return None
        ip = types.intp
        sig = types.void(x, ip, ip, wt, ip, out, ip, ip, ip, b, ip, ip, res, ip, ip, nw, nb)

        def codegen(context, builder, signature, args):
            acc, store = _tile_products(context, builder, signature, args, rows, vecs, lanes)
            b_v, bc_v, relu_v, res_v, rc_v, nonorm_v, nw_v, nb_v = args[9:]
            arrays = [
                context.make_array(signature.args[i])(context, builder, a)
                for i, a in ((9, b_v), (12, res_v), (15, nw_v), (16, nb_v))
            ]
            emit_epilogue(builder, acc, lanes, args[6], bc_v, arrays, relu_v, rc_v, nonorm_v)
            store()
            return context.get_dummy_value()

        return sig, codegen

    return tile


tile_rows = _make_tile(ROWS, VECS, LANES)  # the main tile: ROWS x COLS
tile_row = _make_tile(1, VECS, LANES)  # leftover rows, one at a time
tile_rows_upto = _make_tile_upto(ROWS, VECS, LANES)  # the first n <= ROWS rows of a tile
tile_rows_epilogue = _make_tile_epilogue(ROWS, VECS, LANES)
tile_row_epilogue = _make_tile_epilogue(1, VECS, LANES)


# exp(x) for x <= 0 in float32: x = (n + f) / log2(e) with n an integer and
# |f| <= 1/2; 2**f by its Taylor polynomial (relative error < 2e-7 on that
# interval), 2**n from the exponent bits. Below EXP_FLOOR the result is
# exp(EXP_FLOOR) ~ 1.8e-35 instead of something smaller, a denormal or 0 (the
# probabilities of masked keys, and of the many keys a sharp softmax all but
# ignores). Why not lower: a softmax row is then divided by its sum (up to the
# row's length) and multiplied into the values, and probabilities below
# float32's smallest normal (1.2e-38) made both steps slow: denormal operands
# cost the CPU microcode assists. With -87, the full-size int8 model's attention
# at 384 tokens (seeded random weights from mbengine.cli.random_checkpoint, whose
# scores spread widely) took 12.9 ms on 2 Zen 4 threads; with -80, 10.8 ms. An
# absolute error of 1.8e-35 in a probability is far below any tolerance.
EXP_FLOOR = -80.0
_EXP_COEFFS = [math.log(2.0) ** i / math.factorial(i) for i in range(7)]


def _emit_exp_short_chain(builder, x, lanes):
    """IR for exp(x), x <= 0, on a float or a <lanes x float> value (see above), with a short dependency
    chain: n by one rounding (rint), and the polynomial by Estrin's scheme in fused multiply-adds,
    (c0 + c1 f) + f^2 ((c2 + c3 f) + f^2 ((c4 + c5 f) + f^2 c6)), instead of Horner's six multiplies and
    six adds in a row.

    Why: a softmax row is one long loop of independent exps, each a chain of some twenty dependent
    operations, and the out-of-order window holds only a few of them at a time; the chain's length,
    more than the operation count, sets the speed. Exp and normalisation of 384-wide score rows on
    Zen 3: 0.33 ns per score this way, 0.47 with floor(t + 1/2) and Horner (the earlier form, whose
    results differ from these in the last bits only, relative ~1e-7).
    """
    f32 = ir.FloatType()
    i32 = ir.IntType(32)
    ty = f32 if lanes == 1 else ir.VectorType(f32, lanes)
    ity = i32 if lanes == 1 else ir.VectorType(i32, lanes)
    suffix = "f32" if lanes == 1 else f"v{lanes}f32"

    def c(v, t=ty):
        return ir.Constant(t, v) if lanes == 1 else ir.Constant(t, [v] * lanes)

    def fn(name, nargs):
        return cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ty, [ty] * nargs), f"llvm.{name}.{suffix}"
        )

    maxnum, rint, fma = fn("maxnum", 2), fn("rint", 1), fn("fmuladd", 3)
    t = builder.fmul(builder.call(maxnum, [x, c(EXP_FLOOR)]), c(1.0 / math.log(2.0)))
    n = builder.call(rint, [t])
    f = builder.fsub(t, n)
    f2 = builder.fmul(f, f)
    k = _EXP_COEFFS
    lo, mid, hi = (builder.call(fma, [c(k[i + 1]), f, c(k[i])]) for i in (0, 2, 4))
    p = builder.call(fma, [c(k[6]), f2, hi])
    p = builder.call(fma, [p, f2, mid])
    p = builder.call(fma, [p, f2, lo])
    bits = builder.shl(builder.add(builder.fptosi(n, ity), c(127, ity)), c(23, ity))
    return builder.fmul(p, builder.bitcast(bits, ty))


def _vector_passes(builder, n, vector_body, scalar_body):
    """IR: ``vector_body(i)`` for i = 0, LANES, .. while a whole vector fits in ``n``, then ``scalar_body(i)``
    for the rest."""
    i64 = ir.IntType(64)
    whole = builder.mul(builder.udiv(n, ir.Constant(i64, LANES)), ir.Constant(i64, LANES))
    with cgutils.for_range_slice(builder, ir.Constant(i64, 0), whole, ir.Constant(i64, LANES)) as (i, _):
        vector_body(i)
    with cgutils.for_range_slice(builder, whole, n, ir.Constant(i64, 1)) as (i, _):
        scalar_body(i)


def _emit_exp_normalize(builder, data, n, m_s):
    """IR: data[:n] = exp(data[:n] - m_s) / sum(exp(data[:n] - m_s)), float32, in place (m_s: the maximum).

    Two passes of LANES-wide vectors with scalar tails: exp (the polynomial above) and sum, then multiply by
    1 / sum; the sum adds the tail's partial sum and then the vector partial sums' lanes, in order.
    """
    f32 = ir.FloatType()
    vec = ir.VectorType(f32, LANES)

    def vptr(i):
        return builder.bitcast(builder.gep(data, [i]), vec.as_pointer())

    def sptr(i):
        return builder.gep(data, [i])

    acc_v = cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * LANES))
    acc_s = cgutils.alloca_once_value(builder, ir.Constant(f32, 0.0))
    m_v = splat(builder, m_s, vec)

    def exp_v(i):
        e = _emit_exp_short_chain(builder, builder.fsub(builder.load(vptr(i), align=4), m_v), LANES)
        builder.store(e, vptr(i), align=4)
        builder.store(builder.fadd(builder.load(acc_v), e), acc_v)

    def exp_s(i):
        e = _emit_exp_short_chain(builder, builder.fsub(builder.load(sptr(i)), m_s), 1)
        builder.store(e, sptr(i))
        builder.store(builder.fadd(builder.load(acc_s), e), acc_s)

    _vector_passes(builder, n, exp_v, exp_s)
    reduce_add = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(f32, [f32, vec]), f"llvm.vector.reduce.fadd.v{LANES}f32"
    )
    total = builder.call(reduce_add, [builder.load(acc_s), builder.load(acc_v)])
    inv_s = builder.fdiv(ir.Constant(f32, 1.0), total)
    inv_v = splat(builder, inv_s, vec)

    def norm_v(i):
        builder.store(builder.fmul(builder.load(vptr(i), align=4), inv_v), vptr(i), align=4)

    def norm_s(i):
        builder.store(builder.fmul(builder.load(sptr(i)), inv_s), sptr(i))

    _vector_passes(builder, n, norm_v, norm_s)


@intrinsic
def softmax_exp_row(typingctx, row, length, m):
    """row[:length] = exp(row[:length] - m) / sum(..), in place, in float32, given the row's maximum ``m``.

    The second and third passes of a softmax, for rows whose scale, mask and maximum a score tile
    already applied and found (:data:`score_rows`): exp (:func:`_emit_exp_short_chain`) and sum,
    then multiply by 1 / sum. The row must hold at least one element.
    """
    if not (_is_vector(row) and isinstance(length, types.Integer) and isinstance(m, types.Float)):
        return None
    sig = types.void(row, types.intp, types.float32)

    def codegen(context, builder, signature, args):
        R = context.make_array(signature.args[0])(context, builder, args[0])
        _emit_exp_normalize(builder, R.data, args[1], args[2])
        return context.get_dummy_value()

    return sig, codegen


def _make_score_tiles(rows: int, vecs: int, lanes: int):
    """An intrinsic ``tile(x, xr, xc, wt, wr, out, orow, oc, K, panels, scale, mask, mc, n) -> (max_0, ..)``.

    Attention scores for ``rows`` query rows against ``panels`` panels of packed keys, the first
    softmax pass done in registers: for panel p (rows wr + p*K .. of wt, all of its vecs * lanes
    columns) and c < vecs * lanes,

        y = fmuladd(sum_k x[xr + r, xc + k] * wt[wr + p*K + k, c], scale, mask[mc + p*cols + c])
        out[orow + r, oc + p*cols + c] = y

    and it returns the tuple of each row's maximum of y (-inf when panels is 0). Only the first ``n``
    rows of x are read (1 <= n <= rows): the rows after them repeat row xr + n - 1. The scores and
    maxima are bit for bit those of a separate pass over the stored scores (the same fmuladd, and a
    maximum does not depend on order). With K as short as a head width (32) a score tile is quick,
    and that first pass, a load, fmuladd, store and one long chain of maxima per vector, cost
    nearly as much as the exps; here it is a few register operations per tile.
    """
    cols = vecs * lanes

    @intrinsic
    def tile(typingctx, x, xr, xc, wt, wr, out, orow, oc, K, panels, scale, mask, mc, n):
        if not (all(_is_matrix(a) for a in (x, wt, out)) and _is_vector(mask)):
            return None
        if not (all(isinstance(i, types.Integer) for i in (xr, xc, wr, orow, oc, K, panels, mc, n))):
            return None
        if not isinstance(scale, types.Float):
            return None
        ip = types.intp
        sig = types.UniTuple(types.float32, rows)(x, ip, ip, wt, ip, out, ip, ip, ip, ip, types.float32, mask, ip, ip)

        def codegen(context, builder, signature, args):
            x_v, xr_v, xc_v, wt_v, wr_v, out_v, orow_v, oc_v, k_v, panels_v, scale_s, mask_v, mc_v, n_v = args
            f32 = ir.FloatType()
            i64 = ir.IntType(64)
            vec = ir.VectorType(f32, lanes)
            W = context.make_array(signature.args[3])(context, builder, wt_v)
            O = context.make_array(signature.args[5])(context, builder, out_v)
            Mk = context.make_array(signature.args[11])(context, builder, mask_v)
            w_cols = builder.extract_value(W.shape, 1)
            o_cols = builder.extract_value(O.shape, 1)
            vmax = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec]), f"llvm.maxnum.v{lanes}f32"
            )
            vfma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fmuladd.v{lanes}f32"
            )
            reduce_max = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(f32, [vec]), f"llvm.vector.reduce.fmax.v{lanes}f32"
            )
            scale_v = splat(builder, scale_s, vec)
            row_max = [
                cgutils.alloca_once_value(builder, ir.Constant(vec, [float("-inf")] * lanes)) for _ in range(rows)
            ]

            def vptr(data, at):
                return builder.bitcast(builder.gep(data, [at]), vec.as_pointer())

            with cgutils.for_range(builder, panels_v) as loop:
                p = loop.index
                n0 = builder.mul(builder.add(wr_v, builder.mul(p, k_v)), w_cols)  # wt[wr + p*K, 0]
                c0 = builder.mul(p, ir.Constant(i64, cols))
                tile_args = (x_v, xr_v, xc_v, wt_v, n0, out_v, orow_v, oc_v, k_v)
                acc, _ = _tile_products(context, builder, signature, tile_args, rows, vecs, lanes, valid=n_v)
                mask_at = builder.add(mc_v, c0)
                masks = [
                    builder.load(vptr(Mk.data, builder.add(mask_at, ir.Constant(i64, v * lanes))), align=4)
                    for v in range(vecs)
                ]
                for r in range(rows):
                    o_at = builder.add(
                        builder.mul(builder.add(orow_v, ir.Constant(i64, r)), o_cols), builder.add(oc_v, c0)
                    )
                    for v in range(vecs):
                        y = builder.call(vfma, [builder.load(acc[r][v]), scale_v, masks[v]])
                        builder.store(y, vptr(O.data, builder.add(o_at, ir.Constant(i64, v * lanes))), align=4)
                        builder.store(builder.call(vmax, [builder.load(row_max[r]), y]), row_max[r])
            maxima = [builder.call(reduce_max, [builder.load(row_max[r])]) for r in range(rows)]
            return context.make_tuple(builder, signature.return_type, maxima)

        return sig, codegen

    return tile


score_rows = _make_score_tiles(ROWS, VECS, LANES)  # attention scores and row maxima: ROWS query rows


@intrinsic
def transpose_block(typingctx, src, sr, sc, dst, dr, dc):
    """dst[dr + i, dc + j] = src[sr + j, sc + i] for i, j < LANES: a LANES x LANES block, transposed.

    LANES vector loads, log2(LANES) rounds of LANES interleaving shuffles (row i with row i + LANES/2,
    low halves and high halves: after the last round row i holds column i), LANES vector stores.
    Generic shuffles, so any target lowers them; a scalar copy would take one load and one store per
    element.
    """
    if not (_is_matrix(src) and _is_matrix(dst) and all(isinstance(i, types.Integer) for i in (sr, sc, dr, dc))):
        return None
    sig = types.void(src, types.intp, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        src_v, sr_v, sc_v, dst_v, dr_v, dc_v = args
        i32 = ir.IntType(32)
        i64 = ir.IntType(64)
        vec = ir.VectorType(ir.FloatType(), LANES)
        A = context.make_array(signature.args[0])(context, builder, src_v)
        O = context.make_array(signature.args[3])(context, builder, dst_v)
        a_cols = builder.extract_value(A.shape, 1)
        o_cols = builder.extract_value(O.shape, 1)

        def vptr(data, cols, row, col, r):
            at = builder.add(builder.mul(builder.add(row, ir.Constant(i64, r)), cols), col)
            return builder.bitcast(builder.gep(data, [at]), vec.as_pointer())

        half = LANES // 2
        lo = ir.Constant(ir.VectorType(i32, LANES), [i // 2 + (i % 2) * LANES for i in range(LANES)])
        hi = ir.Constant(ir.VectorType(i32, LANES), [half + i // 2 + (i % 2) * LANES for i in range(LANES)])
        rows = [builder.load(vptr(A.data, a_cols, sr_v, sc_v, r), align=4) for r in range(LANES)]
        for _ in range(LANES.bit_length() - 1):
            rows = [builder.shuffle_vector(rows[i], rows[i + half], mask) for i in range(half) for mask in (lo, hi)]
        for r in range(LANES):
            builder.store(rows[r], vptr(O.data, o_cols, dr_v, dc_v, r), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _make_prefetch(locality: int):
    """An intrinsic ``prefetch(arr, start, count)`` with LLVM's cache locality hint (3: L1, 2: L2)."""

    @intrinsic
    def prefetch(typingctx, arr, start, count):
        """Hint the CPU to bring ``count`` elements of a C-contiguous array from ``start`` on into cache.

        One ``llvm.prefetch`` per 64-byte line (a no-op where the target has none).
        """
        if not (isinstance(arr, types.Array) and arr.layout == "C"):
            return None
        sig = types.void(arr, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            i64 = ir.IntType(64)
            A = context.make_array(signature.args[0])(context, builder, args[0])
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0"
            )
            per_line = max(1, 64 // context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype)))
            lines = builder.udiv(builder.add(args[2], ir.Constant(i64, per_line - 1)), ir.Constant(i64, per_line))
            with cgutils.for_range(builder, lines) as loop:
                elem = builder.add(args[1], builder.mul(loop.index, ir.Constant(i64, per_line)))
                ptr = builder.bitcast(builder.gep(A.data, [elem]), i8p)
                builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, locality), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return sig, codegen

    return prefetch


prefetch = _make_prefetch(3)  # into L1: the next panel of the weight being multiplied
prefetch_l2 = _make_prefetch(2)  # into L2: the weight of the op that runs next
