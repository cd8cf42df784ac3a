"""The int8-score attention (kernels/qattention.py) against NumPy float64.

Two references: the documented semantics (queries and keys quantized per row exactly as the kernel
quantizes them, in float32; their product in integers; the softmax and the context in float64),
which the kernel must follow to float32's rounding, and plain float64 attention, which it
approximates within int8's error. Sequences shorter than ``long_from`` must be the float32
kernel's, bit for bit.
"""

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mbengine.kernels import attention
from mbengine.kernels import qattention as QA
from mbengine.kernels.layout import compiled, qattention_scratch
from mbengine.kernels.qsimd import COLS, XMAX

from .helpers import SETTINGS
from .reference import MASK_MIN


def run(lengths, padded, heads, D, spread, seed, want_probs=False, long_from=0):
    """Random q, k, v for sequences of ``lengths`` (back to back, or padded to the longest with the mask
    hiding the padding); returns (qkv, out, starts, mask_add, probs) (probs: None unless ``want_probs``)."""
    rng = np.random.default_rng(seed)
    W = heads * D
    B, S = len(lengths), max(lengths)
    rows = [S] * B if padded else lengths
    starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
    qkv = (rng.standard_normal((int(starts[-1]), 3 * W)) * spread).astype(np.float32)
    mask_add = np.full((B, S), MASK_MIN, np.float32)
    for b, L in enumerate(lengths):
        mask_add[b, :L] = 0.0
    out = np.full((int(starts[-1]), W), np.nan, np.float32)
    threads = numba.config.NUMBA_NUM_THREADS
    probs = np.full((B, heads, S, S), np.nan, np.float32) if want_probs else np.zeros((1, 1, 1, 1), np.float32)
    kp_shape, sc_shape = attention.scratch_shapes(B, S, heads, D, threads)
    kp, scores = np.zeros(kp_shape, np.float32), np.zeros(sc_shape, np.float32)
    QA.qattention(qkv, 0, qkv, W, qkv, 2 * W, mask_add, starts, heads, D, np.float32(D**-0.5), out, 0, threads,
                  probs, int(want_probs), kp, scores, long_from, *QA.scratch(S, D, threads))  # fmt: skip
    return qkv, out, starts, mask_add, probs if want_probs else None


def heads_of(qkv, starts, lengths, heads, D):
    """(b, h, the sequence's real rows, (q, k, v) of head h there) for every sequence and head of ``run``'s qkv."""
    W = heads * D
    for b, L in enumerate(lengths):
        rows = slice(starts[b], starts[b] + L)
        for h in range(heads):
            yield b, h, rows, tuple(qkv[rows, i * W + h * D : i * W + (h + 1) * D] for i in range(3))


TIE = 1e-4  # a query value whose exact quotient lies this close to a half-integer may round either way


def _quantized(x):
    """Each row of float32 ``x`` quantized by its maximum as the kernel does it, in float32 (scale = max / XMAX,
    then rint(x * (1 / scale))): (the integers, the scales, each row's count of values within TIE of a
    rounding boundary), the first two float64.

    Both quantizers run under ``arcp`` (the scale may be max * (1 / XMAX); tests/test_qlinear.py), so a value
    at a boundary may round the other way: the scores it enters are then held to the bound that one step
    allows (:func:`references`' ``step``)."""
    x = np.asarray(x, np.float32)
    amax = np.abs(x).max(axis=1, keepdims=True)
    s = np.where(amax > 0, amax / np.float32(XMAX), np.float32(1.0)).astype(np.float32)
    t = x.astype(np.float64) / s.astype(np.float64)
    ties = (np.abs(t - np.floor(t) - 0.5) < TIE).sum(axis=1)
    return np.rint(x * (np.float32(1.0) / s)).astype(np.float64), s.astype(np.float64), ties


def references(q, k, v, scale):
    """The semantics of one sequence and head (q, k, v: (L, D) float32 values) as a dict: ``out`` and
    ``p``, q and k quantized exactly as the kernel quantizes them and everything after that in float64;
    ``exact``, float64 attention; per query row, ``step``, how far its scores may move with the values at a
    rounding boundary (a query value's: the query scale x |key scale x key integer|; a key value's: the key
    scale x |query scale x query integer|; each times their count), and ``drift``, the largest
    |semantics' score - exact score|."""
    exact_s = scale * np.float64(q) @ np.float64(k).T
    p = np.exp(exact_s - exact_s.max(axis=1, keepdims=True))
    exact = (p / p.sum(axis=1, keepdims=True)) @ np.float64(v)
    kq, sk, key_ties = _quantized(k)
    sw = (sk.astype(np.float32) * np.float32(scale)).astype(np.float64)  # (the kernel's key scale x scale)
    qq, sq, ties = _quantized(q)
    s = (qq @ kq.T) * sq * sw.T
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    step = ties * sq[:, 0] * (sw[:, 0] * np.abs(kq).max(axis=1)).max()
    step += (key_ties * sw[:, 0]).max() * sq[:, 0] * np.abs(qq).max(axis=1)
    drift = np.abs(s - exact_s).max(axis=1)
    return {"out": p @ np.float64(v), "p": p, "exact": exact, "step": step, "drift": drift}


def check_rows(got, want, bound, what):
    """|got - want| per row within ``bound`` (per row) plus float32's rounding (1e-4 of ``bound``'s unit)."""
    worst = np.abs(got - want).max(axis=1)
    bad = np.nonzero(worst > bound)[0]
    assert bad.size == 0, f"{what}: rows {bad[:5]} off by {worst[bad[:5]]} (bounds {bound[bad[:5]]})"


