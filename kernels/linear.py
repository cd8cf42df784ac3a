"""Float32 linear layer with a fused epilogue.

    out[i, o0 + n] = norm( act( sum_k x[i, x0 + k] * w[n, k] + b[n] ) + res[i, r0 + n] )

``w`` is stored as Hugging Face stores ``nn.Linear.weight``: (N, K), one row
per output, so both operands are contiguous along K and every output is a dot
product. Inputs and outputs are column windows of larger row-major buffers,
given as (buffer, column offset): the graph packs several tensors side by side
in one buffer.

Speed comes from register blocking: each step computes a 4-row x 4-output tile
with sixteen scalar float32 accumulators and K innermost. With reassociation
allowed (``fastmath``) LLVM vectorises the K loop, keeping all sixteen partial
sums in vector registers, and reduces them once at the end. Accumulators held
in an array instead stay in memory and run at a quarter of the speed (see
NOTES-kernels.md). Rows are split over threads in blocks of four.

Epilogue order is bias, activation, residual, norm, applied to each row right
after its tile row is finished, while it is still in cache. ``res_off < 0``
means no residual. ``norm``: 0 none, 1 NoNorm (``y * nw + nb``), 2 LayerNorm
over the N outputs of the row (``eps``, float64 statistics).
"""

import numpy as np
from numba import njit, prange

from .activations import apply_activation
from .flags import FASTMATH

NORM_NONE = 0
NORM_NONORM = 1
NORM_LAYERNORM = 2

ROWS = 4  # rows per register tile (and per parallel task)


