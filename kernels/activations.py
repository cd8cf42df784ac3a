"""Element-wise activations, by integer code, usable inside other kernels.

Every stateless activation that Hugging Face's ``ACT2FN`` offers is here, with
the same formula (``gelu`` is the exact erf form, ``gelu_new`` and friends the
tanh approximation). ``prelu`` and ``xielu`` carry learnable parameters and are
not supported.
"""

import math

from numba import njit

from . import target  # noqa: F401 (first: it settles the compile target before any @njit exists)
from .names import ACTIVATIONS, UNSUPPORTED, Act, activation_code  # noqa: F401 (the table, re-exported)

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


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
