"""The int8 linear kernel (kernels/qlinear.py on the micro-kernel of kernels/qsimd.py) against NumPy.

Three levels, from exact to loose:

* integers: ``qmatmul_exact`` equals ``xq @ wq.T`` in int64 bit for bit, with
  this process's variant (:data:`mbengine.kernels.qsimd.VARIANT`) and, in a
  subprocess, with ``MBENGINE_INT8_KERNEL=generic``; ``pack``/``unpack``/
  ``correction`` and ``quantize_weight`` exactly as documented;
* simulated quantization: a float64 reference that quantizes each row by the
  documented rule (``sx = max |inlier x| / XMAX``, ``q = round(x / sx)``;
  XMAX = 127 but for the 7-bit ``maddubs7`` variant), and the kernel's whole
  scratch row equals :func:`~mbengine.kernels.qlinear.encode` of it,
  multiplies in integers, dequantizes, adds the outlier channels in float,
  the bias, then activation, residual and norm. The bound, with u = 2**-24:

  - before the epilogue (act 0, no residual, no norm), per element
    ``|ours - ref| <= (8 + 2 J) u m`` with ``m = sx sw sum_k |q wq| + sum_j |x_j ow_j| + |b|``:
    the int32 sum is exact and converts to float32 exactly (|acc| < 2**24:
    127 * 127 * K for K <= 1040), two float32 products (2u), the kernel's
    float32 ``sx`` against the float64 ``amax / XMAX`` (<= 2u; ``arcp`` may
    turn the division into a product by 1/XMAX), J outlier products and sums
    (2J u), the bias (u), plus slack;
  - round-half ties: the kernel forms ``x * (1 / sx)`` in float32, within
    ~4u of the exact quotient, i.e. within XMAX * 4u ~ 3e-5 of it. Where the
    exact quotient is within TIE = 1e-4 of a half-integer either rounding is
    right: the test checks the kernel's scratch ``qx`` equals the reference
    everywhere else and differs by at most 1 there, and the reference then
    uses the kernel's choice at those (rare) elements;
  - with the whole epilogue: the float32 epilogue is the float kernel's own
    code, so the float32 linear tests' tolerance (``assert_close32``) applies;

* quantization error: against the unquantized float64 linear, Gaussian data:
  ``||ours - ref|| <= 3e-2 ||inlier part of ref|| + 8u || |x_o| @ |ow| ||``
  (the outlier channels, ~1e6..1e7, cost float32 rounding only).

Plus NaN/Inf rows, NaN through relu-like activations, and rows whose
maximum is so small that 1 / scale overflows float32.

Every micro-kernel variant runs this whole file: tests/test_compile_targets.py
runs it in subprocesses compiled for other CPUs (``NUMBA_CPU_NAME``) and with
forced variants.
"""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mbengine.kernels import qlinear as Q
from mbengine.kernels.target import TARGET

from .helpers import (
    CODES,
    EPS,
    NAME_OF_CODE,
    NORMS,
    SENTINEL,
    SETTINGS,
    assert_close32,
    assert_frame_untouched,
    framed,
    norm_ref,
    readonly,
    rel_err,
)
from .reference import ACT

U = 2.0**-24  # float32 unit roundoff
TIE = 1e-4  # |x / sx - (n + 1/2)| below this: either rounding is right (module doc)
QX_FILL = 77  # scratch cells beyond the rows/columns a call uses must keep this
COLS = Q.COLS


# ----------------------------------------------------------------------------- helpers
def ro(a, dtype):
    a = np.ascontiguousarray(a, dtype=dtype)
    a.flags.writeable = False
    return a


def int8_weight(w, outliers):
    """A float (N, K) weight as the kernel takes it: outlier columns out of the int8 part, into ``ow``."""
    N, K = w.shape
    oidx = np.asarray(sorted(outliers), np.int64)
    inl = np.array(w, np.float32)
    inl[:, oidx] = 0.0
    wq, sw = Q.quantize_weight(inl)
    wp = Q.pack(wq)
    P = wp.shape[0]
    sw_pad = np.zeros(P * COLS, np.float32)
    sw_pad[:N] = sw
    ow = np.asarray(w, np.float32)[:, oidx].T.reshape(len(oidx), N)
    return dict(
        wq=wq,
        sw=sw,
        wp=wp,
        sw_pad=ro(sw_pad, np.float32),
        corr=ro(Q.correction(wp), np.int32),
        mask=Q.channel_mask(K, oidx),
        oidx=ro(oidx, np.int64),
        ow=ro(ow, np.float32),
    )


