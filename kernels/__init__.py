"""Numba kernels of mbengine: pure functions over preallocated arrays.

Installed as ``mbengine.kernels``. The kernels know nothing about configs,
checkpoints or Python objects: they take input and output buffers plus sizes.

Run from the repository root, this directory can also be found as a top-level
``kernels`` package (for example by ``transformers`` probing for the unrelated
Hugging Face ``kernels`` package). Imported under that name it stays an empty
package with no version, so such probes conclude it is not there.
"""

if __name__ == "mbengine.kernels":
    from . import target  # noqa: F401 (first: it settles the compile target before any @njit exists)
    from .activations import ACTIVATIONS, activation_code  # noqa: F401
