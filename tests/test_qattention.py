"""The int8 attention prototype (kernels/qattention.py) against NumPy float64.

Two references: the documented integer semantics (queries, keys and probabilities quantized per
row, values per column, the products in integers, the softmax in float64), which the kernel must
follow closely, and plain float64 attention, which it approximates within int8's error. The one
freedom the kernel has is where a probability lies on a rounding boundary (its exp is float32's
polynomial): one step of P moves an output by at most ~1/127 of its row's scale, so the first
comparison allows that at a few elements and asks for float32 agreement everywhere else.
"""

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mbengine.kernels import qattention as QA
from mbengine.kernels.qsimd import COLS, XMAX

from .helpers import SETTINGS
from .reference import MASK_MIN


def run(lengths, padded, heads, D, spread, seed):
    """Random q, k, v for sequences of ``lengths`` (back to back, or padded to the longest with the mask
    hiding the padding); returns (qkv, out, starts, mask_add)."""
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
    scratch = QA.scratch(B, S, heads, D, numba.config.NUMBA_NUM_THREADS)
    QA.qattention(qkv, 0, qkv, W, qkv, 2 * W, mask_add, starts, heads, D, np.float32(D**-0.5), out, 0,
                  *scratch.values())  # fmt: skip
    return qkv, out, starts, mask_add


def _quantized(x, axis):
    s = np.abs(x).max(axis=axis, keepdims=True) / XMAX
    s[s == 0] = 1.0
    return np.rint(x / s), s


def references(q, k, v, scale):
    """(integer semantics, float64 attention) for one sequence and head: q, k, v (L, D) float64."""
    s = scale * q @ k.T
    p = np.exp(s - s.max(axis=1, keepdims=True))
    exact = (p / p.sum(axis=1, keepdims=True)) @ v
    qq, sq = _quantized(q, 1)
    kq, sk = _quantized(k, 1)
    s = (qq @ kq.T) * sq * sk.T * scale
    p = np.exp(s - s.max(axis=1, keepdims=True))
    pq, sp = _quantized(p / p.sum(axis=1, keepdims=True), 1)
    vq, sv = _quantized(v, 0)
    return (pq @ vq) * sp * sv, exact


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
    qkv, out, starts, _ = run(lengths, padded, heads, D, spread, seed)
    W = heads * D
    for b, L in enumerate(lengths):
        rows = slice(starts[b], starts[b] + L)
        for h in range(heads):
            q, k, v = (qkv[rows, i * W + h * D : i * W + (h + 1) * D].astype(np.float64) for i in range(3))
            semantics, exact = references(q, k, v, D**-0.5)
            got = out[rows, h * D : (h + 1) * D]
            scale = np.abs(v).max()
            off = np.abs(got - semantics) > 1e-5 * scale + 1e-5 * np.abs(semantics)
            assert off.mean() <= 0.05, f"sequence {b} head {h}: {off.sum()} of {off.size} outputs off"
            assert np.abs(got - semantics).max() <= 2.0 / XMAX * scale, f"sequence {b} head {h}"
            assert np.abs(got - exact).max() <= 0.1 * scale, f"sequence {b} head {h}: beyond int8's error"
        if padded:  # the padding rows are computed too (their own queries over the visible keys): finite
            assert np.isfinite(out[starts[b] : starts[b + 1]]).all()
