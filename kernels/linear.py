"""Float32 linear layer with a fused epilogue.

    out[i, o0 + n] = norm( act( sum_k x[i, x0 + k] * W[n, k] + b[n] ) + res[i, r0 + n] )

The weight ``W`` (Hugging Face's ``nn.Linear.weight``, (N, K)) is *packed*
once, by :func:`pack`, into panels of ``COLS`` outputs: ``wp[p, k, c] =
W[p * COLS + c, k]``, zero-padded to whole panels. A panel is one contiguous
block that the micro-kernel of :mod:`.simd` streams from start to end while
it accumulates a tile of 8 rows x COLS outputs in vector registers (COLS is
32 with AVX-512, 16 with AVX, 8 on NEON).

Inputs and outputs are column windows of larger row-major buffers, given as
(buffer, column offset): the graph packs several tensors side by side in one
buffer. N is ``b.shape[0]``.

Parallel tasks are (chunk of rows, panel, block of 8 rows), in that order:
within a chunk (whose activations stay in L2) a thread takes a run of panels
and passes every row block through each, so longer inputs re-read the
weights (from L3) once per chunk rather than the activations once per panel.
A chunk is at most 128 rows, and there is a whole number of chunks per
thread, of near-equal row blocks (:func:`chunk_split`): with two threads at
batch 1 x seq 128, each thread takes 64 rows through every panel and reads
only rows of x that its own core wrote (the previous op splits the same
way), which measured faster than splitting the panels and reading every row
from both cores. Chunks of a fixed 126 rows (21 blocks of 6 rows, on AVX2)
left a short last chunk, and one thread idle for part of every linear: at 2
threads the whole model at b2-b6 x s128 ran 12-23% slower than with this
split (in-process A/B, same plan, kernels swapped). Bias, relu, residual and NoNorm are applied in the
micro-kernel's registers before the tile is stored; another activation or a
LayerNorm is a second pass over rows, which are in cache by then.
``res_off < 0`` means no residual.

Weights come from memory (L3) on every call: the full-size model's 94 MiB
do not stay in cache. Two prefetches hide that: each task asks for a slice
of the next panel into L1, and for a slice of ``nxt`` (the bytes of the
packed weight of the linear op that runs next, a 1-D uint8 view, or any small
dummy) into L2, so that the next op finds its weight there. Both only hint:
they change no result. ``act``: an :class:`.names.Act` code. ``norm``
(:class:`.names.Norm`): none, NoNorm (``y * nw + nb``) or LayerNorm over the
N outputs of the row (``eps``, float64 statistics).
"""

import numba
import numpy as np
from numba import njit, prange

from . import layout
from .activations import apply_activation, gelu_bias
from .flags import FASTMATH
from .names import Act, Norm
from .simd import COLS, ROWS, prefetch, prefetch_l2, tile_row, tile_row_epilogue, tile_rows, tile_rows_epilogue  # noqa: F401 (ROWS: the runner's)

CHUNK_ROWS = 128  # rows whose activations stay in L2 while the weight panels stream past


