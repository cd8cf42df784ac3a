"""Int8 multi-head self-attention: both products on the int8 linear's register tiles (a prototype).

The float32 kernel (:mod:`.attention`) computes, for sequence b, head h and query row i,

    s_j = scale * (q_i . k_j) + mask_add[b, j],   p = softmax(s),   out_i = sum_j p_j v_j

Here both products run in integers, through :mod:`.qsimd`'s tiles as :func:`.qlinear.qlinear` runs
them, and the softmax stays in float32 (:func:`.simd.softmax_exp_row`):

* Q K^T: each query row's D values are quantized by its own maximum (``_quantize_row``); each key
  by its own, ``kq[j] = rint(k_j / sk[j])``, packed as the panels of an (L, D) weight (keys as
  output columns). The tile's dequantize, ``(acc - corr) * sw * sx``, takes ``sw = scale * sk``,
  and its epilogue adds the mask row as a bias.
* P V: each probability row is quantized by its own maximum; V by column, one scale per head
  dimension over the sequence's keys (a scale per key would not factor out of the sum over keys),
  packed as the panels of a (D, L) weight.

Keys after the last visible one are skipped, as in the float32 kernel. Work: one task per
(sequence, head), dealt to the threads by ``prange``; ``threads`` slices of scratch
(:func:`scratch_shapes`), picked by ``numba.get_thread_id``. Head widths must be a multiple of
:data:`.qsimd.COLS` (twice the float32 lanes: 8, 16 or 32; MobileBERT's 32 is a multiple of each).

Not used by the model yet (no graph op, runner scratch or native export): tests/test_qattention.py
checks it, ``python -m bench qattention`` times it against the float32 kernel.
"""

import numba
import numpy as np
from numba import njit, prange

from .flags import FASTMATH
from .layout import INLIER
from .qlinear import QX_BYTES, QX_DTYPE, _quantize_row
from .qsimd import CACHE, COLS, OFFSET, ROWS, XMAX, float_from_bits, qtile_row_fin, qtile_rows_fin
from .simd import softmax_exp_row


