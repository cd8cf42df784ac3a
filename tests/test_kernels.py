"""Every kernel in kernels/ against plain NumPy float64, by hypothesis over shapes, offsets and values.

Arguments are typed the way the runner passes them (float32 C-contiguous
buffers, read-only weights, int64 ids), so these calls share the engine's
compiled specialisations. Inputs and outputs are column windows of wider
buffers; every cell outside the window must be left alone.

Tolerance for float32 results (``assert_close32``): relative error
||ours - ref|| / ||ref|| <= 1e-5, and elementwise rtol 1e-4 plus an atol of
1e-5 times the largest reference magnitude (MobileBERT activations reach 1e7,
so a fixed atol would mean nothing).
"""

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from mbengine.kernels import activations as k_act
from mbengine.kernels import attention as k_attention
from mbengine.kernels import embeddings as k_embeddings
from mbengine.kernels import linear as k_linear
from mbengine.kernels import norms as k_norms
from mbengine.kernels.names import Act, Norm

from .helpers import (
    CODES,
    EPS,
    NAME_OF_CODE,
    NORMS,
    SCALES,
    SENTINEL,
    SETTINGS,
    assert_close32,
    assert_frame_untouched,
    framed,
    norm_ref,
    readonly,
)
from .reference import ACT, MASK_MIN, trigram


# ----------------------------------------------------------------------------- activations
@njit
def _activate_all(x, code, out):
    for i in range(x.size):
        out[i] = k_act.apply_activation(x[i], code)


ACT_POINTS = np.concatenate(
    [
        np.linspace(-12.0, 12.0, 2401),
        [0.0, -0.0, 1e-30, -1e-30, -20.5, 20.5, -50.0, 50.0, -100.0, 100.0, -1e4, 1e4, -1e7, 1e7],
    ]
)


def test_every_hf_activation_name_has_a_reference():
    assert set(k_act.ACTIVATIONS) == set(ACT)


def test_unsupported_activations_have_no_code():
    assert not set(k_act.UNSUPPORTED) & set(k_act.ACTIVATIONS)


@given(code=st.sampled_from(CODES))
@settings(max_examples=len(CODES) * 3, **SETTINGS)
def test_apply_activation_float64(code):
    x = ACT_POINTS
    out = np.empty_like(x)
    _activate_all(x, code, out)
    np.testing.assert_allclose(out, ACT[NAME_OF_CODE[code]](x), rtol=1e-12, atol=1e-15)


@given(code=st.sampled_from(CODES))
@settings(max_examples=len(CODES) * 3, **SETTINGS)
def test_apply_activation_float32(code):
    """The float32 specialisation, as the linear epilogue calls it."""
    x = ACT_POINTS.astype(np.float32)
    out = np.empty_like(x)
    _activate_all(x, code, out)
    expected = ACT[NAME_OF_CODE[code]](x.astype(np.float64))
    np.testing.assert_allclose(out, expected, rtol=2e-6, atol=1e-6)


@njit
def _erf_all(x, out):
    for i in range(x.size):
        out[i] = k_act.erf_rational(x[i])


def test_erf_rational_is_as_close_to_erf_as_float32_rounding():
    """The vectorising erf behind the linear kernel's gelu: within 4e-8 of erf (float32's own rounding of
    erf is 3e-8), odd, and exactly bounded by its clamp beyond it."""
    x = np.concatenate([np.linspace(-8.0, 8.0, 160001), [0.0, 1e-30, -1e-30, 1e4, -1e4, 1e30, -1e30]])
    out = np.empty_like(x)
    _erf_all(x, out)
    exact = np.array([math.erf(v) for v in x])
    assert np.abs(out - exact).max() <= 4e-8
    mirrored = np.empty_like(x)
    _erf_all(-x, mirrored)
    np.testing.assert_array_equal(out, -mirrored)


def test_apply_activation_scalar_call_from_python():
    assert k_act.apply_activation(-2.0, k_act.activation_code("relu")) == 0.0
    assert math.isclose(k_act.apply_activation(1.0, k_act.activation_code("gelu")), 0.8413447460685429, rel_tol=1e-14)
    assert math.isnan(k_act.apply_activation(1.0, 999))


