"""Int8 linear layer: dynamic per-row activation quantization, int8 x int8 -> int32, fused epilogue.

    out[i, o0 + n] = norm( act( sx[i] * sw[n] * sum_k qx[i, k] * wq[n, k]
                                + sum_j x[i, x0 + o_j] * ow[j, n] + b[n] ) + res[i, r0 + n] )

* weights: int8 per output channel, ``W[n, :] ~ sw[n] * wq[n, :]`` (symmetric,
  :func:`quantize_weight`), packed by :func:`pack` into panels of ``COLS``
  outputs and groups of 4 inputs (the layout the dot-product instructions
  read, see :mod:`.qsimd`);
* activations: quantized per row as the kernel runs, ``qx[i] = round(x[i] /
  sx[i])`` with ``sx[i] = max_k |x[i, k]| / 127`` over the *inlier* channels;
* outlier channels: a few input channels (``o_j``, chosen from calibration
  data at conversion time: MobileBERT's residual stream carries channels of
  ~1e7 next to channels of ~1) would set every row's scale and flush the rest
  to zero. Their weight rows are left out of ``wq`` (zero there) and applied
  in float32 in the epilogue (``ow``, one (N,) row per outlier channel).

One parallel loop over tasks of up to TASK_ROWS rows, as many per thread
(:func:`task_split`); each task quantizes its rows, then runs the int32
tiles (block of 8 rows by block, each through every panel: a block's
outputs and residual are then read and written row after row, which the
caches' streams follow, rather than 128 bytes of 8 rows 2 KiB apart at a
time; on 630 ragged tokens the output bottleneck, whose residual and
outputs no longer fit L2, took 16-20% less time, alternating processes),
which dequantize their sums, add the outlier channels and, with no activation or a
relu, finish the epilogue (bias, relu, residual, NoNorm: the float32 tile's
own steps, :func:`.simd.emit_epilogue`) in registers before the one store.
Another activation, or a LayerNorm, is a second pass over the task's rows
while they are in cache. A task needs no other task's results, so there is
no barrier. Three parallel passes instead (quantize all rows, all tiles, all
epilogues) took the full int8 model at batch 1 x seq 128 from 14.7 to 17.1 ms
on 2 threads (the fork/join of 3 x 289 parallel regions), 23.3 vs 23.6 ms on 1.

What the tiles compile to (``python -m bench kernels`` counts instructions
in ``inspect_asm()`` of a fresh compile; bench/results/kernels.md): on this
machine (LLVM 22.1 sees ``rocketlake``, AVX-512 with VNNI) the ``vnni``
variant's k loop for 8 rows x 32 columns is 37 instructions: two 64-byte
weight loads, 8 ``vpbroadcastd`` (4 activation bytes per row) and 16
``vpdpbusd`` into 16 zmm accumulators (20 zmm registers, no spills), 1024
multiply-adds per iteration. ``qlinear`` has 26 ``vpdpbusd`` in all (16
there, 8 + 2 in the one-row tile, unrolled by 4) and no ``vpmaddubsw``,
``vpmaddwd`` or ``vpmulld``. The ``generic`` variant is not recognised as a
dot product: LLVM sign-extends the bytes to int32 (``vpmovsxbd``),
multiplies with ``vpmulld`` and gathers each lane's four products with
``vpermt2d``: a 465-instruction k loop with 64 ``vpmulld`` and 128
``vpermt2d`` in all 32 zmm registers plus 15 stack references. On 1 thread,
at the model's linear shapes, ``vnni`` runs at 250-520 GOP/s (1.8-3.5x the
float32 kernel), ``generic`` at ~29 GOP/s (0.18x the float32 kernel).
Under aarch64 emulation (bench/aarch64/RESULTS.md) the ``sdot`` k loop is 31
instructions with 16 ``sdot``; ``generic`` becomes ``smull`` (bytes to 16
bits) plus widening and shuffles, 422-508 instructions with spills.
"""

import numpy as np
from numba import njit, prange