def scratch_shapes(batch: int, seq: int, heads: int, head_dim: int, threads: int) -> dict:
    """{name: (shape, dtype)} of :func:`qattention`'s scratch."""
    pk = -(-seq // COLS)  # key panels
    s4 = -(-seq // 4)  # groups of 4 keys
    return {
        "kq": ((threads, pk, head_dim // 4, 4 * COLS), np.int8),
        "kcorr": ((threads, pk * COLS), np.int32),
        "ksw": ((threads, pk * COLS), np.float32),
        "krow": ((threads, head_dim), np.int8),
        "bias": ((threads, pk * COLS), np.float32),
        "vq": ((threads, head_dim // COLS, s4, 4 * COLS), np.int8),
        "vcorr": ((threads, head_dim), np.int32),
        "vsw": ((threads, head_dim), np.float32),
        "vinv": ((threads, head_dim), np.float32),
        "qx": ((heads, batch * seq, head_dim * QX_BYTES), QX_DTYPE),
        "sx": ((heads, batch * seq), np.float32),
        "scores": ((threads, ROWS, pk * COLS), np.float32),
        "px": ((threads, ROWS, 4 * s4 * QX_BYTES), QX_DTYPE),
        "spx": ((threads, ROWS), np.float32),
        "mask": ((pk * COLS,), np.int32),
    }


def scratch(batch: int, seq: int, heads: int, head_dim: int, threads: int) -> dict:
    """Zeroed scratch arrays (``mask``: every channel an inlier) for :func:`qattention`."""
    out = {
        k: np.zeros(shape, dtype) for k, (shape, dtype) in scratch_shapes(batch, seq, heads, head_dim, threads).items()
    }
    out["mask"][:] = INLIER
    return out


@njit(cache=CACHE, parallel=True, fastmath=FASTMATH)
def qattention(q, q_off, k, k_off, v, v_off, mask_add, starts, heads, head_dim, scale, out, out_off,
               kq, kcorr, ksw, krow, bias, vq, vcorr, vsw, vinv, qx, sx, scores, px, spx, mask):  # fmt: skip
    """The int8 attention (module doc); arguments as :func:`.attention.attention`'s, then the scratch of
    :func:`scratch` in its order. Rows of q, k, v and out as there (``starts``: each sequence's first row)."""
    B, S = mask_add.shape
    D = head_dim
    qbits = q.view(np.int32)
    no_idx = np.zeros(0, np.int64)
    no_w = np.zeros((0, COLS), np.float32)
    no_res = np.zeros((1, 1), np.float32)
    for bh in prange(B * heads):
        b = bh // heads
        h = bh - b * heads
        t = numba.get_thread_id()
        base = starts[b]
        rows = starts[b + 1] - base
        L = _visible_length(mask_add[b])
        PK = (L + COLS - 1) // COLS
        L4 = (L + 3) // 4
        _pack_keys(k, k_off + h * D, base, L, D, scale, kq[t], kcorr[t], ksw[t], krow[t])
        _pack_values(v, v_off + h * D, base, L, D, vq[t], vcorr[t], vsw[t], vinv[t])
        for j in range(PK * COLS):  # the mask as the scores' bias (keys past L: never read)
            bias[t, j] = mask_add[b, j] if j < L else 0.0
        for i in range(base, base + rows):  # this head's query rows
            _quantize_row(q, qbits, i, q_off + h * D, D, D, mask, qx[h], sx[h], True)
        sc = scores[t]
        scbits = sc.view(np.int32)
        # the tiles' epilogues: the scores get the mask row as their bias; the context is stored as it is
        with_mask = (no_res, 0, no_idx, no_w, 1, bias[t], 0, no_res, -1, 0, bias[t], bias[t])
        plain = (no_res, 0, no_idx, no_w, 0, vsw[t], 0, no_res, -1, 0, vsw[t], vsw[t])
        for i0 in range(0, rows, ROWS):
            n = min(ROWS, rows - i0)
            r0 = base + i0
            for p in range(PK):  # scores of n rows against key panel p
                if n == ROWS:
                    qtile_rows_fin(qx[h], r0, kq[t, p], sc, 0, p * COLS, D // 4, sx[h], ksw[t], kcorr[t], p * COLS,
                                   *with_mask)  # fmt: skip
                else:
                    for r in range(n):
                        qtile_row_fin(qx[h], r0 + r, kq[t, p], sc, r, p * COLS, D // 4, sx[h], ksw[t], kcorr[t],
                                      p * COLS, *with_mask)  # fmt: skip
            for r in range(n):
                softmax_exp_row(sc[r], L, _row_max(scbits[r], L))
                _quantize_row(sc, scbits, r, 0, L, 4 * L4, mask, px[t], spx[t], True)
            for p in range(D // COLS):  # context: n rows of P against V's panel p
                oc = out_off + h * D + p * COLS
                if n == ROWS:
                    qtile_rows_fin(px[t], 0, vq[t, p], out, r0, oc, L4, spx[t], vsw[t], vcorr[t], p * COLS, *plain)
                else:
                    for r in range(n):
                        qtile_row_fin(px[t], r, vq[t, p], out, r0 + r, oc, L4, spx[t], vsw[t], vcorr[t], p * COLS,
                                      *plain)  # fmt: skip


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


@njit(cache=CACHE, inline="always")
def _visible_length(mask_row):
    """1 + the index of the last key the mask leaves visible (all of them if none is)."""
    for j in range(mask_row.shape[0] - 1, -1, -1):
        if mask_row[j] == 0.0:
            return j + 1
    return mask_row.shape[0]


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


@njit(cache=CACHE, fastmath=FASTMATH, inline="always")
def _pack_values(v, col, base, L, D, vq, vcorr, vsw, vinv):
    """Values base .. base + L (columns col .. col + D) quantized per column, as the panels of a (D, L)
    weight (``vq[p, g, 4c + t]`` = column p*COLS + c, key 4g + t; zero past L), their offset corrections
    and scales. Row by row (V's rows are contiguous): the columns' maxima, then the values. ``vinv``:
    (D,) float32 scratch."""
    L4 = (L + 3) // 4
    for d in range(D):
        vsw[d] = 0.0
        vcorr[d] = 0
    for j in range(L):
        x = v[base + j, col : col + D]
        for d in range(D):
            vsw[d] = max(vsw[d], abs(x[d]))
    for d in range(D):
        s = vsw[d] / np.float32(XMAX) if vsw[d] > 0 else np.float32(1.0)
        vsw[d] = s
        vinv[d] = np.float32(1.0) / s
    for j in range(4 * L4):
        g = j // 4
        t = j - 4 * g
        if j < L:
            x = v[base + j, col : col + D]
            for d in range(D):
                qv = np.int32(min(max(np.rint(x[d] * vinv[d]), -XMAX), XMAX))
                p = d // COLS
                vq[p, g, 4 * (d - p * COLS) + t] = qv
                vcorr[d] += qv
        else:
            for d in range(D):
                p = d // COLS
                vq[p, g, 4 * (d - p * COLS) + t] = 0
    for d in range(D):
        vcorr[d] *= OFFSET