# ----------------------------------------------------------------------------- embeddings
@st.composite
def token_batches(draw, max_batch=4, max_seq=40):
    B = draw(st.integers(1, max_batch))
    S = draw(st.integers(1, max_seq))
    V = draw(st.integers(1, 50))
    E = draw(st.integers(1, 40))
    lengths = draw(st.lists(st.integers(1, S), min_size=B, max_size=B))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = rng.integers(0, V, (B, S), dtype=np.int64)
    mask = (np.arange(S)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    return ids, mask, V, E, rng


@given(
    batch=token_batches(), use_trigram=st.sampled_from([0, 1]), mask_aware=st.sampled_from([0, 1]), int8=st.booleans()
)
@settings(max_examples=40, **SETTINGS)
def test_embed_words(batch, use_trigram, mask_aware, int8):
    ids, mask, V, E, rng = batch
    B, S = ids.shape
    if int8:  # an int8 table with a scale per row, dequantized on lookup
        word = rng.integers(-127, 128, (V, E)).astype(np.int8)
        scale = rng.uniform(1e-3, 10, V).astype(np.float32)
        table = word.astype(np.float32) * scale[:, None]  # the float32 products the kernel forms
    else:
        word = table = readonly(rng.standard_normal((V, E)))
        scale = np.zeros(0, np.float32)
    width = 3 * E if use_trigram else E
    out = np.full((B * S, width), SENTINEL, np.float32)
    k_embeddings.embed_words(
        ids, mask, word, scale, use_trigram, np.array([mask_aware], np.int64), np.arange(B + 1) * S, out
    )
    e = table.astype(np.float64)[ids]  # [B, S, E]
    expected = trigram(e, mask, mask_aware) if use_trigram else e  # [B, S, 3E or E]
    np.testing.assert_array_equal(out, expected.reshape(B * S, width))


@given(batch=token_batches(), H=st.integers(1, 70), T=st.integers(1, 5), P=st.integers(1, 64))
@settings(max_examples=30, **SETTINGS)
def test_embed_positions(batch, H, T, P):
    ids, _, _, _, rng = batch
    B, S = ids.shape
    positions = rng.integers(0, P, (B, S), dtype=np.int64)
    types = rng.integers(0, T, (B, S), dtype=np.int64)
    pos = readonly(rng.standard_normal((P, H)))
    typ = readonly(rng.standard_normal((T, H)))
    out = np.full((B * S, H), SENTINEL, np.float32)
    k_embeddings.embed_positions(positions, types, pos, typ, np.arange(B + 1) * S, out)
    expected = (pos[positions] + typ[types]).reshape(B * S, H)  # float32 sum, as the kernel
    np.testing.assert_array_equal(out, expected)


@given(
    B=st.integers(1, 5),
    S=st.integers(1, 20),
    width=st.integers(1, 70),
    off=st.integers(0, 9),
    extra=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=30, **SETTINGS)
def test_gather_rows(B, S, width, off, extra, seed):
    rng = np.random.default_rng(seed)
    src = framed(B * S, off + width + extra, off, width, rng)
    out = np.full((B, width), SENTINEL, np.float32)
    k_embeddings.gather_rows(src, off, width, np.arange(B + 1) * S, out)
    np.testing.assert_array_equal(out, src[::S, off : off + width])


# ----------------------------------------------------------------------------- add_norm
@given(
    M=st.integers(1, 40),
    width=st.integers(1, 90),
    norm=NORMS,
    eps=EPS,
    a_off=st.integers(0, 7),
    r_off=st.integers(-1, 7),
    out_off=st.integers(0, 7),
    extra=st.integers(0, 5),
    in_place=st.booleans(),
    scale=st.sampled_from(SCALES),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, **SETTINGS)
def test_add_norm(M, width, norm, eps, a_off, r_off, out_off, extra, in_place, scale, seed):
    rng = np.random.default_rng(seed)
    a = framed(M, a_off + width + extra, a_off, width, rng, scale * rng.standard_normal((M, width)))
    if r_off >= 0:
        r = framed(M, r_off + width + extra, r_off, width, rng, scale * rng.standard_normal((M, width)))
        v = a[:, a_off : a_off + width] + r[:, r_off : r_off + width]  # float32 sum, as the kernel
    else:
        r = np.zeros((1, 1), np.float32)
        v = a[:, a_off : a_off + width].copy()
    w = readonly(rng.uniform(0.5, 1.5, width))
    b = readonly(rng.normal(0.0, 0.1, width))
    expected = norm_ref(v.astype(np.float64), norm, w.astype(np.float64), b.astype(np.float64), eps)
    a_before = a.copy()
    if in_place:
        out, out_off = a, a_off
    else:
        out = framed(M, out_off + width + extra, out_off, width)
    k_norms.add_norm(a, a_off, r, r_off, width, norm, w, b, eps, out, out_off)
    assert_close32(out[:, out_off : out_off + width], expected)
    if in_place:
        assert_frame_untouched(a, a_off, width)
    else:
        assert_frame_untouched(out, out_off, width)
        np.testing.assert_array_equal(a, a_before)


def test_add_norm_constant_row_layernorm():
    """A row with zero variance normalises to the bias (no NaN from 0/0)."""
    a = np.full((2, 8), 3.0e6, np.float32)
    w = readonly(np.linspace(0.5, 1.5, 8))
    b = readonly(np.linspace(-0.1, 0.1, 8))
    out = np.empty_like(a)
    k_norms.add_norm(a, 0, np.zeros((1, 1), np.float32), -1, 8, 2, w, b, 1e-12, out, 0)
    np.testing.assert_allclose(out, np.broadcast_to(b, (2, 8)), atol=1e-7)


# ----------------------------------------------------------------------------- attention
def attention_ref(q, k, v, mask_add, heads, D):
    """q, k, v float64 [B*S, heads*D] -> (context [B*S, heads*D], probs [B, heads, S, S])."""
    B, S = mask_add.shape

    def split(x):
        return x.reshape(B, S, heads, D).transpose(0, 2, 1, 3)  # [B, heads, S, D]

    scores = split(q) @ split(k).transpose(0, 1, 3, 2) * D**-0.5 + mask_add[:, None, None, :]
    scores = scores - scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)  # [B, heads, S, S]
    ctx = (p @ split(v)).transpose(0, 2, 1, 3).reshape(B * S, heads * D)
    return ctx, p


