"""The attention kernel at MobileBERT's shapes, and the micro-kernels only it uses, against NumPy float64.

test_kernels.py draws small shapes by hypothesis; here the shapes are the
ones that take the fast paths and their edges together: 4 heads of 32, query
blocks of ROWS rows with a short last block, several whole key panels plus a
partial one, sequences shorter than a panel, ragged batches (sequences back
to back) and padded ones with probabilities.
"""

import numba
import numpy as np
import pytest
from numba import njit

from mbengine.kernels import attention as k_attention
from mbengine.kernels.simd import COLS, LANES, ROWS, score_rows, transpose_block

from .helpers import SENTINEL, assert_close32, assert_frame_untouched, framed
from .reference import MASK_MIN

HEADS, D = 4, 32
A = HEADS * D


def context_ref(q, k, v, scale):
    """One sequence, float64: q, k, v [L, A] -> (context [L, A], probs [HEADS, L, L])."""
    L = q.shape[0]

    def split(x):
        return x.reshape(L, HEADS, D).transpose(1, 0, 2)  # [HEADS, L, D]

    s = split(q) @ split(k).transpose(0, 2, 1) * scale
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ split(v)).transpose(1, 0, 2).reshape(L, A), p


def run(lengths, ragged, want_probs, seed=0, threads=2, spread=2.0):
    """The kernel on a fused QKV buffer (as the graph packs it) -> (qkv, out, probs, starts, S)."""
    rng = np.random.default_rng(seed)
    B, S = len(lengths), max(lengths)
    lengths = np.asarray(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)]) if ragged else np.arange(B + 1) * S
    T = int(starts[-1])
    qkv = framed(T, 2 + 3 * A, 1, 3 * A, rng)
    qkv[:, 1 : 1 + 2 * A] *= spread  # peaked probabilities, not all near 1/L
    mask_add = np.where(np.arange(S)[None, :] < lengths[:, None], 0.0, MASK_MIN).astype(np.float32)
    out = framed(T, A + 3, 2, A)
    probs = np.full((B, HEADS, S, S), SENTINEL, np.float32) if want_probs else np.zeros((1, 1, 1, 1), np.float32)
    kp, scores = (
        np.full(shape, np.nan, np.float32)  # the kernel must read none of its scratch before writing it
        for shape in k_attention.scratch_shapes(B, S, HEADS, D, numba.config.NUMBA_NUM_THREADS)
    )
    scale = np.float32(D**-0.5)
    k_attention.attention(
        qkv, 1, qkv, 1 + A, qkv, 1 + 2 * A, mask_add, starts.astype(np.int64), HEADS, D, scale,
        out, 2, threads, probs, int(want_probs), kp, scores,
    )  # fmt: skip
    return qkv, out, probs, starts, S


# lengths: several whole key panels and a partial one, a last query block shorter than ROWS,
# a sequence shorter than one panel, one of a single token, one of exactly one panel
LENGTHS = [3 * COLS + 5, ROWS * 7 + 1, COLS - 3, 1, COLS]


@pytest.mark.parametrize("ragged", [False, True])
def test_attention_matches_float64_at_mobilebert_shapes(ragged):
    qkv, out, _, starts, _ = run(LENGTHS, ragged, want_probs=False)
    assert_frame_untouched(out, 2, A)
    for b, L in enumerate(LENGTHS):
        rows = slice(starts[b], starts[b] + L)
        q, k, v = (qkv[rows, 1 + i * A : 1 + (i + 1) * A].astype(np.float64) for i in range(3))
        ctx, _ = context_ref(q, k, v, D**-0.5)
        assert_close32(out[rows, 2 : 2 + A], ctx)
    if not ragged:  # the padding rows of a padded batch are computed as well: finite, not left alone
        assert np.isfinite(out[:, 2 : 2 + A]).all()


@pytest.mark.parametrize("ragged", [False, True])
def test_attention_split_by_cost_changes_no_bit(ragged):
    """The tasks dealt to 1, 2, 3 or 7 runs of near-equal cost (more runs than threads too): same bits."""
    _, one, _, _, _ = run(LENGTHS, ragged, want_probs=True, threads=1)
    for threads in (2, 3, 7):
        _, out, _, _, _ = run(LENGTHS, ragged, want_probs=True, threads=threads)
        np.testing.assert_array_equal(out, one)


