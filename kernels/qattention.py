"""Attention with its scores in int8: Q K^T on the int8 linear's register tiles, the rest in float32.

The float32 kernel (:mod:`.attention`) computes, for sequence b, head h and query row i,

    s_j = scale * (q_i . k_j) + mask_add[b, j],   p = softmax(s),   out_i = sum_j p_j v_j

Here the scores' product runs in integers, through :mod:`.qsimd`'s tiles as :func:`.qlinear.qlinear`
runs them: each query row's D values are quantized by their own maximum (``_quantize_row``), each
key by its own, ``kq[j] = rint(k_j / sk[j])``, packed as the panels of an (L, D) weight (keys as
output columns). The tile's dequantize, ``(acc - corr) * sw * sx``, takes ``sw = scale * sk``, and
its epilogue adds the mask row as a bias. The softmax (:func:`.simd.softmax_exp_row`, after an
integer row maximum) and the context, P V, run in float32 as in the float32 kernel, on its tile.

Why not P V in int8 too: a prototype did it (P quantized per row, V per column) and took 0.69x /
0.71x the float32 kernel's time at 384 tokens (one / two threads) against 0.83x / 0.81x for this
one, but on the real all-MiniLM-L6-v2 it doubled the int8 model's error against float32 on long
texts (hidden states 5-10% off instead of 3%, mean-pooled cosine 0.990-0.996 instead of 0.998):
a probability row quantized by its maximum loses its small entries, which together carry much of
its mass. With the scores alone in int8 that error stays the int8 linears' (``python -m bench
qattention``, bench/results/qattention.md).

It pays only over long sequences (a (sequence, head) packs its keys once and its query rows are
quantized per block), and only on the int8 variants with a byte dot product measured here
(:func:`.layout.int8_scores`: vnni, amx; on maddubs it was slower). There an int8 model runs the
sequences of at least ``long_from`` visible tokens here (:data:`.layout.INT8_ATTENTION_FROM`) and
the others on the float32 kernel's own tasks, so their outputs are that kernel's bit for bit;
elsewhere it binds the float32 kernel itself. Keys after the last visible one are skipped, as
there. Work: one task per (sequence, head), dealt to ``threads`` runs of near-equal cost; per
thread, the float32 kernel's score block and a row of :func:`scratch` each, picked by
``numba.get_thread_id``. Head widths must be a multiple of :data:`.qsimd.COLS` (twice the float32
lanes: 8, 16 or 32; MobileBERT's 32 is a multiple of each).

tests/test_qattention.py checks it; ``python -m bench qattention`` times it against the float32
kernel and measures its error on real weights.
"""

import numba
import numpy as np
from numba import njit, prange

from .attention import TASK_COST, _visible_length, batch_cost
from .attention import _pack_keys as _pack_float_keys
from .attention import _task as _float_task
from .flags import FASTMATH
from .qlinear import QX_BYTES, QX_DTYPE, _quantize_row
from .qsimd import CACHE, COLS, OFFSET, ROWS, XMAX, float_from_bits, qtile_row_fin, qtile_rows_fin
from .simd import ROWS as FROWS
from .simd import softmax_exp_row, tile_rows_upto


