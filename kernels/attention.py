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
softmax in place (:func:`.simd.softmax_row`), context = score rows x V, where the
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

import numba
from numba import njit, prange

from .flags import FASTMATH
from .simd import COLS, ROWS, softmax_row, tile_row, tile_rows


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
        softmax_row(sc[r], S, mask_row, scale)