@given(
    B=st.integers(1, 3),
    S=st.integers(1, 40),
    heads=st.integers(1, 4),
    D=st.integers(1, 40),
    fused=st.booleans(),
    offs=st.lists(st.integers(0, 6), min_size=4, max_size=4),
    want_probs=st.sampled_from([0, 1]),
    qk_scale=st.sampled_from([0.1, 1.0, 2.0]),
    threads=st.integers(1, 4),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, **SETTINGS)
def test_attention(B, S, heads, D, fused, offs, want_probs, qk_scale, threads, data, seed):
    rng = np.random.default_rng(seed)
    A = heads * D
    lengths = data.draw(st.lists(st.integers(1, S), min_size=B, max_size=B))
    mask = np.arange(S)[None, :] < np.asarray(lengths)[:, None]
    mask_add = np.where(mask, np.float32(0.0), np.float32(MASK_MIN)).astype(np.float32)
    T = B * S
    if fused:  # Q, K, V side by side in one buffer, as the graph packs them
        o = offs[0]
        qkv = framed(T, o + 3 * A + offs[1], o, 3 * A, rng)
        qkv[:, o : o + 2 * A] *= qk_scale
        q = k = v = qkv
        q_off, k_off, v_off = o, o + A, o + 2 * A
    else:
        q_off, k_off, v_off = offs[0], offs[1], offs[2]
        q = framed(T, q_off + A + 1, q_off, A, rng, qk_scale * rng.standard_normal((T, A)))
        k = framed(T, k_off + A + 2, k_off, A, rng, qk_scale * rng.standard_normal((T, A)))
        v = framed(T, v_off + A, v_off, A, rng)
    inputs_before = [x.copy() for x in (q, k, v)]
    out_off = offs[3]
    out = framed(T, out_off + A + 3, out_off, A)
    probs = np.full((B, heads, S, S), SENTINEL, np.float32) if want_probs else np.zeros((1, 1, 1, 1), np.float32)
    kp, scores = (
        np.zeros(shape, np.float32)
        for shape in k_attention.scratch_shapes(B, S, heads, D, numba.config.NUMBA_NUM_THREADS)
    )
    scale = np.float32(D**-0.5)
    k_attention.attention(
        q,
        q_off,
        k,
        k_off,
        v,
        v_off,
        mask_add,
        np.arange(B + 1) * S,
        heads,
        D,
        scale,
        out,
        out_off,
        threads,
        probs,
        want_probs,
        kp,
        scores,
    )

    if threads != 1:  # the split changes which thread computes a task, never how: same bits
        alone, alone_probs = out.copy(), np.full_like(probs, np.nan) if want_probs else probs.copy()
        alone[:, out_off : out_off + A] = np.nan
        k_attention.attention(q, q_off, k, k_off, v, v_off, mask_add, np.arange(B + 1) * S, heads, D, scale,
                              alone, out_off, 1, alone_probs, want_probs, kp, scores)  # fmt: skip
        np.testing.assert_array_equal(out, alone)
        np.testing.assert_array_equal(probs, alone_probs)

    ctx, p = attention_ref(
        *(x[:, o : o + A].astype(np.float64) for x, o in ((q, q_off), (k, k_off), (v, v_off))),
        mask_add.astype(np.float64),
        heads,
        D,
    )
    assert_close32(out[:, out_off : out_off + A], ctx)
    assert_frame_untouched(out, out_off, A)
    for x, before in zip((q, k, v), inputs_before):
        np.testing.assert_array_equal(x, before)
    if want_probs:
        assert_close32(probs, p)
        np.testing.assert_allclose(probs.sum(axis=-1, dtype=np.float64), 1.0, rtol=1e-5)
        assert (probs[~np.broadcast_to(mask[:, None, None, :], probs.shape)] <= 1e-30).all(), "a masked key got weight"