def scratch_shapes(seq: int, head_dim: int, threads: int) -> tuple[tuple, tuple]:
    """Shapes of :func:`qattention`'s own scratch, (bytes, floats): a row of each per thread, which the
    kernel carves (:func:`_carve`; :func:`mbengine.kernels.layout.qattention_scratch` is the same count
    without Numba)."""
    pk = -(-seq // COLS)
    return (threads, pk * COLS * head_dim + head_dim + ROWS * head_dim * QX_BYTES), (threads, 3 * pk * COLS)


def scratch(seq: int, head_dim: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed scratch for :func:`qattention` (the bytes in the quantized activations' storage type)."""
    (b, f) = scratch_shapes(seq, head_dim, threads)
    return np.zeros(b, QX_DTYPE), np.zeros(f, np.float32)


@njit(cache=CACHE, inline="always")
def _carve(bs, fs, S, D):
    """One thread's scratch rows as (kq, krow, qq, kcorr, ksw, bias): packed keys, one key's values, the
    block's quantized query rows; the keys' offset corrections, scales and the mask row."""
    n = (S + COLS - 1) // COLS * COLS
    b8 = bs.view(np.int8)
    kq = b8[: n * D].reshape((n // COLS, D // 4, 4 * COLS))
    krow = b8[n * D : n * D + D]
    qq = bs[n * D + D : n * D + D + ROWS * D * QX_BYTES].reshape((ROWS, D * QX_BYTES))
    return kq, krow, qq, fs[:n].view(np.int32), fs[n : 2 * n], fs[2 * n : 3 * n]


@njit(cache=CACHE, parallel=True, fastmath=FASTMATH)
def qattention(q, q_off, k, k_off, v, v_off, mask_add, starts, heads, head_dim, scale, out, out_off, threads,
               probs, want_probs, kp, scores, long_from, bscratch, fscratch):  # fmt: skip
    """The scores in int8 for the sequences of at least ``long_from`` visible keys, the float32 kernel's
    tasks for the others (module doc): arguments as :func:`.attention.attention`'s (``kp``, ``scores``: its
    scratch), then ``long_from`` and the scratch of :func:`scratch`.

    The (sequence, head) tasks are dealt to ``threads`` runs of near-equal cost, rows x (keys +
    :data:`TASK_COST`), as the float32 kernel deals its tasks (a ragged batch's long rows cost more)."""
    B, S = mask_add.shape
    PK = (S + COLS - 1) // COLS
    kp_rows = kp.reshape((-1, COLS))
    total = batch_cost(mask_add, starts, heads)
    runs = max(threads, 1)
    for run in prange(runs):
        lo = total * run / runs
        hi = total * (run + 1) / runs
        t = numba.get_thread_id()
        done = 0.0
        for b in range(B):
            rows = starts[b + 1] - starts[b]
            L = _visible_length(mask_add[b])
            for h in range(heads):
                cost = rows * (L + TASK_COST)
                if lo <= done + 0.5 * cost < hi:
                    if L >= long_from:
                        _task(q, q_off, k, k_off, v, v_off, mask_add[b], starts[b], rows, L, b, h, head_dim, scale,
                              out, out_off, probs, want_probs, bscratch[t], fscratch[t], scores[t], S)  # fmt: skip
                    else:  # the float32 kernel's work for this (sequence, head)
                        bh = b * heads + h
                        _pack_float_keys(k, k_off, bh, heads, starts[b], L, head_dim, PK, kp)
                        for i0 in range(0, rows, FROWS):
                            _float_task(q, q_off, v, v_off, mask_add[b], starts[b], b, h, i0, min(FROWS, rows - i0),
                                        L, heads, head_dim, S, PK, scale, out, out_off, probs, want_probs, kp,
                                        kp_rows, scores[t])  # fmt: skip
                done += cost


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _task(q, q_off, k, k_off, v, v_off, mrow, base, rows, L, b, h, D, scale, out, out_off, probs, want_probs,
          bs, fs, sc, S):  # fmt: skip
    """Sequence b (its rows from ``base``), head h, over its L visible keys, ROWS query rows at a time."""
    kq, krow, qq, kcorr, ksw, bias = _carve(bs, fs, S, D)
    PK = (L + COLS - 1) // COLS
    _pack_keys(k, k_off + h * D, base, L, D, scale, kq, kcorr, ksw, krow)
    for j in range(PK * COLS):  # the mask as the scores' bias (keys past L: never read)
        bias[j] = mrow[j] if j < L else 0.0
    qbits = q.view(np.int32)
    scbits = sc.view(np.int32)
    sq = np.empty(ROWS, np.float32)  # the block's query scales
    inliers = np.zeros(0, np.int32)  # (_quantize_row's channel mask: not read for rows without outliers)
    # the score tile's epilogue: the mask row as its bias
    with_mask = (sc, 0, np.zeros(0, np.int64), np.zeros((0, COLS), np.float32), 1, bias, 0, sc, -1, 0, bias, bias)
    qc = q_off + h * D
    vb = v[base : base + L]
    for i0 in range(0, rows, ROWS):
        n = min(ROWS, rows - i0)
        r0 = base + i0
        qb, qbb = q[r0 : r0 + n], qbits[r0 : r0 + n]
        for r in range(n):  # this block's query rows, quantized (row r of qq: query row r0 + r)
            _quantize_row(qb, qbb, r, qc, D, D, inliers, qq, sq, True)
        for p in range(PK):  # scores of n rows against key panel p
            if n == ROWS:
                qtile_rows_fin(qq, 0, kq[p], sc, 0, p * COLS, D // 4, sq, ksw, kcorr, p * COLS, *with_mask)
            else:
                for r in range(n):
                    qtile_row_fin(qq, r, kq[p], sc, r, p * COLS, D // 4, sq, ksw, kcorr, p * COLS, *with_mask)
        for r in range(n):
            softmax_exp_row(sc[r], L, _row_max(scbits[r], L))
            if want_probs:
                for j in range(L):
                    probs[b, h, i0 + r, j] = sc[r, j]
                for j in range(L, S):
                    probs[b, h, i0 + r, j] = 0.0
        for p in range(D // COLS):  # context: the n probability rows against V's columns, in float32
            tile_rows_upto(sc, 0, 0, vb, v_off + h * D + p * COLS, out, r0, out_off + h * D + p * COLS, L, n)


@njit(cache=CACHE, inline="always")
def _row_max(bits, L):
    """The maximum of the first L floats whose bit patterns are ``bits`` (int32), as a float32.

    Compared as integers, with the bits of negative floats flipped below the sign (then integer order
    is float order): a float maximum does not vectorise without fast-math's no-NaN, and this one did
    not (~0.8 us per 384-wide row, Zen 4)."""
    top = np.int32(-(2**31))
    for j in range(L):
        b = bits[j]
        top = max(top, np.int32(b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF))))
    return float_from_bits(top ^ ((top >> np.int32(31)) & np.int32(0x7FFFFFFF)))


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _pack_keys(k, col, base, L, D, scale, kq, kcorr, ksw, row):
    """Keys base .. base + L (columns col .. col + D) quantized per key, as the panels of an (L, D) weight
    (``kq[p, g, 4c + t]`` = key p*COLS + c, input 4g + t; zero past L), their offset corrections and
    scales (times ``scale``). ``row``: (D,) int8 scratch (a key's values, quantized in one vector loop)."""
    PK = (L + COLS - 1) // COLS
    words = kq.view(np.int32)  # words[p, g, c]: key p*COLS + c's inputs 4g .. 4g + 3
    row_words = row.view(np.int32)
    for j in range(PK * COLS):
        p = j // COLS
        c = j - p * COLS
        total = 0
        if j < L:
            x = k[base + j, col : col + D]
            amax = np.float32(0.0)
            for d in range(D):
                amax = max(amax, abs(x[d]))
            s = amax / np.float32(XMAX) if amax > 0 else np.float32(1.0)
            inv = np.float32(1.0) / s
            for d in range(D):
                row[d] = np.int8(min(max(np.rint(x[d] * inv), -XMAX), XMAX))
            for d in range(D):
                total += row[d]
            for g in range(D // 4):
                words[p, g, c] = row_words[g]
            ksw[j] = s * scale
        else:
            for g in range(D // 4):
                words[p, g, c] = 0
            ksw[j] = 0.0
        kcorr[j] = OFFSET * total
