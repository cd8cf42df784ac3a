"""Numba kernels of mbengine: pure functions over preallocated arrays.

Installed as ``mbengine.kernels``. The kernels know nothing about configs,
checkpoints or Python objects: they take input and output buffers plus sizes.
"""

if __name__ != "mbengine.kernels":  # pragma: no cover - guard against a second copy
    raise ImportError(
        "the kernels package must be imported as 'mbengine.kernels' (it is installed "
        f"as a subpackage of mbengine); it was imported as {__name__!r}. "
        "Install the project (pip install .) and use 'import mbengine.kernels'."
    )

from .activations import ACTIVATIONS, activation_code  # noqa: E402,F401