# ----------------------------------------------------------------------------- linear
def pack_weight(w):
    """The weight in the layout the linear kernel takes: packed panels if it has a packer, else (N, K)."""
    pack = getattr(k_linear, "pack", None)
    return readonly(w) if pack is None else pack(w)


def linear_ref(x, w, b, act, res, norm, nw, nb, eps):
    """float64: norm(act(x @ w.T + b) + res)."""
    y = x @ w.T + b
    if act:
        y = ACT[NAME_OF_CODE[act]](y)
    if res is not None:
        y = y + res
    return norm_ref(y, norm, nw, nb, eps)


def layernorm_condition(y, eps) -> float:
    """max over rows of rms(row) / sqrt(var(row) + eps): how much LayerNorm amplifies relative input error."""
    rms = np.sqrt(np.mean(y * y, axis=1))
    return float(np.max(rms / np.sqrt(np.var(y, axis=1) + eps), initial=1.0))


@st.composite
def linear_cases(draw, max_m=70, max_k=300, max_n=70, min_n=1):
    M = draw(st.integers(1, max_m))
    K = draw(st.integers(1, max_k))
    N = draw(st.integers(min_n, max_n))
    act = draw(st.sampled_from(CODES))
    use_res = draw(st.booleans())
    norm = draw(NORMS)
    # large magnitudes through linear, relu and the norms; bounded activations
    # are only meaningful near their knee, where float32 inputs of ~1e6 carry no digits
    scale = draw(st.sampled_from(SCALES)) if act in (0, 1) else 1.0
    offs = draw(st.lists(st.integers(0, 9), min_size=3, max_size=3))
    extra = draw(st.integers(0, 5))
    eps = draw(EPS)
    seed = draw(st.integers(0, 2**32 - 1))
    threads = draw(st.integers(1, 4))  # how many row groups the kernel splits M into
    return M, K, N, act, use_res, norm, scale, offs, extra, eps, seed, threads


def run_linear_case(M, K, N, act, use_res, norm, scale, offs, extra, eps, seed, threads=1):
    rng = np.random.default_rng(seed)
    x_off, res_off, out_off = offs
    x = framed(M, x_off + K + extra, x_off, K, rng, scale * rng.standard_normal((M, K)))
    w = readonly(rng.standard_normal((N, K)) / math.sqrt(K))
    b = readonly(scale * rng.standard_normal(N))
    if use_res:
        res = framed(M, res_off + N + extra, res_off, N, rng, scale * rng.standard_normal((M, N)))
    else:
        res, res_off = np.zeros((1, 1), np.float32), -1
    if norm:
        nw = readonly(rng.uniform(0.5, 1.5, N))
        nb = readonly(rng.normal(0.0, 0.1, N))
    else:
        nw = nb = readonly(np.zeros(1))
    out = framed(M, out_off + N + extra, out_off, N)
    x_before, res_before = x.copy(), res.copy()

    nxt = readonly(rng.standard_normal(24)).view(np.uint8)  # a next op's weight to prefetch: a hint, no effect
    k_linear.linear(x, x_off, pack_weight(w), b, act, res, res_off, norm, nw, nb, eps, out, out_off, threads, nxt)
    if threads != 1:  # the split changes which thread computes a row block, never how: same bits
        alone = out.copy()
        k_linear.linear(
            x, x_off, pack_weight(w), b, act, res, res_off, norm, nw, nb, eps, alone, out_off, 1, np.zeros(1, np.uint8)
        )
        np.testing.assert_array_equal(out, alone)

    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    args = (f64(x[:, x_off : x_off + K]), f64(w), f64(b), act, f64(res[:, res_off : res_off + N]) if use_res else None)
    expected = linear_ref(*args, norm, f64(nw), f64(nb), eps)
    # A LayerNorm divides by the row's spread: a row of near-equal values (a
    # saturated activation) turns float32 rounding of its inputs into output
    # error kappa times larger. Allow for that conditioning, and no more.
    kappa = layernorm_condition(linear_ref(*args, 0, None, None, eps), eps) if norm == Norm.LAYERNORM else 1.0
    widen = max(1.0, 0.4 * kappa)
    assert_close32(out[:, out_off : out_off + N], expected, rel=1e-5 * widen, rtol=1e-4 * widen, atol_frac=1e-5 * widen)
    assert_frame_untouched(out, out_off, N)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(res, res_before)