WIDE = 1024  # outputs above which the weight is split into column chunks
CHUNK = 64  # outputs per chunk: 64 x K floats stay in L2 while all rows pass


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def linear(x, x_off, w, b, act, res, res_off, norm, nw, nb, eps, out, out_off):
    M = x.shape[0]
    N, K = w.shape
    blocks = (M + ROWS - 1) // ROWS
    if N <= WIDE:
        # one task per block of rows; the epilogue runs while the rows are in cache
        for blk in prange(blocks):
            i0 = blk * ROWS
            _tile(x, x_off, w, out, out_off, i0, min(i0 + ROWS, M), 0, N, K)
            for i in range(i0, min(i0 + ROWS, M)):
                _epilogue_row(out, i, out_off, N, b, act, res, res_off, norm, nw, nb, eps)
    else:
        # wide outputs (the vocabulary projection): tasks over (column chunk,
        # row block), chunk-major, so each weight chunk is read from memory once
        chunks = (N + CHUNK - 1) // CHUNK
        for t in prange(chunks * blocks):
            c = t // blocks
            i0 = (t - c * blocks) * ROWS
            _tile(x, x_off, w, out, out_off, i0, min(i0 + ROWS, M), c * CHUNK, min(c * CHUNK + CHUNK, N), K)
        for i in prange(M):
            _epilogue_row(out, i, out_off, N, b, act, res, res_off, norm, nw, nb, eps)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _tile(x, x_off, w, out, out_off, i0, i1, n0, n1, K):
    """out[i0:i1, out_off + n0 : out_off + n1] = x rows . w rows, no epilogue."""
    if i1 - i0 == ROWS:
        _tile_rows4(x, x_off, w, out, out_off, i0, n0, n1, K)
    else:
        for i in range(i0, i1):
            _tile_row1(x, x_off, w, out, out_off, i, n0, n1, K)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _tile_rows4(x, x_off, w, out, out_off, i0, n0, N, K):
    x0 = x[i0, x_off:x_off + K]
    x1 = x[i0 + 1, x_off:x_off + K]
    x2 = x[i0 + 2, x_off:x_off + K]
    x3 = x[i0 + 3, x_off:x_off + K]
    n = n0
    while n + 4 <= N:
        w0 = w[n]
        w1 = w[n + 1]
        w2 = w[n + 2]
        w3 = w[n + 3]
        a00 = a01 = a02 = a03 = np.float32(0.0)
        a10 = a11 = a12 = a13 = np.float32(0.0)
        a20 = a21 = a22 = a23 = np.float32(0.0)
        a30 = a31 = a32 = a33 = np.float32(0.0)
        for k in range(K):
            v0 = x0[k]
            v1 = x1[k]
            v2 = x2[k]
            v3 = x3[k]
            c0 = w0[k]
            c1 = w1[k]
            c2 = w2[k]
            c3 = w3[k]
            a00 += v0 * c0
            a01 += v0 * c1
            a02 += v0 * c2
            a03 += v0 * c3
            a10 += v1 * c0
            a11 += v1 * c1
            a12 += v1 * c2
            a13 += v1 * c3
            a20 += v2 * c0
            a21 += v2 * c1
            a22 += v2 * c2
            a23 += v2 * c3
            a30 += v3 * c0
            a31 += v3 * c1
            a32 += v3 * c2
            a33 += v3 * c3
        o = out_off + n
        out[i0, o] = a00
        out[i0, o + 1] = a01
        out[i0, o + 2] = a02
        out[i0, o + 3] = a03
        out[i0 + 1, o] = a10
        out[i0 + 1, o + 1] = a11
        out[i0 + 1, o + 2] = a12
        out[i0 + 1, o + 3] = a13
        out[i0 + 2, o] = a20
        out[i0 + 2, o + 1] = a21
        out[i0 + 2, o + 2] = a22
        out[i0 + 2, o + 3] = a23
        out[i0 + 3, o] = a30
        out[i0 + 3, o + 1] = a31
        out[i0 + 3, o + 2] = a32
        out[i0 + 3, o + 3] = a33
        n += 4
    while n < N:  # leftover outputs: 4 rows x 1 output
        wn = w[n]
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for k in range(K):
            c = wn[k]
            a0 += x0[k] * c
            a1 += x1[k] * c
            a2 += x2[k] * c
            a3 += x3[k] * c
        out[i0, out_off + n] = a0
        out[i0 + 1, out_off + n] = a1
        out[i0 + 2, out_off + n] = a2
        out[i0 + 3, out_off + n] = a3
        n += 1


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _tile_row1(x, x_off, w, out, out_off, i, n0, N, K):
    xi = x[i, x_off:x_off + K]
    n = n0
    while n + 4 <= N:
        w0 = w[n]
        w1 = w[n + 1]
        w2 = w[n + 2]
        w3 = w[n + 3]
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for k in range(K):
            v = xi[k]
            a0 += v * w0[k]
            a1 += v * w1[k]
            a2 += v * w2[k]
            a3 += v * w3[k]
        out[i, out_off + n] = a0
        out[i, out_off + n + 1] = a1
        out[i, out_off + n + 2] = a2
        out[i, out_off + n + 3] = a3
        n += 4
    while n < N:
        wn = w[n]
        a = np.float32(0.0)
        for k in range(K):
            a += xi[k] * wn[k]
        out[i, out_off + n] = a
        n += 1


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _epilogue_row(out, i, out_off, N, b, act, res, res_off, norm, nw, nb, eps):
    """Apply bias, activation, residual and norm to out[i, out_off:out_off+N].

    Each step is its own loop over the row, with the choice made outside it,
    so the common cases (no activation, relu, NoNorm) vectorise.
    """
    o = out[i, out_off:out_off + N]
    if act == 0:
        for n in range(N):
            o[n] += b[n]
    elif act == 1:
        for n in range(N):
            o[n] = max(o[n] + b[n], np.float32(0.0))
    else:
        for n in range(N):
            o[n] = apply_activation(o[n] + b[n], act)
    if res_off >= 0:
        r = res[i, res_off:res_off + N]
        for n in range(N):
            o[n] += r[n]
    if norm == NORM_NONORM:
        for n in range(N):
            o[n] = o[n] * nw[n] + nb[n]
    elif norm == NORM_LAYERNORM:
        _layernorm_row(out, i, out_off, N, nw, nb, eps)


@njit(cache=True, inline="always")
def _layernorm_row(a, i, off, N, nw, nb, eps):
    # two-pass statistics in float64: activations reach ~1e7
    s = 0.0
    for n in range(N):
        s += a[i, off + n]
    mean = s / N
    ss = 0.0
    for n in range(N):
        d = a[i, off + n] - mean
        ss += d * d
    inv = 1.0 / (ss / N + eps) ** 0.5
    for n in range(N):
        a[i, off + n] = (a[i, off + n] - mean) * inv * nw[n] + nb[n]
