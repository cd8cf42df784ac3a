"""Fused multi-head self-attention over token-major buffers.

For sequence b, head h (head width D, columns h*D ..) and query row i:

    s_j   = scale * (q_i . k_j) + mask_add[b, j]
    p_j   = exp(s_j - max_j s) / sum_j exp(s_j - max_j s)
    out_i = sum_j p_j v_j

Q, K and V are column windows of token-major buffers (row b*S + s) and the
context goes straight into the token-major output layout: no transposes of
the activations, no (S, S) matrix per head. The work is split into tasks of
``ROWS_PER_TASK`` query rows of one (batch, head); each task holds only its
block of scores, in the calling thread's slice of ``scratch``.

Both products use the register-tiled dot form of the linear kernel: scores
are dot products of Q rows with K rows (contiguous along D); for P·V the
head's V is first transposed into ``vt`` (D, S) so every output is again a
dot product along contiguous memory. ``mask_add`` is 0 for visible keys and a
large negative number (float32 min, as Hugging Face uses) for padding. With
``want_probs`` the probabilities are also written to ``probs[b, h, i, :]``.

Scratch: ``vt`` (batch*heads, D, S) and ``scores`` (threads, ROWS_PER_TASK, S),
where ``threads`` is at least Numba's thread count (``numba.get_thread_id``
picks the row).
"""

import math

import numba
import numpy as np
from numba import njit, prange

from .flags import FASTMATH

