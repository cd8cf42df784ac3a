"""Fused multi-head self-attention over token-major buffers.

For sequence b, head h (head width D, columns h*D ..) and query row i:

    s_j   = scale * (q_i . k_j) + mask_add[b, j]
    p_j   = exp(s_j - max_j s) / sum_j exp(s_j - max_j s)
    out_i = sum_j p_j v_j

Q, K and V are column windows of token-major buffers, sequence b's token s at
row ``starts[b] + s``, and the context goes straight into the token-major
output layout: sequence b has the rows [starts[b], starts[b + 1]). Padded
batches have ``starts[b] = b * S``; ragged ones hold only the real tokens,
sequences back to back (``starts``: the cumulative lengths). Keys after the
last visible one (right padding) are not computed at all: they get
probability 0 (Hugging Face's float32 softmax underflows to 0 there too). The
work is split
into tasks of ``ROWS`` query rows of one (batch, head); a task holds only its
block of scores, in the calling thread's slice of ``scores``, so no (S, S)
matrix per head is ever materialised. The tasks, in (batch, head, block)
order, are dealt to ``threads`` runs of near-equal cost (rows x (keys +
:data:`TASK_COST`)) rather than of equal count: a ragged batch's long rows
cost more per task. On one layer of the ragged b8 s128 batch (lengths 128,
110, 40, 89, 34, 44, 64, 121; 4 heads of 32), 2 threads took 300 us split by
count (the first four sequences hold 64% of the work) and 252 us split by
cost; 1 thread 486 and 476 us. The whole model gained ~1% at 2 threads.

Both products run on the register-tiled micro-kernel of :mod:`.simd`, which
multiplies rows by (K, COLS) panels. So each (batch, head) first packs its
keys as panels of K^T (``kp``: key j of panel p at column j - p*COLS),
zero-padded to whole panels, LANES x LANES blocks at a time by vector
shuffles (:func:`.simd.transpose_block`). Then per task: scores = Q rows x K^T
panels, with the first softmax pass (scale, mask, row maximum) done on the
tile's registers (:data:`.simd.score_rows`); exp and normalisation in place
(:func:`.simd.softmax_exp_row`); context = score rows x V, where the values
need no packing: COLS columns of V's token-major rows already are such a
panel, read in place. The last block of a sequence, fewer than ROWS rows, runs
on the same tiles (``n`` valid rows; :data:`.simd.tile_rows_upto`), not a row
at a time. Head widths that are not a multiple of COLS finish the context's
last columns in plain loops.

Where the time goes (batch 1 x seq 384, MobileBERT's 4 heads of 32, one Zen 3
thread, per block of 6 query rows): scores ~1.9 us, exp and normalisation
~1.2 us, context ~1.9 us; K = 32 makes the scores' tiles short, so the
softmax costs nearly as much as either product.

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
from .simd import COLS, LANES, ROWS, score_rows, softmax_exp_row, tile_rows_upto, transpose_block

TASK_COST = 16  # a task's fixed cost, in keys: the cost model of ROWS rows is rows x (keys + TASK_COST)


def scratch_shapes(batch: int, seq: int, heads: int, head_dim: int, threads: int):
    """Shapes of (kp, scores) for :func:`attention`."""
    pk = -(-seq // COLS)
    return (batch * heads * pk, head_dim, COLS), (threads, ROWS, pk * COLS)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def attention(
    q,
    q_off,
    k,
    k_off,
    v,
    v_off,
    mask_add,
    starts,
    heads,
    head_dim,
    scale,
    out,
    out_off,
    threads,
    probs,
    want_probs,
    kp,
    scores,
):
    B, S = mask_add.shape
    D = head_dim
    PK = (S + COLS - 1) // COLS
    for bh in prange(B * heads):
        _pack_keys(k, k_off, bh, heads, starts[bh // heads], _visible_length(mask_add[bh // heads]), D, PK, kp)
    kp_rows = kp.reshape((-1, COLS))  # key panel p of (batch, head) bh: rows (bh*PK + p) * D ..
    # Tasks of ROWS query rows of one (batch, head), in that order, dealt to ``threads`` runs of near
    # equal cost (module doc): the whole batch's cost first, then each run takes the tasks whose
    # midpoint falls in its share (the shares' bounds are computed alike, so they tile the total)
    total = batch_cost(mask_add, starts, heads)
    runs = max(threads, 1)
    for run in prange(runs):
        lo = total * run / runs
        hi = total * (run + 1) / runs
        sc = scores[numba.get_thread_id()]
        done = 0.0
        for b in range(B):
            rows = starts[b + 1] - starts[b]
            # keys beyond the last visible one (right padding) are skipped: their
            # probability is exactly 0, and a padded row computes exactly what it
            # computes alone (same trip counts, same rounding)
            L = _visible_length(mask_add[b])
            for h in range(heads):
                for i0 in range(0, rows, ROWS):
                    n = min(ROWS, rows - i0)
                    cost = n * (L + TASK_COST)
                    if lo <= done + 0.5 * cost < hi:
                        _task(q, q_off, v, v_off, mask_add[b], starts[b], b, h, i0, n, L, heads, D, S, PK,
                              scale, out, out_off, probs, want_probs, kp, kp_rows, sc)  # fmt: skip
                    done += cost


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _task(q, q_off, v, v_off, mrow, base, b, h, i0, n, L, heads, D, S, PK, scale, out, out_off, probs, want_probs,
          kp, kp_rows, sc):  # fmt: skip
    """Query rows i0 .. i0 + n of sequence b (rows from ``base``), head h, over its L visible keys."""
    bh = b * heads + h
    qc = q_off + h * D
    # sc[r, j] = scale * (q[base + i0 + r, head h] . k[base + j, head h]) + mask_add[b, j]: the
    # whole panels with their row maxima in one call, the last partial panel after them
    full = L // COLS
    maxima = score_rows(q, base + i0, qc, kp_rows, bh * PK * D, sc, 0, 0, D, full, scale, mrow, 0, n)
    if full * COLS < L:
        tile_rows_upto(q, base + i0, qc, kp[bh * PK + full], 0, sc, 0, full * COLS, D, n)
    for r in range(n):
        m = _scale_mask_tail(sc[r], full * COLS, L, mrow, scale, maxima[r])
        softmax_exp_row(sc[r], L, m)
    if want_probs:
        for r in range(n):
            for j in range(L):
                probs[b, h, i0 + r, j] = sc[r, j]
            for j in range(L, S):
                probs[b, h, i0 + r, j] = 0.0
    # out[base + i0 + r, head h] = scores[r, :L] . V[base : base + L, head h]
    vb = v[base : base + L]
    for p in range((D + COLS - 1) // COLS):
        width = min(COLS, D - p * COLS)
        oc = out_off + h * D + p * COLS
        vc = v_off + h * D + p * COLS
        if width == COLS:
            tile_rows_upto(sc, 0, 0, vb, vc, out, base + i0, oc, L, n)
        else:
            for r in range(n):
                o = out[base + i0 + r, oc : oc + width]
                o[:] = 0.0
                for j in range(L):
                    pj = sc[r, j]
                    for c in range(width):
                        o[c] += pj * vb[j, vc + c]


@njit(cache=True, inline="always")
def batch_cost(mask_add, starts, heads):
    """The whole batch's attention cost in the model the tasks are dealt by: rows x (visible keys +
    TASK_COST), summed over sequences and heads (kernels.qattention deals its tasks by it too)."""
    total = 0.0
    for b in range(mask_add.shape[0]):
        total += heads * (starts[b + 1] - starts[b]) * (_visible_length(mask_add[b]) + TASK_COST)
    return total


@njit(cache=True, inline="always")
def _visible_length(mask_row):
    """1 + the index of the last key the mask leaves visible (all of them if none is)."""
    for j in range(mask_row.shape[0] - 1, -1, -1):
        if mask_row[j] == 0.0:
            return j + 1
    return mask_row.shape[0]


@njit(cache=True, inline="always")
def _pack_keys(k, k_off, bh, heads, base, L, D, PK, kp):
    """The first L keys of (batch, head) bh (rows base..base + L) as K^T panels, zero-padded; the
    panels after them are never read."""
    h = bh - (bh // heads) * heads
    col = k_off + h * D
    for p in range(min(PK, (L + COLS - 1) // COLS)):
        panel = kp[bh * PK + p]
        row = base + p * COLS
        n = min(COLS, L - p * COLS)
        d0 = 0
        if n == COLS:  # whole LANES x LANES blocks of the panel by vector shuffles
            while d0 + LANES <= D:
                for c0 in range(0, COLS, LANES):
                    transpose_block(k, row + c0, col + d0, panel, d0, c0)
                d0 += LANES
        for d in range(d0, D):
            for c in range(n):
                panel[d, c] = k[row + c, col + d]
            for c in range(n, COLS):
                panel[d, c] = 0.0


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _scale_mask_tail(row, j0, L, mask_row, scale, m):
    """row[j] = row[j] * scale + mask_row[j] for j0 <= j < L (the scores a score tile left raw); the maximum
    of m and those.

    Rounded as the score tile rounds (the multiply-add contracts to one FMA where the CPU has one, as
    its fmuladd does), and like its maxnum a NaN score does not become the maximum."""
    for j in range(j0, L):
        y = row[j] * scale + mask_row[j]
        row[j] = y
        if y > m:
            m = y
    return m
