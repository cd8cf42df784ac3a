"""The kernels' integer codes by name: activations (and the Hugging Face names for each) and norms.

Plain Python, importable without Numba (``MobileBertConfig`` checks
``hidden_act`` against the table without compiling anything). The kernels
compare against these members, which Numba folds to constants; the graph and
the runner pass plain ints. The formulas behind the activation codes are in
:mod:`.activations`.
"""

from enum import IntEnum


class Act(IntEnum):
    """Activation codes (kernels.activations.apply_activation)."""

    LINEAR = 0
    RELU = 1
    RELU6 = 2
    GELU = 3  # the exact erf form
    GELU_TANH = 4  # the tanh approximation
    GELU_FAST = 5
    QUICK_GELU = 6
    SILU = 7
    TANH = 8
    SIGMOID = 9
    GELU_10 = 10
    MISH = 11
    RELU2 = 12
    LEAKY_RELU = 13
    HARDSWISH = 14
    LAPLACE = 15
    SQRTSOFTPLUS = 16


class Norm(IntEnum):
    """What follows a linear or a residual add."""

    NONE = 0
    NONORM = 1  # y * w + b, elementwise (MobileBERT's)
    LAYERNORM = 2  # over the row, float64 statistics, eps


# Hugging Face activation name -> code; several names share one formula.
ACTIVATIONS = {
    "linear": Act.LINEAR,
    "relu": Act.RELU,
    "relu6": Act.RELU6,
    "gelu": Act.GELU,
    "gelu_python": Act.GELU,
    "gelu_new": Act.GELU_TANH,
    "gelu_pytorch_tanh": Act.GELU_TANH,
    "gelu_python_tanh": Act.GELU_TANH,
    "gelu_accurate": Act.GELU_TANH,
    "gelu_fast": Act.GELU_FAST,
    "quick_gelu": Act.QUICK_GELU,
    "silu": Act.SILU,
    "swish": Act.SILU,
    "tanh": Act.TANH,
    "sigmoid": Act.SIGMOID,
    "gelu_10": Act.GELU_10,
    "mish": Act.MISH,
    "relu2": Act.RELU2,
    "leaky_relu": Act.LEAKY_RELU,
    "hardswish": Act.HARDSWISH,
    "laplace": Act.LAPLACE,
    "sqrtsoftplus": Act.SQRTSOFTPLUS,
}

UNSUPPORTED = {"prelu": "has a learnable slope", "xielu": "has learnable parameters"}


def activation_code(name: str) -> int:
    """The kernel code of an HF activation name, as a plain int (KeyError if unknown)."""
    return int(ACTIVATIONS[name])