ROWS_PER_TASK = 16


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def attention(q, q_off, k, k_off, v, v_off, mask_add, heads, head_dim, scale,
              out, out_off, probs, want_probs, vt, scores):
    B, S = mask_add.shape
    D = head_dim
    # V of every (batch, head), transposed: vt[bh, d, j] = v[b*S + j, v_off + h*D + d]
    for bh in prange(B * heads):
        b = bh // heads
        c0 = v_off + (bh - b * heads) * D
        for j in range(S):
            for d in range(D):
                vt[bh, d, j] = v[b * S + j, c0 + d]
    blocks = (S + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for task in prange(B * heads * blocks):
        bh = task // blocks
        i0 = (task - bh * blocks) * ROWS_PER_TASK
        i1 = min(i0 + ROWS_PER_TASK, S)
        b = bh // heads
        h = bh - b * heads
        sc = scores[numba.get_thread_id()]
        _scores(q, q_off + h * D, k, k_off + h * D, b * S, i0, i1, S, D, sc)
        _softmax_rows(sc, i1 - i0, S, mask_add[b], scale)
        if want_probs:
            for r in range(i1 - i0):
                for j in range(S):
                    probs[b, h, i0 + r, j] = sc[r, j]
        _context(sc, vt[bh], out, out_off + h * D, b * S + i0, i1 - i0, S, D)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _scores(q, qc, k, kc, row0, i0, i1, S, D, sc):
    """sc[r, j] = q[row0 + i0 + r, qc:qc+D] . k[row0 + j, kc:kc+D] for r < i1 - i0."""
    r = 0
    n = i1 - i0
    while r < n:
        rows = min(4, n - r)
        qa = q[row0 + i0 + r, qc:qc + D]
        qb = q[row0 + i0 + r + min(1, rows - 1), qc:qc + D]
        qcc = q[row0 + i0 + r + min(2, rows - 1), qc:qc + D]
        qd = q[row0 + i0 + r + min(3, rows - 1), qc:qc + D]
        j = 0
        while j + 2 <= S:
            k0 = k[row0 + j, kc:kc + D]
            k1 = k[row0 + j + 1, kc:kc + D]
            a00 = a01 = a10 = a11 = np.float32(0.0)
            a20 = a21 = a30 = a31 = np.float32(0.0)
            for d in range(D):
                x0 = k0[d]
                x1 = k1[d]
                a00 += qa[d] * x0
                a01 += qa[d] * x1
                a10 += qb[d] * x0
                a11 += qb[d] * x1
                a20 += qcc[d] * x0
                a21 += qcc[d] * x1
                a30 += qd[d] * x0
                a31 += qd[d] * x1
            # rows beyond n duplicate the last real row; their results are dropped
            sc[r, j] = a00
            sc[r, j + 1] = a01
            if rows > 1:
                sc[r + 1, j] = a10
                sc[r + 1, j + 1] = a11
            if rows > 2:
                sc[r + 2, j] = a20
                sc[r + 2, j + 1] = a21
            if rows > 3:
                sc[r + 3, j] = a30
                sc[r + 3, j + 1] = a31
            j += 2
        if j < S:
            kl = k[row0 + j, kc:kc + D]
            for rr in range(rows):
                qr = q[row0 + i0 + r + rr, qc:qc + D]
                a = np.float32(0.0)
                for d in range(D):
                    a += qr[d] * kl[d]
                sc[r + rr, j] = a
        r += 4


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _softmax_rows(sc, n, S, mask_row, scale):
    for r in range(n):
        row = sc[r, :S]
        m = np.float32(-np.inf)
        for j in range(S):
            s = row[j] * scale + mask_row[j]
            row[j] = s
            m = max(m, s)
        total = np.float32(0.0)
        for j in range(S):
            e = exp_nonpositive(row[j] - m)
            row[j] = e
            total += e
        inv = np.float32(1.0) / total
        for j in range(S):
            row[j] *= inv


# exp(x) for x <= 0 in float32, written so that a loop over it vectorises:
# x = (n + f) / log2(e) with n an integer and |f| <= 1/2; 2**f by its Taylor
# polynomial (relative error < 2e-7 on that interval), 2**n from a table.
# Below -87 (where float32 exp underflows to denormals) the result is ~0.
_LN2 = math.log(2.0)
_LOG2E = np.float32(1.0 / _LN2)
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = (np.float32(_LN2 ** i / math.factorial(i)) for i in range(7))
_POW2_NEG = np.array([2.0 ** -i for i in range(128)], np.float32)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def exp_nonpositive(x):
    t = max(x, np.float32(-87.0)) * _LOG2E
    n = np.float32(math.floor(t + np.float32(0.5)))
    f = t - n
    p = ((((((_P6 * f + _P5) * f + _P4) * f + _P3) * f + _P2) * f + _P1) * f + _P0)
    return p * _POW2_NEG[int(-n)]


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _context(p, vt, out, oc, orow, n, S, D):
    """out[orow + r, oc + d] = p[r, :S] . vt[d, :S] for r < n, d < D (4 x 4 register tiles)."""
    r = 0
    while r < n:
        rows = min(4, n - r)
        p0 = p[r, :S]
        p1 = p[r + min(1, rows - 1), :S]
        p2 = p[r + min(2, rows - 1), :S]
        p3 = p[r + min(3, rows - 1), :S]
        d = 0
        while d + 4 <= D:
            v0 = vt[d, :S]
            v1 = vt[d + 1, :S]
            v2 = vt[d + 2, :S]
            v3 = vt[d + 3, :S]
            a00 = a01 = a02 = a03 = np.float32(0.0)
            a10 = a11 = a12 = a13 = np.float32(0.0)
            a20 = a21 = a22 = a23 = np.float32(0.0)
            a30 = a31 = a32 = a33 = np.float32(0.0)
            for j in range(S):
                x0 = p0[j]
                x1 = p1[j]
                x2 = p2[j]
                x3 = p3[j]
                a00 += x0 * v0[j]
                a01 += x0 * v1[j]
                a02 += x0 * v2[j]
                a03 += x0 * v3[j]
                a10 += x1 * v0[j]
                a11 += x1 * v1[j]
                a12 += x1 * v2[j]
                a13 += x1 * v3[j]
                a20 += x2 * v0[j]
                a21 += x2 * v1[j]
                a22 += x2 * v2[j]
                a23 += x2 * v3[j]
                a30 += x3 * v0[j]
                a31 += x3 * v1[j]
                a32 += x3 * v2[j]
                a33 += x3 * v3[j]
            o = oc + d
            out[orow + r, o] = a00
            out[orow + r, o + 1] = a01
            out[orow + r, o + 2] = a02
            out[orow + r, o + 3] = a03
            if rows > 1:
                out[orow + r + 1, o] = a10
                out[orow + r + 1, o + 1] = a11
                out[orow + r + 1, o + 2] = a12
                out[orow + r + 1, o + 3] = a13
            if rows > 2:
                out[orow + r + 2, o] = a20
                out[orow + r + 2, o + 1] = a21
                out[orow + r + 2, o + 2] = a22
                out[orow + r + 2, o + 3] = a23
            if rows > 3:
                out[orow + r + 3, o] = a30
                out[orow + r + 3, o + 1] = a31
                out[orow + r + 3, o + 2] = a32
                out[orow + r + 3, o + 3] = a33
            d += 4
        while d < D:
            vd = vt[d, :S]
            for rr in range(rows):
                pr = p[r + rr, :S]
                a = np.float32(0.0)
                for j in range(S):
                    a += pr[j] * vd[j]
                out[orow + r + rr, oc + d] = a
            d += 1
        r += 4