@given(case=linear_cases())
@settings(max_examples=60, **SETTINGS)
def test_linear(case):
    run_linear_case(*case)


@given(case=linear_cases(max_m=9, max_k=40, min_n=1025, max_n=1300))
@settings(max_examples=6, **SETTINGS)
def test_linear_wide_outputs(case):
    """Over a thousand outputs (a vocabulary projection's shape): many panels per row block."""
    run_linear_case(*case)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("norm", [0, 1])
def test_linear_bad_input_shows_through_relu(bad, norm):
    """A NaN in a row stays NaN through the relu the tiles apply in registers (max(NaN, 0) would be 0); an
    infinity gives NaN or infinite outputs, never finite ones that hide it."""
    rng = np.random.default_rng(3)
    M, K, N = 11, 24, 3 * k_linear.COLS + 5  # full tiles, a leftover row and a partial panel
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[4, 7] = bad
    w = readonly(rng.standard_normal((N, K)))
    b, nw, nb = readonly(rng.standard_normal(N)), readonly(rng.uniform(0.5, 1.5, N)), readonly(rng.normal(0, 0.1, N))
    out = np.zeros((M, N), np.float32)
    none = np.zeros((1, 1), np.float32)
    relu, nothing_next = int(Act.RELU), np.zeros(1, np.uint8)
    k_linear.linear(x, 0, pack_weight(w), b, relu, none, -1, norm, nw, nb, 1e-5, out, 0, 1, nothing_next)
    assert np.isfinite(np.delete(out, 4, axis=0)).all()
    if np.isnan(bad):
        assert np.isnan(out[4]).all()
    else:  # +inf * w: +inf where w > 0 (relu keeps it), -inf where w < 0 (relu: 0)
        assert (~np.isfinite(out[4]) == (w[:, 7] > 0)).all()


def test_linear_chunks_share_the_rows_evenly():
    """Every row block in exactly one chunk; chunks of at most CHUNK_ROWS rows differing by at most one
    block; a whole number of chunks per thread (unless there are fewer blocks than that)."""
    rows = k_linear.ROWS
    for threads in (1, 2, 3, 4):
        for M in range(1, 700):
            chunks, per_chunk = k_linear.chunk_split(M, threads)
            blocks = -(-M // rows)
            sizes = [(c + 1) * blocks // chunks - c * blocks // chunks for c in range(chunks)]
            assert sum(sizes) == blocks and max(sizes) == per_chunk and max(sizes) - min(sizes) <= 1
            assert per_chunk * rows <= max(k_linear.CHUNK_ROWS, rows)
            assert chunks % threads == 0 or chunks == blocks, (M, threads, chunks)


def test_linear_tile_edges():
    """Every remainder of rows against the register tile (ROWS x COLS, as compiled for this CPU), outputs
    around one and two panels of COLS, K of 1 and odd."""
    rows, cols = k_linear.ROWS, k_linear.COLS
    for M in sorted({1, 2, 3, rows - 1, rows, rows + 1, 2 * rows + 1}):
        for N in sorted({1, 2, 3, cols - 1, cols, cols + 1, 2 * cols - 1, 2 * cols + 3}):
            for K in (1, 3, 16, 33):
                run_linear_case(M, K, N, 0, True, 0, 1.0, [1, 2, 3], 1, 1e-5, M * 1000 + N * 10 + K)
