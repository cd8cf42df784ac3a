"""Fused multi-head self-attention over token-major buffers.

For sequence b, head h (head width D, columns h*D ..) and query row i:

    s_j   = scale * (q_i . k_j) + mask_add[b, j]
    p_j   = exp(s_j - max_j s) / sum_j exp(s_j - max_j s)
    out_i = sum_j p_j v_j

Q, K and V are column windows of token-major buffers (row b*S + s) and the
context goes straight into the token-major output layout. Keys after the
last visible one (right padding) are not computed at all: they get
probability 0 (Hugging Face's float32 softmax underflows to 0 there too). The
work is split
into tasks of ``ROWS`` query rows of one (batch, head); a task holds only its
block of scores, in the calling thread's slice of ``scores``, so no (S, S)
matrix per head is ever materialised.

Both products run on the register-tiled micro-kernel of :mod:`.simd`, which
multiplies rows by (K, COLS) panels. So each (batch, head) first packs its
keys as panels of K^T (``kp``: key j of panel p at column j - p*COLS),
zero-padded to whole panels. Then per task: scores = Q rows x K^T panels,
softmax in place (a vectorisable exp), context = score rows x V, where the
values need no packing: COLS columns of V's token-major rows already are such
a panel, read in place.

``mask_add`` is 0 for visible keys and a large negative number (float32 min,
as Hugging Face uses) for padding. With ``want_probs`` the probabilities are
also written to ``probs[b, h, i, :]``.

Scratch (see :func:`scratch_shapes`): ``kp`` (B*H*ceil(S/COLS), D, COLS) and
``scores`` (threads, ROWS, ceil(S/COLS)*COLS)
with ``threads`` at least Numba's thread count (``numba.get_thread_id``
picks the slice).
"""

import math

import numba
import numpy as np
from numba import njit, prange

from .flags import FASTMATH
from .simd import COLS, ROWS, pow2_int, row_max, tile_row, tile_rows


def scratch_shapes(batch: int, seq: int, heads: int, head_dim: int, threads: int):
    """Shapes of (kp, scores) for :func:`attention`."""
    pk = -(-seq // COLS)
    return (batch * heads * pk, head_dim, COLS), (threads, ROWS, pk * COLS)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def attention(q, q_off, k, k_off, v, v_off, mask_add, heads, head_dim, scale,
              out, out_off, probs, want_probs, kp, scores):
    B, S = mask_add.shape
    D = head_dim
    PK = (S + COLS - 1) // COLS
    PV = (D + COLS - 1) // COLS
    for bh in prange(B * heads):
        _pack_keys(k, k_off, bh, heads, S, D, PK, kp)
    blocks = (S + ROWS - 1) // ROWS
    for task in prange(B * heads * blocks):
        bh = task // blocks
        i0 = (task - bh * blocks) * ROWS
        n = min(ROWS, S - i0)
        b = bh // heads
        h = bh - b * heads
        sc = scores[numba.get_thread_id()]
        # keys beyond the last visible one (right padding) are skipped: their
        # probability is exactly 0, and a padded row computes exactly what it
        # computes alone (same trip counts, same rounding)
        L = _visible_length(mask_add[b])
        # scores[r, j] = q[b*S + i0 + r, head h] . k[b*S + j, head h]
        for p in range((L + COLS - 1) // COLS):
            if n == ROWS:
                tile_rows(q, b * S + i0, q_off + h * D, kp[bh * PK + p], 0, sc, 0, p * COLS, D)
            else:
                for r in range(n):
                    tile_row(q, b * S + i0 + r, q_off + h * D, kp[bh * PK + p], 0, sc, r, p * COLS, D)
        _softmax_rows(sc, n, L, mask_add[b], scale)
        if want_probs:
            for r in range(n):
                for j in range(L):
                    probs[b, h, i0 + r, j] = sc[r, j]
                for j in range(L, S):
                    probs[b, h, i0 + r, j] = 0.0
        # out[b*S + i0 + r, head h] = scores[r, :L] . V[b*S : b*S + L, head h]
        vb = v[b * S:b * S + L]
        for p in range(PV):
            width = min(COLS, D - p * COLS)
            oc = out_off + h * D + p * COLS
            vc = v_off + h * D + p * COLS
            if width == COLS and n == ROWS:
                tile_rows(sc, 0, 0, vb, vc, out, b * S + i0, oc, L)
            elif width == COLS:
                for r in range(n):
                    tile_row(sc, r, 0, vb, vc, out, b * S + i0 + r, oc, L)
            else:
                for r in range(n):
                    o = out[b * S + i0 + r, oc:oc + width]
                    o[:] = 0.0
                    for j in range(L):
                        pj = sc[r, j]
                        for c in range(width):
                            o[c] += pj * vb[j, vc + c]


@njit(cache=True, inline="always")
def _visible_length(mask_row):
    """1 + the index of the last key the mask leaves visible (all of them if none is)."""
    for j in range(mask_row.shape[0] - 1, -1, -1):
        if mask_row[j] == 0.0:
            return j + 1
    return mask_row.shape[0]


@njit(cache=True, inline="always")
def _pack_keys(k, k_off, bh, heads, S, D, PK, kp):
    """Keys of (batch, head) bh as K^T panels (zero-padded)."""
    b = bh // heads
    h = bh - b * heads
    for p in range(PK):
        panel = kp[bh * PK + p]
        panel[:, :] = 0.0
        for c in range(min(COLS, S - p * COLS)):
            row = b * S + p * COLS + c
            for d in range(D):
                panel[d, c] = k[row, k_off + h * D + d]


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _softmax_rows(sc, n, S, mask_row, scale):
    for r in range(n):
        row = sc[r, :S]
        m = _scale_mask_max(row, mask_row, scale)
        total = np.float32(0.0)
        for j in range(S):
            e = exp_nonpositive(row[j] - m)
            row[j] = e
            total += e
        inv = np.float32(1.0) / total
        for j in range(S):
            row[j] *= inv


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _scale_mask_max(row, mask_row, scale):
    """row = row * scale + mask_row, in place; return the max."""
    for j in range(row.shape[0]):
        row[j] = row[j] * scale + mask_row[j]
    return row_max(row)


# exp(x) for x <= 0 in float32, written so that a loop over it vectorises:
# x = (n + f) / log2(e) with n an integer and |f| <= 1/2; 2**f by its Taylor
# polynomial (relative error < 2e-7 on that interval), 2**n from the exponent
# bits. Below -87 (where float32 exp underflows to denormals) the result is
# ~1e-38 instead of a denormal or 0: probabilities of masked keys.
_LN2 = math.log(2.0)
_LOG2E = np.float32(1.0 / _LN2)
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = (np.float32(_LN2 ** i / math.factorial(i)) for i in range(7))


@njit(cache=True, fastmath=FASTMATH, inline="always")
def exp_nonpositive(x):
    t = max(x, np.float32(-87.0)) * _LOG2E
    n = np.float32(math.floor(t + np.float32(0.5)))
    f = t - n
    p = ((((((_P6 * f + _P5) * f + _P4) * f + _P3) * f + _P2) * f + _P1) * f + _P0)
    return p * pow2_int(np.int32(n))