from . import amx, layout
from .flags import FASTMATH
from .layout import INLIER, QMAX, SIGN_PATTERN, channel_mask, quantize_weight  # noqa: F401 (re-exported)
from .layout import qunpack as unpack  # noqa: F401 (re-exported)
from .linear import _epilogue_cols, _epilogue_row, _layernorm_row, even_parts
from .names import Act, Norm
from .qsimd import (  # noqa: F401 (VARIANT: re-exported)
    CACHE,
    COLS,
    OFFSET,
    ROWS,
    SIGN_BYTES,
    VARIANT,
    XMAX,
    float_from_bits,
    qtile_row,
    qtile_row_fin,
    qtile_row_nonneg,
    qtile_row_nonneg_fin,
    qtile_rows,
    qtile_rows_fin,
    qtile_rows_nonneg,
    qtile_rows_nonneg_fin,
    qtile_rows_sums_fin,
    quantize_values,
)
from .simd import prefetch_l2

QX_DTYPE = np.uint8 if OFFSET or SIGN_BYTES else np.int8  # the quantized activations' storage type
QX_BYTES = 1 + SIGN_BYTES  # scratch bytes per quantized input: the value, and for maddubs its sign
TINY = 0x0D800000  # bits of 2.0**-100: rows with a smaller max take _quantize_row's float64 path
TASK_BLOCKS = 4  # row blocks (of ROWS rows) per parallel task at most (module doc)
TASK_ROWS = TASK_BLOCKS * ROWS
AMX = VARIANT == "amx" and COLS == 2 * amx.TILE_BYTES // 4  # (a panel: two AMX weight tiles side by side)


def qx_scratch(rows: int, k4: int) -> np.ndarray:
    """Zeroed scratch for ``rows`` quantized rows of ``4 * k4`` inputs, in this variant's layout."""
    return np.zeros((rows, 4 * k4 * QX_BYTES), QX_DTYPE)


def encode(q: np.ndarray, k4: int) -> np.ndarray:
    """Integer activations (rows, K), K <= 4 * k4, in [-127, 127] -> the scratch rows the tiles read
    (what :func:`qlinear` writes; see :func:`_quantize_row`), for tests and benchmarks."""
    q = np.asarray(q, np.int64)
    rows, K = q.shape
    Kp = 4 * k4
    full = np.zeros((rows, Kp), np.int64)
    full[:, :K] = q
    out = qx_scratch(rows, k4)
    if not SIGN_BYTES:
        out[:, :Kp] = full + OFFSET
        return out
    out[:, :Kp] = np.abs(full)
    out[:, Kp : 2 * Kp] = (full & 0xFF).astype(np.uint8)
    if SIGN_BYTES == 3:
        bits = ((full < 0).reshape(rows, k4, 4) << np.arange(4)).sum(axis=2).astype(np.uint64)
        out[:, 2 * Kp : 4 * Kp] = (bits * SIGN_PATTERN).view(np.uint8).reshape(rows, 8 * k4)
    return out


def pack(wq: np.ndarray) -> np.ndarray:
    """(N, K) int8 -> (P, ceil(K / 4), 4 * COLS) panels (:func:`.layout.qpack`)."""
    return layout.qpack(wq, COLS)


def correction(wp: np.ndarray) -> np.ndarray:
    """``OFFSET * sum_k wq[n, k]`` per packed column (:func:`.layout.correction`)."""
    return layout.correction(wp, OFFSET)