def pack(w: np.ndarray) -> np.ndarray:
    """(N, K) weight -> (ceil(N / COLS), K, COLS) panels, zero-padded, read-only (:func:`.layout.pack`)."""
    return layout.pack(w, COLS)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def linear(x, x_off, wp, b, act, res, res_off, norm, nw, nb, eps, out, out_off, threads, nxt):
    M = x.shape[0]
    P, K, _ = wp.shape
    N = b.shape[0]
    # no activation or relu: the tiles finish their outputs in registers (a LayerNorm still follows)
    fused = act == Act.LINEAR or act == Act.RELU
    # Row blocks of ROWS rows, dealt into chunks: a whole number of chunks per thread, of as near equal
    # blocks as can be (chunk_split), so each thread reads rows of x its own core wrote and every thread
    # gets the same work, whatever M is (module doc)
    chunks, per_chunk = chunk_split(M, threads)
    blocks = (M + ROWS - 1) // ROWS
    tasks = chunks * P * per_chunk
    ahead_part = (nxt.shape[0] + tasks - 1) // tasks
    for t in prange(tasks):
        if t * ahead_part < nxt.shape[0]:  # this task's share of the next op's weight, into L2
            prefetch_l2(nxt, t * ahead_part, min(ahead_part, nxt.shape[0] - t * ahead_part))
        c = t // (P * per_chunk)
        rest = t - c * P * per_chunk
        p = rest // per_chunk
        j = rest - p * per_chunk  # the row block within the chunk
        i0 = (c * blocks // chunks + j) * ROWS
        if c * blocks // chunks + j < (c + 1) * blocks // chunks:
            i1 = min(i0 + ROWS, M)
            width = min(COLS, N - p * COLS)
            if fused:
                _panel_epilogue(
                    x, x_off, wp[p], out, out_off, p * COLS, i0, i1, width, K, b, act, res, res_off, norm, nw, nb
                )
            else:
                _panel(x, x_off, wp[p], out, out_off + p * COLS, i0, i1, width, K)
            if p + 1 < P:  # while this panel is hot, start fetching a slice of the next one
                part = (K * COLS + per_chunk - 1) // per_chunk
                start = j * part
                prefetch(wp[p + 1], start, min(part, K * COLS - start))
    if not fused:
        for i in prange(M):
            _epilogue_row(out, i, out_off, N, b, act, res, res_off, norm, nw, nb, eps)
    elif norm == Norm.LAYERNORM:  # needs whole rows
        for i in prange(M):
            _layernorm_row(out, i, out_off, N, nw, nb, eps)


@njit(cache=True, inline="always")
def chunk_split(M, threads):
    """(chunks, the most row blocks in one): the ceil(M / ROWS) row blocks dealt into a multiple of
    ``threads`` chunks of at most CHUNK_ROWS rows, chunk c taking blocks [c * blocks // chunks,
    (c + 1) * blocks // chunks): near equal, so that an even split of the tasks is an even split of
    the work (a last, short chunk would leave one thread idle for its share)."""
    blocks = (M + ROWS - 1) // ROWS
    chunks = even_parts(blocks, threads, max(1, CHUNK_ROWS // ROWS))
    return chunks, (blocks + chunks - 1) // chunks


@njit(cache=True, inline="always")
def even_parts(blocks, threads, most):
    """Into how many parts to deal ``blocks`` row blocks, part c taking [c * blocks // parts, (c + 1) *
    blocks // parts): a multiple of ``threads`` (while there are that many blocks) of at most ``most``
    blocks each, so that a parallel loop's equal runs of parts give the threads equal work, give or take
    one block (the int8 linear's tasks too: :func:`.qlinear.task_split`)."""
    threads = max(threads, 1)
    per_thread = (blocks + threads - 1) // threads
    return max(1, min(blocks, threads * ((per_thread + most - 1) // most)))


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _panel_epilogue(x, x_off, w, out, out_off, c0, i0, i1, width, K, b, act, res, res_off, norm, nw, nb):
    """Outputs c0..c0+width of rows i0..i1 from one panel, finished (bias, relu, residual, NoNorm) in registers."""
    rc = res_off + c0 if res_off >= 0 else -1
    nonorm = 1 if norm == Norm.NONORM else 0
    if width == COLS:
        if i1 - i0 == ROWS:
            tile_rows_epilogue(x, i0, x_off, w, 0, out, i0, out_off + c0, K, b, c0, act, res, rc, nonorm, nw, nb)
        else:
            for i in range(i0, i1):
                tile_row_epilogue(x, i, x_off, w, 0, out, i, out_off + c0, K, b, c0, act, res, rc, nonorm, nw, nb)
    else:  # the last, narrower panel of an N that is not a multiple of COLS
        for i in range(i0, i1):
            _one_row(x, i, x_off, w, out, i, out_off + c0, width, K)
            _epilogue_cols(out, i, out_off, c0, width, b, act, res, res_off, norm, nw, nb)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _panel(x, x_off, w, out, oc, i0, i1, width, K):
    """out[i0:i1, oc:oc + width] = x[i0:i1, x_off:x_off + K] @ w[:, :width]  (w: one (K, COLS) panel)."""
    if width == COLS and i1 - i0 == ROWS:
        tile_rows(x, i0, x_off, w, 0, out, i0, oc, K)
    else:
        for i in range(i0, i1):
            _one_row(x, i, x_off, w, out, i, oc, width, K)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _epilogue_row(out, i, out_off, N, b, act, res, res_off, norm, nw, nb, eps):
    """Apply bias, activation, residual and norm to out[i, out_off:out_off+N]."""
    _epilogue_cols(out, i, out_off, 0, N, b, act, res, res_off, norm, nw, nb)
    if norm == Norm.LAYERNORM:
        _layernorm_row(out, i, out_off, N, nw, nb, eps)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _epilogue_cols(out, i, out_off, c0, width, b, act, res, res_off, norm, nw, nb):
    """Bias, activation, residual and NoNorm on outputs c0..c0+width of row i (a LayerNorm: not here).

    Each step is its own loop over the columns, with the choice made outside it,
    so the common cases (no activation, relu, NoNorm) vectorise.
    """
    o = out[i, out_off + c0 : out_off + c0 + width]
    if act == Act.LINEAR:
        for n in range(width):
            o[n] += b[c0 + n]
    elif act == Act.RELU:
        for n in range(width):
            o[n] = max(o[n] + b[c0 + n], np.float32(0.0))
    elif act == Act.GELU:  # BERT's activation: a vectorised erf, 12x apply_activation's libm call per element
        gelu_bias(o, b, c0)
    else:
        for n in range(width):
            o[n] = apply_activation(o[n] + b[c0 + n], act)
    if res_off >= 0:
        r = res[i, res_off + c0 : res_off + c0 + width]
        for n in range(width):
            o[n] += r[n]
    if norm == Norm.NONORM:
        for n in range(width):
            o[n] = o[n] * nw[c0 + n] + nb[c0 + n]


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


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def ffn(x, x_off, wp1, b1, act, wp2, b2, norm, nw, nb, eps, out, out_off, scratch):
    """A feed-forward pair in one pass: out = norm(act(x @ W1 + b1) @ W2 + b2 + x).

    Each task takes 8 rows: the intermediate rows (``scratch[thread]``, (8,
    I)) never leave the core's cache, both epilogues run in the task, and the
    pair costs one parallel region instead of four. ``out`` must not overlap
    ``x`` (it is the residual).
    """
    M = x.shape[0]
    P1, K, _ = wp1.shape
    P2, I, _ = wp2.shape
    N = b2.shape[0]
    for blk in prange((M + ROWS - 1) // ROWS):
        i0 = blk * ROWS
        i1 = min(i0 + ROWS, M)
        h = scratch[numba.get_thread_id()]
        for p in range(P1):  # h[r] = x[i0 + r] @ W1, panel by panel
            if i1 - i0 == ROWS and COLS * (p + 1) <= I:
                tile_rows(x, i0, x_off, wp1[p], 0, h, 0, p * COLS, K)
            else:
                for i in range(i0, i1):
                    _one_row(x, i, x_off, wp1[p], h, i - i0, p * COLS, min(COLS, I - p * COLS), K)
        for r in range(i1 - i0):
            _epilogue_row(h, r, 0, I, b1, act, h, -1, Norm.NONE, nw, nb, eps)
        for p in range(P2):  # out[i0 + r] = h[r] @ W2
            width = min(COLS, N - p * COLS)
            if i1 - i0 == ROWS and width == COLS:
                tile_rows(h, 0, 0, wp2[p], 0, out, i0, out_off + p * COLS, I)
            else:
                for i in range(i0, i1):
                    _one_row(h, i - i0, 0, wp2[p], out, i, out_off + p * COLS, width, I)
        for i in range(i0, i1):
            _epilogue_row(out, i, out_off, N, b2, 0, x, x_off, norm, nw, nb, eps)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _one_row(x, xr, xc, w, out, orow, oc, width, K):
    """out[orow, oc:oc + width] = x[xr, xc:xc + K] @ w[:, :width] (one panel, any width)."""
    if width == COLS:
        tile_row(x, xr, xc, w, 0, out, orow, oc, K)
        return
    o = out[orow, oc : oc + width]
    o[:] = 0.0
    for k in range(K):
        xv = x[xr, xc + k]
        wk = w[k]
        for n in range(width):
            o[n] += xv * wk[n]
