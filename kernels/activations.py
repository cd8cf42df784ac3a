"""Element-wise activations, by integer code, usable inside other kernels.

Every stateless activation that Hugging Face's ``ACT2FN`` offers is here, with
the same formula (``gelu`` is the exact erf form, ``gelu_new`` and friends the
tanh approximation). ``prelu`` and ``xielu`` carry learnable parameters and are
not supported.
"""

import math

import numpy as np
from numba import njit

from . import target  # noqa: F401 (first: it settles the compile target before any @njit exists)
from .flags import FASTMATH
from .names import ACTIVATIONS, UNSUPPORTED, Act, activation_code  # noqa: F401 (the table, re-exported)

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)

# erf(x) ~ x * P(x^2) / Q(x^2) for |x| <= ERF_CLAMP, and erf(+-ERF_CLAMP) beyond (1 - erf(3.92) = 3.6e-8,
# under float32's rounding of 1). Coefficients fitted by bench/fit_erf.py (rational least squares, iteratively
# reweighted towards the largest errors): within 2.9e-8 of erf in float64 and 3.6e-8 once rounded to float32,
# as close as erf's own float32 rounding (3.0e-8); branch-free, so a loop over it vectorises.
ERF_CLAMP = 3.92
ERF_P = (
    1.128379177989761,
    0.19217618662931713,
    0.05607402655908184,
    0.004253498158735418,
    0.00043009652181233166,
    7.528278760902951e-06,
)
ERF_Q = (
    1.0,
    0.5036453585970196,
    0.11757438864685335,
    0.016409751443064374,
    0.0014511667252227762,
    7.794802005092055e-05,
    3.0012301749371417e-07,
)
_P0, _P1, _P2, _P3, _P4, _P5 = ERF_P
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6 = ERF_Q


@njit(cache=True, inline="always")
def erf_rational(x):
    """erf of a float64, branch-free (module constants ERF_*): what the linear kernel's gelu uses."""
    c = min(max(x, -ERF_CLAMP), ERF_CLAMP)
    s = c * c
    p = ((((_P5 * s + _P4) * s + _P3) * s + _P2) * s + _P1) * s + _P0
    q = (((((_Q6 * s + _Q5) * s + _Q4) * s + _Q3) * s + _Q2) * s + _Q1) * s + _Q0
    return c * p / q


@njit(cache=True, inline="always")
def gelu_rational(x):
    """Hugging Face's exact (erf) gelu of a float64, through :func:`erf_rational`."""
    return 0.5 * x * (1.0 + erf_rational(x * _INV_SQRT2))


# error_model="numpy": no zero-division check on the division (Python's raises), which would keep the loop
# scalar; the denominator Q(x^2) >= 1 is never zero.
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def gelu_bias(o, b, c0):
    """o[n] = gelu(o[n] + b[c0 + n]) over a float32 row slice: the linear kernel's gelu epilogue (float64 inside)."""
    for n in range(o.shape[0]):
        o[n] = np.float32(gelu_rational(np.float64(o[n]) + np.float64(b[c0 + n])))


@njit(cache=True, inline="always")
def _softplus(x):
    # torch.nn.functional.softplus with beta=1, threshold=20
    if x > 20.0:
        return x
    return math.log1p(math.exp(x))


@njit(cache=True, inline="always")
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def apply_activation(x, code):
    """act(x) for a float64 scalar x; ``code`` from :data:`ACTIVATIONS`."""
    if code == Act.LINEAR:
        return x
    if code == Act.RELU:
        return 0.0 if x <= 0.0 else x  # NaN stays NaN, as in torch
    if code == Act.RELU6:
        return min(max(x, 0.0), 6.0)
    if code == Act.GELU:
        return 0.5 * x * (1.0 + math.erf(x * _INV_SQRT2))
    if code == Act.GELU_TANH:
        return 0.5 * x * (1.0 + math.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
    if code == Act.GELU_FAST:
        return 0.5 * x * (1.0 + math.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))
    if code == Act.QUICK_GELU:
        return x * _sigmoid(1.702 * x)
    if code == Act.SILU:
        return x * _sigmoid(x)
    if code == Act.TANH:
        return math.tanh(x)
    if code == Act.SIGMOID:
        return _sigmoid(x)
    if code == Act.GELU_10:
        return min(max(0.5 * x * (1.0 + math.erf(x * _INV_SQRT2)), -10.0), 10.0)
    if code == Act.MISH:
        return x * math.tanh(_softplus(x))
    if code == Act.RELU2:
        r = 0.0 if x <= 0.0 else x
        return r * r
    if code == Act.LEAKY_RELU:
        return x if x >= 0.0 else 0.01 * x
    if code == Act.HARDSWISH:
        return x * min(max(x + 3.0, 0.0), 6.0) / 6.0
    if code == Act.LAPLACE:
        return 0.5 * (1.0 + math.erf((x - 0.707107) / (0.282095 * math.sqrt(2.0))))
    if code == Act.SQRTSOFTPLUS:
        return math.sqrt(_softplus(x))
    return math.nan