def scratch(M, K, extra_rows=0, extra_cols=0):
    K4 = -(-K // 4)
    qx = np.full((M + extra_rows, 4 * K4 * Q.QX_BYTES + extra_cols), QX_FILL, Q.QX_DTYPE)
    sx = np.full(M + extra_rows, SENTINEL, np.float32)
    return qx, sx


def call_qlinear(x, x_off, qw, qx, sx, b, act, res, res_off, norm, nw, nb, eps, out, out_off, threads=1):
    Q.qlinear(
        x,
        x_off,
        qw["mask"],
        qx,
        sx,
        qw["wp"],
        qw["sw_pad"],
        qw["corr"],
        qw["oidx"],
        qw["ow"],
        b,
        act,
        res,
        res_off,
        norm,
        nw,
        nb,
        eps,
        out,
        out_off,
        threads,
        NEXT_WEIGHT,
    )


NEXT_WEIGHT = np.arange(300, dtype=np.int32).view(np.uint8)  # bytes to prefetch: a hint, no effect on results


def quantize_ref(xin, inlier):
    """float64 (M, K) -> (q, s, ambiguous): the documented per-row rule, exactly."""
    amax = np.where(inlier[None, :], np.abs(xin), 0.0).max(axis=1, initial=0.0)
    s = np.where(amax > 0, amax / float(Q.XMAX), 1.0)
    t = xin / s[:, None]
    q = np.clip(np.rint(t), -Q.XMAX, Q.XMAX)
    ambiguous = (np.abs(t - np.floor(t) - 0.5) < TIE) & inlier[None, :]
    return q, s, ambiguous


def epilogue_ref(v, b, act, res, norm, nw, nb, eps):
    y = v + b
    if act:
        y = ACT[NAME_OF_CODE[act]](y)
    if res is not None:
        y = y + res
    return norm_ref(y, norm, nw, nb, eps)


# ----------------------------------------------------------------------------- integers
def exact_case(M, N, K, kinds, extra_cols, seed, signed=True):
    """``signed`` False: non-negative activations through the tiles without maddubs' sign step."""
    rng = np.random.default_rng(seed)

    def values(shape, kind, top):
        if kind == "uniform":
            return rng.integers(-top, top + 1, shape)
        if kind == "extremes":
            return rng.choice(np.array([-top, top]), shape)
        return np.full(shape, top if kind == "max" else -top)

    xq = values((M, K), kinds[0], Q.XMAX)
    if not signed:
        xq = np.abs(xq)
    wq = values((N, K), kinds[1], 127).astype(np.int8)
    wp = Q.pack(wq)
    K4 = wp.shape[1]
    beyond = rng.integers(0, 100, (M, extra_cols)).astype(Q.QX_DTYPE)  # beyond the row: never read
    qx = np.ascontiguousarray(np.concatenate([Q.encode(xq, K4), beyond], axis=1))
    out = np.full((M, N), -7, np.int32)
    Q.qmatmul_exact(qx, wp, Q.correction(wp), out, signed)
    np.testing.assert_array_equal(out, xq.astype(np.int64) @ wq.T.astype(np.int64))


VALUE_KINDS = st.sampled_from(["uniform", "uniform", "extremes", "max", "min"])


@given(
    M=st.integers(1, 40),
    N=st.one_of(st.integers(1, 100), st.sampled_from([COLS, 2 * COLS, COLS + 1])),
    K=st.one_of(st.integers(1, 300), st.sampled_from([1, 3, 4, 5, 128, 299])),
    kinds=st.tuples(VALUE_KINDS, VALUE_KINDS),
    extra_cols=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=50, **SETTINGS)
# (where the CPU has AMX: 32 + 16 + 7 rows on its tiles and the register tiles, inputs a multiple of 64)
@example(M=55, N=COLS + 1, K=192, kinds=("extremes", "max"), extra_cols=3, seed=1)
def test_qmatmul_exact(M, N, K, kinds, extra_cols, seed):
    exact_case(M, N, K, kinds, extra_cols, seed)


@given(
    M=st.integers(1, 40),
    N=st.one_of(st.integers(1, 100), st.sampled_from([COLS, 2 * COLS, COLS + 1])),
    K=st.one_of(st.integers(1, 300), st.sampled_from([1, 3, 4, 5, 128, 299])),
    kinds=st.tuples(VALUE_KINDS, VALUE_KINDS),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=30, **SETTINGS)
def test_qmatmul_exact_without_sign_step(M, N, K, kinds, seed):
    """The tiles for rows with no negative input (maddubs: no sign step) give the same exact integers."""
    exact_case(M, N, K, kinds, 3, seed, signed=False)


GENERIC_SCRIPT = textwrap.dedent("""
    import numpy as np
    from mbengine.kernels import qlinear as Q
    assert Q.VARIANT == "generic" and Q.OFFSET == 0 and Q.QX_DTYPE is np.int8, (Q.VARIANT, Q.OFFSET)
    rng = np.random.default_rng(1234)
    shapes = [(1, 1, 1), (8, Q.COLS, 4), (9, 2 * Q.COLS + 3, 7), (40, 100, 300), (17, 64, 128), (3, 33, 1)]
    shapes += [tuple(int(v) for v in rng.integers(1, (41, 101, 301))) for _ in range(14)]
    for i, (M, N, K) in enumerate(shapes):
        kind = i % 4
        if kind == 0:
            xq, wq = rng.integers(-127, 128, (M, K)), rng.integers(-127, 128, (N, K))
        elif kind == 1:
            xq, wq = rng.choice([-127, 127], (M, K)), rng.choice([-127, 127], (N, K))
        else:
            xq, wq = np.full((M, K), 127 if kind == 2 else -127), np.full((N, K), 127)
        wq = wq.astype(np.int8)
        wp = Q.pack(wq)
        qx = np.zeros((M, 4 * wp.shape[1] + 3), np.int8)  # generic: the plain signed bytes, no offset
        qx[:, :K] = xq
        out = np.full((M, N), -7, np.int32)
        Q.qmatmul_exact(qx, wp, Q.correction(wp), out)
        expected = xq.astype(np.int64) @ wq.T.astype(np.int64)
        assert (out == expected).all(), ("mismatch", M, N, K, kind, np.argwhere(out != expected)[:5].tolist())
    print("generic ok", len(shapes))
""")


def test_qmatmul_exact_forced_generic(tmp_path):
    env = dict(os.environ, MBENGINE_INT8_KERNEL="generic", NUMBA_CACHE_DIR=str(tmp_path / "nbc"))
    proc = subprocess.run(
        [sys.executable, "-c", GENERIC_SCRIPT], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )  # (not the source tree: its mbengine/ has no kernels/)
    assert proc.returncode == 0, f"generic variant failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "generic ok" in proc.stdout


def test_bad_forced_variant_is_rejected(tmp_path):
    env = dict(os.environ, MBENGINE_INT8_KERNEL="avx9", NUMBA_CACHE_DIR=str(tmp_path / "nbc"))
    proc = subprocess.run(
        [sys.executable, "-c", "import mbengine.kernels.qsimd"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode != 0 and "MBENGINE_INT8_KERNEL" in proc.stderr


@given(N=st.integers(1, 100), K=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=30, **SETTINGS)
def test_pack_unpack_correction(N, K, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (N, K)).astype(np.int8)
    wp = Q.pack(w)
    P, K4 = -(-N // COLS), -(-K // 4)
    assert wp.shape == (P, K4, 4 * COLS) and wp.dtype == np.int8 and wp.flags.c_contiguous
    assert not wp.flags.writeable
    n, k = np.meshgrid(np.arange(N), np.arange(K), indexing="ij")
    np.testing.assert_array_equal(wp[n // COLS, k // 4, 4 * (n % COLS) + k % 4], w)  # the documented layout
    padded = np.zeros((P * COLS, K4 * 4), bool)
    padded[:N, :K] = True
    n, k = np.nonzero(~padded)
    assert (wp[n // COLS, k // 4, 4 * (n % COLS) + k % 4] == 0).all(), "padding is not zero"
    back = Q.unpack(wp, N, K)
    assert back.dtype == np.int8
    np.testing.assert_array_equal(back, w)
    corr = Q.correction(wp)
    assert corr.dtype == np.int32 and corr.shape == (P * COLS,)
    np.testing.assert_array_equal(corr[:N], Q.OFFSET * w.astype(np.int64).sum(axis=1))
    assert (corr[N:] == 0).all()


@pytest.mark.parametrize("groups", [1, 255, 256, 300])
@pytest.mark.parametrize("value", [-128, 127])
def test_correction_sums_are_exact_at_the_extremes(groups, value):
    """Column sums of the largest weights, on both sides of the int16 partial sums' limit (255 groups)."""
    from mbengine.kernels import layout

    w = np.full((3, 4 * groups), value, np.int8)
    w[1, ::3] = -value - 1  # another column, other values
    wp = layout.qpack(w, 8)
    expected = np.zeros(8, np.int64)
    expected[:3] = w.astype(np.int64).sum(axis=1)
    np.testing.assert_array_equal(layout.correction(wp, 1), expected)
    np.testing.assert_array_equal(layout.correction(wp, 3), 3 * expected)


@given(
    N=st.integers(1, 60),
    K=st.integers(1, 300),
    scale=st.sampled_from([1e-3, 1.0, 1e6]),
    zero_rows=st.lists(st.integers(0, 59), max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=30, **SETTINGS)
def test_quantize_weight(N, K, scale, zero_rows, seed):
    rng = np.random.default_rng(seed)
    w = (scale * rng.standard_normal((N, K)) * rng.uniform(0.01, 10.0, (N, 1))).astype(np.float32)
    zero = [r for r in zero_rows if r < N]
    w[zero] = 0.0
    q, s = Q.quantize_weight(w)
    assert q.dtype == np.int8 and q.shape == (N, K) and s.dtype == np.float32 and s.shape == (N,)
    assert (np.abs(q.astype(np.int64)) <= 127).all()
    amax = np.abs(w).max(axis=1)
    np.testing.assert_array_equal(s[amax == 0], 1.0)
    assert (q[amax == 0] == 0).all()
    nz = amax > 0
    np.testing.assert_allclose(s[nz], amax[nz].astype(np.float64) / 127, rtol=2 * U)
    assert (np.abs(q[nz]).max(axis=1) == 127).all(), "a row's largest weight must map to +-127"
    # |w - s q| <= s / 2, plus the float32 division's rounding of w / s (<= 127 u of s)
    err = np.abs(w.astype(np.float64) - s[:, None].astype(np.float64) * q)
    assert (err <= s[:, None].astype(np.float64) * (0.5 + 128 * U)).all()
    assert Q.quantize_weight(np.zeros((3, 0), np.float32))[0].shape == (3, 0)


# ----------------------------------------------------------------------------- simulated quantization
@st.composite
def qlinear_cases(draw):
    M = draw(st.integers(1, 40))
    K = draw(st.one_of(st.integers(1, 300), st.sampled_from([4, 127, 128, 129])))
    N = draw(st.one_of(st.integers(1, 100), st.sampled_from([COLS, 2 * COLS, 3 * COLS - 1])))
    J = draw(st.integers(0, min(3, K)))
    outliers = draw(st.lists(st.integers(0, K - 1), min_size=J, max_size=J, unique=True))
    act = draw(st.sampled_from(CODES))
    use_res = draw(st.booleans())
    norm = draw(NORMS)
    eps = draw(EPS)
    offs = draw(st.lists(st.integers(1, 9), min_size=3, max_size=3))  # windows inside wider buffers
    extra = draw(st.integers(0, 5))
    zero_row = draw(st.sampled_from(["none", "all", "inliers"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return M, K, N, outliers, act, use_res, norm, eps, offs, extra, zero_row, seed


def make_linear_data(rng, M, K, N, outliers, act, x_off, extra, zero_row="none", huge=True):
    inlier = np.ones(K, bool)
    inlier[outliers] = False
    xin = rng.standard_normal((M, K)) * rng.uniform(0.1, 10.0, (M, 1))  # rows of different scales
    if outliers:
        # MobileBERT's residual stream: a few channels of 1e6..1e7 (only through relu/none: a bounded
        # activation of such values is decided by float32 rounding); else just large enough to set the scale
        big = (
            10.0 ** rng.uniform(6, 7, (M, len(outliers)))
            if huge and act in (0, 1)
            else rng.uniform(20.0, 50.0, (M, len(outliers)))
        )
        xin[:, outliers] = big * rng.choice([-1.0, 1.0], big.shape)
    if zero_row != "none":
        r = int(rng.integers(M))
        if zero_row == "all":
            xin[r] = 0.0
        else:
            xin[r, inlier] = 0.0
    x = framed(M, x_off + K + extra, x_off, K, rng, xin)
    w = rng.standard_normal((N, K)) / math.sqrt(K)
    return x, w, inlier


def decoded(qx, M, K, K4):
    """The quantized values in the kernel's scratch rows (the layout of :func:`Q.encode`)."""
    if Q.SIGN_BYTES:
        return qx[:M, 4 * K4 : 4 * K4 + K].view(np.int8).astype(np.int64)
    return qx[:M, :K].astype(np.int64) - Q.OFFSET


def check_scratch(qx, sx, xin, inlier, M, K):
    """The kernel's quantized rows against the documented rule; returns the reference (q, s, ambiguous) with
    the kernel's choice at the ambiguous elements."""
    q, s, amb = quantize_ref(xin, inlier)
    K4 = -(-K // 4)
    width = 4 * K4 * Q.QX_BYTES
    got = decoded(qx, M, K, K4)
    d = np.where(inlier[None, :], got - q, 0)
    assert (d[~amb] == 0).all(), f"quantized activations differ at {np.argwhere((d != 0) & ~amb)[:5].tolist()}"
    assert (np.abs(d[amb]) <= 1).all()
    q = np.where(amb, got, q)
    # the whole row in the variant's layout (padding inputs: 0, plus OFFSET; sign planes), nothing beyond it
    np.testing.assert_array_equal(qx[:M, :width], Q.encode(got, K4))
    assert (qx[:M, width:] == QX_FILL).all() and (qx[M:] == QX_FILL).all(), "qx written beyond its rows/columns"
    np.testing.assert_allclose(sx[:M], s, rtol=2 * U)
    assert (sx[M:] == SENTINEL).all(), "sx written beyond M"
    return q, s, amb


def run_qlinear_case(M, K, N, outliers, act, use_res, norm, eps, offs, extra, zero_row, seed):
    rng = np.random.default_rng(seed)
    x_off, res_off, out_off = offs
    x, w, inlier = make_linear_data(rng, M, K, N, outliers, act, x_off, extra, zero_row)
    xin = x[:, x_off : x_off + K].astype(np.float64)
    qw = int8_weight(w, outliers)
    J = len(outliers)
    b = readonly(rng.standard_normal(N))
    if use_res:
        res = framed(M, res_off + N + extra, res_off, N, rng)
    else:
        res, res_off = np.zeros((1, 1), np.float32), -1
    if norm:
        nw, nb = readonly(rng.uniform(0.5, 1.5, N)), readonly(rng.normal(0.0, 0.1, N))
    else:
        nw = nb = readonly(np.zeros(1))
    x_before, res_before = x.copy(), res.copy()

    # 1. bare: bias only, the per-element bound of the module doc
    qx, sx = scratch(M, K, extra_rows=extra, extra_cols=extra)
    bare = framed(M, out_off + N + extra, out_off, N)
    call_qlinear(x, x_off, qw, qx, sx, b, 0, np.zeros((1, 1), np.float32), -1, 0, nw, nb, eps, bare, out_off)
    q, s, _ = check_scratch(qx, sx, xin, inlier, M, K)
    wq = qw["wq"].astype(np.float64)
    sw = qw["sw"].astype(np.float64)
    xo = xin[:, qw["oidx"]]  # the order of ow's rows
    ow = qw["ow"].astype(np.float64)
    deq = s[:, None] * sw[None, :] * (q @ wq.T)
    pre = deq + xo @ ow + b
    mag = s[:, None] * sw[None, :] * (np.abs(q) @ np.abs(wq).T) + np.abs(xo) @ np.abs(ow) + np.abs(b)
    ours = bare[:, out_off : out_off + N].astype(np.float64)
    assert np.isfinite(ours).all()
    bound = (8 + 2 * J) * U * mag
    bad = np.abs(ours - pre) > bound
    assert not bad.any(), (
        f"{bad.sum()} outputs beyond (8 + 2J) u m, e.g. {np.argwhere(bad)[:3].tolist()}: "
        f"{ours[bad][:3]} vs {pre[bad][:3]}"
    )
    assert_frame_untouched(bare, out_off, N)

    # 2. the whole epilogue
    qx2, sx2 = scratch(M, K, extra_rows=extra, extra_cols=extra)
    out = framed(M, out_off + N + extra, out_off, N)
    call_qlinear(x, x_off, qw, qx2, sx2, b, act, res, res_off, norm, nw, nb, eps, out, out_off)
    np.testing.assert_array_equal(qx2, qx)
    np.testing.assert_array_equal(sx2, sx)
    expected = epilogue_ref(
        deq + xo @ ow,
        b.astype(np.float64),
        act,
        res[:, res_off : res_off + N].astype(np.float64) if use_res else None,
        norm,
        nw.astype(np.float64),
        nb.astype(np.float64),
        eps,
    )
    assert_close32(out[:, out_off : out_off + N], expected)
    assert_frame_untouched(out, out_off, N)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(res, res_before)


@given(case=qlinear_cases())
@settings(max_examples=40, **SETTINGS)
def test_qlinear_simulated_quantization(case):
    run_qlinear_case(*case)


@given(
    M=st.integers(2, 3 * Q.TASK_ROWS),
    K=st.integers(1, 300),
    N=st.integers(1, 100),
    J=st.integers(0, 3),
    zeros=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=25, **SETTINGS)
def test_rows_without_negative_inputs_give_the_same_outputs(M, K, N, J, zeros, seed):
    """qlinear runs a task whose rows have no negative input (a ReLU's output) on the tiles without
    maddubs' sign step (.qsimd): its outputs equal the signed tiles'. In ``x2`` the first row of every
    task holds a negative input, which sends that task's other rows, the same as in ``x``, through the
    signed tiles."""
    rng = np.random.default_rng(seed)
    J = min(J, K)
    outliers = sorted(rng.choice(K, J, replace=False).tolist())
    x = np.abs(rng.standard_normal((M, K))) * rng.uniform(0.1, 10.0, (M, 1))
    x[rng.random((M, K)) < zeros] = 0.0  # ReLU outputs: many exact zeros
    x = readonly(x)
    x2 = x.copy()
    firsts = task_starts(M, 1)
    x2[firsts, 0] = -1.0
    w = rng.standard_normal((N, K)) / math.sqrt(K)
    qw = int8_weight(w, outliers)
    b = readonly(rng.standard_normal(N))
    outs = []
    for xs in (x, readonly(x2)):
        qx, sx = scratch(M, K)
        out = np.zeros((M, N), np.float32)
        call_qlinear(xs, 0, qw, qx, sx, b, 1, np.zeros((1, 1), np.float32), -1, 0, b, b, 1e-5, out, 0)
        outs.append(out)
    kept = ~np.isin(np.arange(M), firsts)
    np.testing.assert_array_equal(outs[0][kept], outs[1][kept])
    assert np.isfinite(outs[0]).all()


def task_starts(M, threads):
    """The first row of each of qlinear's tasks (:func:`Q.task_split`)."""
    tasks, blocks = Q.task_split(M, threads), -(-M // Q.ROWS)
    return [c * blocks // tasks * Q.ROWS for c in range(tasks)]


@given(M=st.integers(0, 2000), threads=st.integers(1, 16))
@settings(max_examples=200, **SETTINGS)
def test_task_split_gives_each_thread_the_same_rows(M, threads):
    """qlinear's tasks cover the rows once, in whole row blocks of at most TASK_BLOCKS, and come in a
    multiple of ``threads`` (when there are that many blocks), so that the parallel loop's equal runs of
    tasks are equal numbers of rows, give or take one block."""
    tasks = Q.task_split(M, threads)
    blocks = -(-M // Q.ROWS)
    bounds = [c * blocks // tasks for c in range(tasks + 1)]
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == blocks and (sizes >= (1 if blocks else 0)).all()
    assert sizes.max() <= Q.TASK_BLOCKS
    if blocks >= threads:
        assert tasks % threads == 0
        run = tasks // threads
        per_thread = np.diff(bounds[::run])
        assert per_thread.max() - per_thread.min() <= 1
    rows = np.minimum(np.array(bounds) * Q.ROWS, M)  # the tasks' first rows, then M
    assert rows[-1] == M and (M == 0 or (np.diff(rows) > 0).all())


@given(
    M=st.integers(1, 4 * Q.TASK_ROWS),
    K=st.integers(1, 200),
    N=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=15, **SETTINGS)
@example(M=56, K=128, N=40, seed=2)  # (AMX: 32 + 16 rows of a task on its tiles, or none, by the split)
def test_outputs_do_not_depend_on_the_task_split(M, K, N, seed):
    """The same inputs split for 1 to 5 threads (other tasks, and other rows sharing a task's sign step;
    where the CPU has AMX, rows on its tiles or on the register tiles) give the same outputs, bit for bit."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)) * rng.uniform(0.1, 10.0, (M, 1))
    x = readonly(np.where(rng.random((M, 1)) < 0.5, np.abs(x), x))  # some rows without a negative input
    qw = int8_weight(rng.standard_normal((N, K)) / math.sqrt(K), [])
    b = readonly(rng.standard_normal(N))
    outs = []
    for threads in range(1, 6):
        qx, sx = scratch(M, K)
        out = np.zeros((M, N), np.float32)
        call_qlinear(x, 0, qw, qx, sx, b, 1, np.zeros((1, 1), np.float32), -1, 0, b, b, 1e-5, out, 0, threads)
        outs.append(out)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


@given(
    M=st.integers(8, 40),
    K=st.integers(32, 300),
    N=st.integers(16, 100),
    J=st.integers(0, 3),
    act=st.sampled_from([0, 1]),
    x_off=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=20, **SETTINGS)
def test_qlinear_close_to_float_linear(M, K, N, J, act, x_off, seed):
    """Quantization error against the unquantized float64 linear (module doc: a loose bound)."""
    rng = np.random.default_rng(seed)
    outliers = sorted(rng.choice(K, J, replace=False).tolist())
    x, w, inlier = make_linear_data(rng, M, K, N, outliers, act, x_off, 2)
    xin = x[:, x_off : x_off + K].astype(np.float64)
    w32 = w.astype(np.float32).astype(np.float64)
    qw = int8_weight(w, outliers)
    b = readonly(rng.standard_normal(N))
    qx, sx = scratch(M, K)
    out = np.zeros((M, N), np.float32)
    call_qlinear(x, x_off, qw, qx, sx, b, act, np.zeros((1, 1), np.float32), -1, 0, b, b, 1e-5, out, 0)
    ref = epilogue_ref(xin @ w32.T, b.astype(np.float64), act, None, 0, None, None, 0.0)
    inl = xin[:, inlier] @ w32[:, inlier].T
    big = np.abs(xin[:, outliers]) @ np.abs(w32[:, outliers]).T
    err = np.linalg.norm(out - ref)
    assert err <= 3e-2 * np.linalg.norm(inl) + 8 * U * np.linalg.norm(big), (
        err / np.linalg.norm(inl),
        rel_err(out, ref),
    )
    if not outliers:
        assert rel_err(out, ref) < 3e-2


# ----------------------------------------------------------------------------- bad input
@given(
    M=st.integers(2, 20),
    K=st.integers(2, 100),
    N=st.integers(1, 70),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    where=st.sampled_from(["inlier", "outlier"]),
    act=st.sampled_from([c for c in CODES if c != 12]),
    norm=NORMS,
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=25, **SETTINGS)
def test_qlinear_nonfinite_input_shows(M, K, N, bad, where, act, norm, seed):
    """A NaN/Inf in a row makes that row's output non-finite (every output, if it sets the row's scale);
    the other rows stay finite."""
    rng = np.random.default_rng(seed)
    outliers = [int(rng.integers(K))]
    x, w, inlier = make_linear_data(rng, M, K, N, outliers, act, 0, 0, huge=False)
    r = int(rng.integers(M))
    k = outliers[0] if where == "outlier" else int(rng.choice(np.flatnonzero(inlier)))
    x[r, k] = bad
    qw = int8_weight(w, outliers)
    b = readonly(rng.standard_normal(N))
    nw, nb = readonly(rng.uniform(0.5, 1.5, N)), readonly(rng.normal(0.0, 0.1, N))
    qx, sx = scratch(M, K)
    out = np.zeros((M, N), np.float32)
    call_qlinear(x, 0, qw, qx, sx, b, act, np.zeros((1, 1), np.float32), -1, norm, nw, nb, 1e-5, out, 0)
    finite = np.isfinite(out)
    assert finite[np.arange(M) != r].all(), "a bad value leaked into other rows"
    if where == "inlier":
        assert not np.isfinite(sx[r])
        assert not finite[r].any(), f"row {r}: {finite[r].sum()} of {N} outputs finite despite {bad} in the input"
    elif np.isnan(bad) or act == 0:  # in float32: NaN * w, +-inf * w (a saturating act(+-inf) is rightly finite)
        assert not finite[r].all(), f"row {r}: every output finite despite {bad} in an outlier channel"


def test_qlinear_nan_through_relu2():
    x = np.full((1, 8), np.nan, np.float32)
    qw = int8_weight(np.ones((4, 8)), [])
    qx, sx = scratch(1, 8)
    out = np.zeros((1, 4), np.float32)
    b = readonly(np.zeros(4))
    call_qlinear(x, 0, qw, qx, sx, b, 12, np.zeros((1, 1), np.float32), -1, 0, b, b, 1e-5, out, 0)
    assert not np.isfinite(out).any()


@pytest.mark.parametrize("amax", [3e-37, 1e-38])
def test_qlinear_tiny_row(amax):
    rng = np.random.default_rng(5)
    M, K, N = 3, 64, 40
    x = rng.standard_normal((M, K))
    x[1] *= amax / np.abs(x[1]).max()
    x = x.astype(np.float32)
    w = rng.standard_normal((N, K)) / 8
    qw = int8_weight(w, [])
    qx, sx = scratch(M, K)
    out = np.zeros((M, N), np.float32)
    b = readonly(np.zeros(N))
    call_qlinear(x, 0, qw, qx, sx, b, 0, np.zeros((1, 1), np.float32), -1, 0, b, b, 1e-5, out, 0)
    ref = x.astype(np.float64) @ w.astype(np.float32).astype(np.float64).T
    assert rel_err(out[1], ref[1]) < 3e-2


# a variant the compile target cannot run, per architecture: (forced variant, target environment)
REFUSED = {
    "x86_64": [
        ("vnni", {"NUMBA_CPU_FEATURES": "-avx512vnni"}),
        ("vnni", {"NUMBA_CPU_NAME": "haswell"}),
        ("vnni", {"NUMBA_CPU_NAME": "skylake-avx512"}),
        ("maddubs", {"NUMBA_CPU_NAME": "x86-64"}),
    ],
    "aarch64": [("sdot", {"NUMBA_CPU_NAME": "cortex-a72"}), ("vnni", {})],
}


@pytest.mark.parametrize("variant, target", REFUSED.get(TARGET.arch, []))
def test_forced_variant_needs_the_target_feature(tmp_path, variant, target):
    """Forcing an instruction the compile target lacks is a clear error, not an LLVM abort while compiling."""
    env = dict(os.environ, MBENGINE_INT8_KERNEL=variant, NUMBA_CACHE_DIR=str(tmp_path / "nbc"), **target)
    for name in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"):
        if name not in target:
            env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", "import mbengine.kernels.qsimd"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and "cannot run it" in proc.stderr, proc.stderr[-2000:]