@njit(cache=CACHE, parallel=True, fastmath=FASTMATH)
def qlinear(
    x, x_off, mask, qx, sx, wq, sw, corr, oidx, ow, b, act, res, res_off, norm, nw, nb, eps, out, out_off, threads, nxt
):
    """The int8 linear (module doc). ``mask``: (K,) int32, INLIER or 0 (an outlier) per input channel;
    ``qx`` (>= M, >= 4 K4) and ``sx`` (>= M,) are scratch; ``sw`` and ``corr`` are padded to whole panels;
    ``oidx`` (J,) and ``ow`` (J, N) the outlier channels. ``threads``: what the rows are split for
    (:func:`task_split`; any value gives the same outputs). ``nxt``: the bytes of the next linear op's weight
    (1-D uint8), which the tasks share out and prefetch into L2 (a hint: no effect on results), each
    task its share a tile's part at a time: asked for in one burst at the start of the task, the
    prefetches stalled on full miss queues, and the int8 model at batch 1 x seq 128 took 21.8 ms
    against 20.2 on 1 thread, 12.1 against 11.5 on 2 (Zen 4, native kernels, alternating processes)."""
    M = x.shape[0]
    K = mask.shape[0]
    P, K4, _ = wq.shape
    N = b.shape[0]
    xbits = x.view(np.int32)  # once per call: a view() per row cost more than the row's quantization
    # no activation or relu: the tiles finish their outputs in registers (a LayerNorm still follows)
    fuse = 1 if act == Act.LINEAR or act == Act.RELU else 0
    inliers_only = oidx.shape[0] == 0  # every mask entry INLIER
    tasks = task_split(M, threads)
    all_blocks = (M + ROWS - 1) // ROWS
    ahead_part = (nxt.shape[0] + tasks - 1) // tasks
    for c in prange(tasks):
        ahead0 = min(c * ahead_part, nxt.shape[0])
        ahead = min(ahead_part, nxt.shape[0] - ahead0)  # this task's share, asked for a tile's part at a time
        r0 = c * all_blocks // tasks * ROWS
        r1 = min((c + 1) * all_blocks // tasks * ROWS, M)
        signed = False  # whether any row of the task has a negative input (maddubs' sign step, .qsimd)
        for i in range(r0, r1):
            signed |= _quantize_row(x, xbits, i, x_off, K, K4 * 4, mask, qx, sx, inliers_only)
        tiled = r0  # rows from here on run on the register tiles
        if AMX:  # (a constant: compiled only for the amx variant; other targets cannot select its instructions)
            tiled = _amx_rows(qx, r0, r1, wq, K4, N, ahead, ahead0, nxt, out, out_off, sx, sw, corr, signed, x,
                              x_off, oidx, ow, fuse, b, act, res, res_off, norm, nw, nb)  # fmt: skip
        blocks = (r1 - r0 + ROWS - 1) // ROWS
        for i0 in range(tiled, r1, ROWS):
            for p in range(P):
                if ahead > 0:
                    step = (i0 - r0) // ROWS * P + p
                    part0 = ahead * step // (blocks * P)
                    prefetch_l2(nxt, ahead0 + part0, ahead * (step + 1) // (blocks * P) - part0)
                n0 = p * COLS
                _qpanel_finished(
                    qx,
                    wq[p],
                    out,
                    out_off,
                    i0,
                    min(i0 + ROWS, r1),
                    min(COLS, N - n0),
                    K4,
                    sx,
                    sw,
                    corr,
                    n0,
                    signed,
                    x,
                    x_off,
                    oidx,
                    ow,
                    fuse,
                    b,
                    act,
                    res,
                    res_off,
                    norm,
                    nw,
                    nb,
                )
        if not fuse:
            for i in range(r0, r1):
                _epilogue_row(out, i, out_off, N, b, act, res, res_off, norm, nw, nb, eps)
        elif norm == Norm.LAYERNORM:  # needs whole rows
            for i in range(r0, r1):
                _layernorm_row(out, i, out_off, N, nw, nb, eps)


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _amx_rows(
    qx, r0, r1, wq, K4, N, ahead, ahead0, nxt, out, out_off, sx, sw, corr, signed, x, x_off, oidx, ow, fuse, b,
    act, res, res_off, norm, nw, nb,
):  # fmt: skip
    """:func:`qlinear`'s rows r0:r1 on the AMX tiles (:mod:`.amx`), 32 or 16 rows at a time, finished by
    the register tiles' own IR (``qtile_rows_sums_fin``: the same bits as on those tiles); returns where
    the rest begins (fewer than 16 rows, or all of them when the inputs are not a multiple of 64), which
    the register tiles do. A last panel narrower than COLS takes the plain loops, as there."""
    P = wq.shape[0]
    tiled = r0
    if K4 % 16 or r1 - r0 < amx.TILE_ROWS:
        return tiled
    relu = 1 if act == Act.RELU else 0
    nonorm = 1 if norm == Norm.NONORM else 0
    sums = np.empty((2 * amx.TILE_ROWS, COLS), np.int32)
    amx.configure()
    while r1 - tiled >= amx.TILE_ROWS:
        rows = 2 * amx.TILE_ROWS if r1 - tiled >= 2 * amx.TILE_ROWS else amx.TILE_ROWS
        for p in range(P):
            if ahead > 0:  # (this task's share of the prefetch, by rows x panels done)
                done = (tiled - r0) * P + p * rows
                part0 = ahead * done // ((r1 - r0) * P)
                prefetch_l2(nxt, ahead0 + part0, ahead * (done + rows) // ((r1 - r0) * P) - part0)
            n0 = p * COLS
            if n0 + COLS > N:
                _qpanel_finished(qx, wq[p], out, out_off, tiled, tiled + rows, N - n0, K4, sx, sw, corr, n0, signed,
                                 x, x_off, oidx, ow, fuse, b, act, res, res_off, norm, nw, nb)  # fmt: skip
                continue
            amx.panel_sums(qx, tiled, rows > amx.TILE_ROWS, wq[p], K4, sums)
            rc = res_off + n0 if res_off >= 0 else -1
            for s0 in range(0, rows, ROWS):
                i = tiled + s0
                qtile_rows_sums_fin(sums, i, wq[p], out, i, out_off + n0, s0, sx, sw, corr, n0,
                                    x, x_off, oidx, ow, fuse, b, relu, res, rc, nonorm, nw, nb)  # fmt: skip
        tiled += rows
    amx.release()
    return tiled


@njit(cache=CACHE, inline="always")
def task_split(M, threads):
    """How many tasks :func:`qlinear` splits M rows into (:func:`.linear.even_parts` of its row blocks,
    at most TASK_BLOCKS per task): each thread gets the same number of rows, give or take a block.
    (With fixed tasks of TASK_ROWS rows, 128 rows were 6 tasks, 5 of 24 rows and one of 8: 72 rows for
    one thread and 56 for the other.)"""
    return even_parts((M + ROWS - 1) // ROWS, threads, TASK_BLOCKS)


@njit(cache=CACHE, parallel=True)
def qmatmul_exact(qx, wq, corr, out, signed=True):
    """out[i, n] = sum_k qx[i, k] * wq[n, k] - corr[n] in int32 through the same tiles (for tests);
    ``signed`` False: the tiles for rows with no negative input (the caller guarantees there is none)."""
    M = qx.shape[0]
    P, K4, _ = wq.shape
    N = out.shape[1]
    none = np.zeros(0, np.float32)  # no scales: the exact integers
    tiled = 0  # rows from here on run on the register tiles
    if AMX:  # (a constant, as in qlinear)
        tiled = _amx_exact(qx, wq, corr, out)
    for t in prange(P * ((M - tiled + ROWS - 1) // ROWS)):
        p = t % P
        i0 = tiled + (t // P) * ROWS
        width = min(COLS, N - p * COLS)
        _qpanel(qx, wq[p], out, p * COLS, i0, min(i0 + ROWS, M), width, K4, none, none, corr, p * COLS, signed)


@njit(cache=CACHE)
def _amx_exact(qx, wq, corr, out):
    """:func:`qmatmul_exact`'s rows on the AMX tiles, 32 or 16 at a time as :func:`_amx_rows` takes them;
    returns how many it did."""
    M = qx.shape[0]
    P, K4, _ = wq.shape
    N = out.shape[1]
    tiled = 0
    if K4 % 16:
        return tiled
    sums = np.empty((2 * amx.TILE_ROWS, COLS), np.int32)
    amx.configure()
    while M - tiled >= amx.TILE_ROWS:
        rows = 2 * amx.TILE_ROWS if M - tiled >= 2 * amx.TILE_ROWS else amx.TILE_ROWS
        for p in range(P):
            amx.panel_sums(qx, tiled, rows > amx.TILE_ROWS, wq[p], K4, sums)
            n0 = p * COLS
            for r in range(rows):
                for c in range(min(COLS, N - n0)):
                    out[tiled + r, n0 + c] = sums[r, c] - corr[n0 + c]
        tiled += rows
    amx.release()
    return tiled


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _quantize_row(x, xbits, i, x_off, K, Kp, mask, qx, sx, inliers_only):
    """qx[i] = round(x[i] / sx[i]) (+ OFFSET), sx[i] = max |inlier x[i, k]| / XMAX.

    For the maddubs micro-kernel (:mod:`.qsimd`) the row holds |q|, then the
    bytes q, and with 16 lanes (SIGN_BYTES 3) then per group of 4 inputs a
    64-bit lane mask, bit j of every nibble set where input 4g + j is negative.

    The maximum is taken over the float bit patterns as integers (``bits &
    mask`` clears the sign, and the whole value of an outlier channel): for
    non-negative floats integer order is float order, and unlike a float max
    it vectorises. A NaN or infinity wins that maximum, and the row's scale
    becomes NaN, so bad input shows in the output instead of vanishing.

    Returns whether the row has an input with its sign bit set (-0.0 and the
    outlier channels included): rows without one skip maddubs' sign step
    (:mod:`.qsimd`). Other variants have no sign step and always return False.
    """
    row = x[i, x_off : x_off + K]  # 1-D contiguous slices: both loops vectorise (indexing x[i, x_off + k]
    bits = xbits[i, x_off : x_off + K]  # directly left the second one scalar, 4.7x slower)
    top = np.int32(0)  # int32 throughout (numba widens int32 & int32 to int64: an int64 max runs at
    low = np.int32(0)  # a quarter of the vector width; this whole function took 3x longer). The sign
    # bits are gathered by a min, not by ``|=``: numba's int32 | int32 is int64, and 128 rows of 512
    # inputs took 24 us to quantize instead of 21 (Zen 3, maddubs)
    if inliers_only:  # no outlier channel: the mask is all INLIER, a constant (28% faster at K=512 than the load)
        for k in range(K):
            top = max(top, np.int32(bits[k] & np.int32(INLIER)))
            if SIGN_BYTES:  # (a constant: compiled only for maddubs, the one variant with a sign step)
                low = min(low, bits[k])
    else:
        for k in range(K):
            top = max(top, np.int32(bits[k] & mask[k]))
            if SIGN_BYTES:
                low = min(low, bits[k])
    amax = float_from_bits(top)
    if top >= 0x7F800000:
        scale = np.float32(np.nan)
    elif top == 0:
        scale = np.float32(1.0)
    else:
        scale = amax / np.float32(XMAX)
    q = qx[i, Kp : 2 * Kp] if SIGN_BYTES else qx[i, :Kp]  # maddubs: the signed bytes first (plane 1)
    if top >= TINY or top == 0:
        # (rint(row[k] / scale) clamped, + OFFSET; the clamps are needed only for outlier channels, which the
        # maximum left out, and NaN)
        quantize_values(row, q, K, np.float32(1.0) / scale, not inliers_only or top >= 0x7F800000)
    else:  # max |x| < 2**-100: 1 / scale could overflow float32, divide in float64
        inv64 = XMAX / np.float64(amax)
        for k in range(K):
            v64 = min(max(np.rint(np.float64(row[k]) * inv64), -XMAX), XMAX)
            q[k] = np.int32(v64) + OFFSET
    for k in range(K, Kp):
        q[k] = OFFSET
    if SIGN_BYTES:  # |q| (plane 0) from the signed bytes
        signed = q.view(np.int8)
        magnitude = qx[i, :Kp]
        for k in range(Kp):
            magnitude[k] = abs(signed[k])
    if SIGN_BYTES == 3:  # the signed bytes (plane 1) -> one 64-bit lane mask per group (plane 2)
        words = q.view(np.int32)  # group g's four signed bytes, little-endian
        masks = qx[i, 2 * Kp : 4 * Kp].view(np.uint64)
        for g in range(Kp // 4):
            w = words[g]
            bits = ((w >> 7) & 1) | ((w >> 14) & 2) | ((w >> 21) & 4) | ((w >> 28) & 8)
            masks[g] = np.uint64(bits) * SIGN_PATTERN
    sx[i] = scale
    return low < 0


@njit(cache=CACHE, inline="always")
def _q_at(qx, i, k, Kp):
    """The integer the micro-kernel multiplies for row i, input k (with the OFFSET where there is one)."""
    if SIGN_BYTES == 0:
        return np.int32(qx[i, k])
    return -np.int32(qx[i, k]) if qx[i, Kp + k] >= 128 else np.int32(qx[i, k])


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _qpanel(qx, w, out, oc, i0, i1, width, K4, sx, sw, corr, n0, signed):
    """Rows i0:i1 of one panel (``w``: (K4, 4 * COLS)) into out[:, oc:oc + width]; ``signed`` False when
    none of these rows has a negative input (the tiles without a sign step, :mod:`.qsimd`)."""
    if width == COLS:
        if i1 - i0 == ROWS:
            if signed:
                qtile_rows(qx, i0, w, out, i0, oc, K4, sx, sw, corr, n0)
            else:
                qtile_rows_nonneg(qx, i0, w, out, i0, oc, K4, sx, sw, corr, n0)
        else:
            for i in range(i0, i1):
                if signed:
                    qtile_row(qx, i, w, out, i, oc, K4, sx, sw, corr, n0)
                else:
                    qtile_row_nonneg(qx, i, w, out, i, oc, K4, sx, sw, corr, n0)
        return
    for i in range(i0, i1):  # a partial panel (the last one of an odd width): plain loops
        for c in range(width):
            acc = np.int32(0)
            for g in range(K4):
                for j in range(4):
                    acc += _q_at(qx, i, 4 * g + j, 4 * K4) * np.int32(w[g, 4 * c + j])
            _store(out, i, oc + c, acc - corr[n0 + c], sx, i, sw, n0 + c)


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _qpanel_finished(
    qx,
    w,
    out,
    out_off,
    i0,
    i1,
    width,
    K4,
    sx,
    sw,
    corr,
    n0,
    signed,
    x,
    x_off,
    oidx,
    ow,
    fuse,
    b,
    act,
    res,
    res_off,
    norm,
    nw,
    nb,
):
    """Rows i0:i1 of one panel (columns n0:n0 + width) of :func:`qlinear`, finished: the outlier channels,
    then with ``fuse`` the epilogue (bias, relu, residual, NoNorm) before the store (:mod:`.qsimd`)."""
    oc = out_off + n0
    if width == COLS:
        relu = 1 if act == Act.RELU else 0
        nonorm = 1 if norm == Norm.NONORM else 0
        rc = res_off + n0 if res_off >= 0 else -1
        fin = (x, x_off, oidx, ow, fuse, b, relu, res, rc, nonorm, nw, nb)
        if i1 - i0 == ROWS:
            if signed:
                qtile_rows_fin(qx, i0, w, out, i0, oc, K4, sx, sw, corr, n0, *fin)
            else:
                qtile_rows_nonneg_fin(qx, i0, w, out, i0, oc, K4, sx, sw, corr, n0, *fin)
        else:
            for i in range(i0, i1):
                if signed:
                    qtile_row_fin(qx, i, w, out, i, oc, K4, sx, sw, corr, n0, *fin)
                else:
                    qtile_row_nonneg_fin(qx, i, w, out, i, oc, K4, sx, sw, corr, n0, *fin)
        return
    _qpanel(qx, w, out, oc, i0, i1, width, K4, sx, sw, corr, n0, signed)  # a partial panel: plain loops
    for i in range(i0, i1):
        o = out[i, oc : oc + width]
        for j in range(oidx.shape[0]):
            xv = x[i, x_off + oidx[j]]
            wj = ow[j, n0 : n0 + width]
            for n in range(width):
                o[n] += xv * wj[n]
        if fuse:
            _epilogue_cols(out, i, out_off, n0, width, b, act, res, res_off, norm, nw, nb)


@njit(cache=CACHE, inline="always")
def _store(out, i, j, acc, sx, si, sw, sj):
    if sx.shape[0] == 0:
        out[i, j] = acc
    else:
        out[i, j] = np.float32(acc) * sw[sj] * sx[si]
