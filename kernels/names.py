"""Activation names and their kernel codes: the table config validation reads.

Plain Python, importable without Numba (``MobileBertConfig`` checks
``hidden_act`` against it without compiling anything); the formulas behind
the codes are in :mod:`.activations`.
"""

# name -> code; several HF names share one formula.
ACTIVATIONS = {
    "linear": 0,
    "relu": 1,
    "relu6": 2,
    "gelu": 3,
    "gelu_python": 3,
    "gelu_new": 4,
    "gelu_pytorch_tanh": 4,
    "gelu_python_tanh": 4,
    "gelu_accurate": 4,
    "gelu_fast": 5,
    "quick_gelu": 6,
    "silu": 7,
    "swish": 7,
    "tanh": 8,
    "sigmoid": 9,
    "gelu_10": 10,
    "mish": 11,
    "relu2": 12,
    "leaky_relu": 13,
    "hardswish": 14,
    "laplace": 15,
    "sqrtsoftplus": 16,
}

UNSUPPORTED = {"prelu": "has a learnable slope", "xielu": "has learnable parameters"}


def activation_code(name: str) -> int:
    """The kernel code of an HF activation name (KeyError if unknown)."""
    return ACTIVATIONS[name]