def softmax_bound(delta):
    """How far a probability row (and so an output row over values within [-1, 1]) moves, summed, when each
    of its scores moves by at most ``delta``: each p_j by a factor within exp(+-2 delta)."""
    return np.expm1(2 * delta)


@given(
    lengths=st.lists(st.integers(1, 3 * COLS + 5), min_size=1, max_size=4),
    padded=st.booleans(),
    heads=st.sampled_from([1, 2, 4]),
    panels=st.sampled_from([1, 2]),
    spread=st.sampled_from([0.3, 1.0, 3.0]),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=25, **SETTINGS)
def test_qattention_follows_its_integer_semantics(lengths, padded, heads, panels, spread, seed):
    D = panels * COLS
    qkv, out, starts, _, _ = run(lengths, padded, heads, D, spread, seed)
    for b, h, rows, (q, k, v) in heads_of(qkv, starts, lengths, heads, D):
        ref = references(q, k, v, D**-0.5)
        got = out[rows, h * D : (h + 1) * D]
        scale = np.abs(v).max()
        # float32's rounding where no query value sits on a boundary (nearly every row), else one step's worth
        tol = scale * (1e-4 + softmax_bound(ref["step"]))
        check_rows(got, ref["out"], tol, f"sequence {b} head {h}: off its semantics")
        tol = scale * (1e-4 + softmax_bound(ref["drift"] + ref["step"]))
        check_rows(got, ref["exact"], tol, f"sequence {b} head {h}: beyond int8's error")
    if padded:  # the padding rows are computed too (their own queries over the visible keys): finite
        assert np.isfinite(out).all()


@given(
    lengths=st.lists(st.integers(1, 2 * COLS + 3), min_size=1, max_size=3),
    padded=st.booleans(),
    heads=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=15, **SETTINGS)
def test_qattention_writes_the_probabilities_it_multiplies(lengths, padded, heads, seed):
    """With want_probs, each query row's softmax lands in probs[b, h, i]: the
    semantics' probabilities over the visible keys, 0 past them; and the outputs are the same as without."""
    D = COLS
    qkv, out, starts, _, probs = run(lengths, padded, heads, D, 1.0, seed, want_probs=True)
    _, plain, _, _, _ = run(lengths, padded, heads, D, 1.0, seed)
    np.testing.assert_array_equal(out, plain)
    for b, h, _, (q, k, v) in heads_of(qkv, starts, lengths, heads, D):
        L = lengths[b]
        ref = references(q, k, v, D**-0.5)
        got = probs[b, h, :L]
        assert (got[:, L:] == 0).all(), f"sequence {b} head {h}: keys past the visible ones"
        np.testing.assert_allclose(got[:, :L].sum(axis=1), 1.0, rtol=1e-5)
        check_rows(got[:, :L], ref["p"], 1e-4 + softmax_bound(ref["step"]), f"sequence {b} head {h}")
    for b in range(len(lengths)):
        assert np.isfinite(probs[b, :, : starts[b + 1] - starts[b]]).all()


@given(
    lengths=st.lists(st.integers(1, 2 * COLS + 3), min_size=1, max_size=4),
    padded=st.booleans(),
    heads=st.sampled_from([1, 2]),
    long_from=st.integers(1, 2 * COLS + 4),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=15, **SETTINGS)
def test_shorter_sequences_get_the_float32_kernels_outputs_bit_for_bit(lengths, padded, heads, long_from, seed):
    """Below ``long_from`` visible keys a sequence runs the float32 kernel's tasks: its outputs and
    probabilities are that kernel's, bit for bit; the longer ones are the int8 path's (long_from 0)."""
    D = COLS
    qkv, out, starts, mask_add, probs = run(lengths, padded, heads, D, 1.0, seed, True, long_from)
    _, int8_out, _, _, int8_probs = run(lengths, padded, heads, D, 1.0, seed, True, 0)
    B, S, W = len(lengths), max(lengths), heads * D
    threads = numba.config.NUMBA_NUM_THREADS
    kp_shape, sc_shape = attention.scratch_shapes(B, S, heads, D, threads)
    float_out = np.full_like(out, np.nan)
    float_probs = np.full_like(probs, np.nan)
    attention.attention(qkv, 0, qkv, W, qkv, 2 * W, mask_add, starts, heads, D, np.float32(D**-0.5), float_out, 0,
                        threads, float_probs, 1, np.zeros(kp_shape, np.float32),
                        np.zeros(sc_shape, np.float32))  # fmt: skip
    for b, L in enumerate(lengths):
        rows = slice(starts[b], starts[b + 1])
        n = starts[b + 1] - starts[b]
        want, want_p = (float_out, float_probs) if L < long_from else (int8_out, int8_probs)
        np.testing.assert_array_equal(out[rows], want[rows], err_msg=f"sequence {b} (length {L})")
        np.testing.assert_array_equal(probs[b, :, :n], want_p[b, :, :n], err_msg=f"sequence {b} (length {L})")


@given(seq=st.integers(1, 600), head_dim=st.sampled_from([COLS, 2 * COLS]), threads=st.integers(1, 4))
@settings(max_examples=20, **SETTINGS)
def test_the_runner_sizes_the_scratch_the_kernel_carves(seq, head_dim, threads):
    """kernels.layout counts the scratch without Numba (a native process sizes its arena from it): the same
    shapes as the kernel's own, on every variant (tests/test_compile_targets.py runs this file on each)."""
    assert qattention_scratch(compiled(), seq, head_dim, threads) == QA.scratch_shapes(seq, head_dim, threads)