def test_attention_probabilities_at_mobilebert_shapes():
    qkv, out, probs, starts, S = run(LENGTHS, ragged=False, want_probs=True)
    for b, L in enumerate(LENGTHS):
        rows = slice(starts[b], starts[b] + L)
        q, k, v = (qkv[rows, 1 + i * A : 1 + (i + 1) * A].astype(np.float64) for i in range(3))
        ctx, p = context_ref(q, k, v, D**-0.5)
        assert_close32(out[rows, 2 : 2 + A], ctx)
        assert_close32(probs[b, :, :L, :L], p)
        assert (probs[b, :, :, L:] == 0.0).all(), "a padding key got weight"
        np.testing.assert_allclose(probs[b, :, :L].sum(axis=-1, dtype=np.float64), 1.0, rtol=1e-5)
    assert (probs != SENTINEL).all(), "a probability was left unwritten"


@njit
def _transpose_at(src, sr, sc, dst, dr, dc):
    transpose_block(src, sr, sc, dst, dr, dc)


def test_transpose_block():
    rng = np.random.default_rng(1)
    src = rng.standard_normal((LANES + 5, LANES + 7)).astype(np.float32)
    dst = np.full((LANES + 3, 2 * LANES + 1), SENTINEL, np.float32)
    _transpose_at(src, 3, 5, dst, 2, LANES)
    np.testing.assert_array_equal(dst[2 : 2 + LANES, LANES : 2 * LANES], src[3 : 3 + LANES, 5 : 5 + LANES].T)
    dst[2 : 2 + LANES, LANES : 2 * LANES] = SENTINEL
    assert (dst == SENTINEL).all(), "wrote outside the block"


@njit
def _scores(q, kp, out, panels, scale, mask, n):
    return score_rows(q, 1, 2, kp, 0, out, 0, 0, kp.shape[0] // panels, panels, scale, mask, 0, n)


@pytest.mark.parametrize("n", [1, ROWS - 1, ROWS])
def test_score_rows(n):
    """Scores (scaled, masked) of n query rows over whole key panels, rows n.. repeating row n - 1; the
    maxima are exactly those of the stored scores."""
    rng = np.random.default_rng(n)
    K, panels = 32, 3
    q = framed(1 + n, 2 + K + 1, 2, K, rng)  # only rows 1 .. n hold query rows: the kernel must read no others
    kt = rng.standard_normal((panels * K, COLS)).astype(np.float32)  # panel p: rows p*K .., (K, COLS) of K^T
    mask = np.where(rng.random(panels * COLS) < 0.8, 0.0, MASK_MIN).astype(np.float32)
    mask[0] = 0.0
    out = np.full((ROWS, panels * COLS), SENTINEL, np.float32)
    maxima = _scores(q, kt, out, panels, np.float32(0.25), mask, n)
    keys = np.concatenate([kt[p * K : (p + 1) * K] for p in range(panels)], axis=1)  # [K, panels*COLS]
    ref = q[1 : 1 + n, 2 : 2 + K].astype(np.float64) @ keys * 0.25 + mask
    ref = np.concatenate([ref, np.repeat(ref[-1:], ROWS - n, axis=0)])
    assert_close32(out, ref)
    np.testing.assert_array_equal(np.array(maxima, np.float32), out.max(axis=1))


def test_no_probability_is_a_denormal():
    """Scores ~25 wide (a sharp softmax, as trained models have): every probability of a visible key
    is a normal float32 (the exp is held at exp(EXP_FLOOR)), since denormal operands made the normalisation and
    the context several times slower; and the outputs still match float64."""
    from mbengine.kernels.simd import EXP_FLOOR

    lengths = [3 * COLS + 5, 2 * COLS]
    qkv, out, probs, starts, _ = run(lengths, ragged=False, want_probs=True, spread=5.0)
    for b, L in enumerate(lengths):
        visible = probs[b, :, :L, :L]
        assert (visible >= np.finfo(np.float32).tiny).all(), "a probability below float32's smallest normal"
        assert visible.min() <= np.exp(EXP_FLOOR), "no score reached the floor: the test does not test it"
        rows = slice(starts[b], starts[b] + L)
        q, k, v = (qkv[rows, 1 + i * A : 1 + (i + 1) * A].astype(np.float64) for i in range(3))
        ctx, _ = context_ref(q, k, v, D**-0.5)
        assert_close32(out[rows, 2 : 2 + A], ctx)
