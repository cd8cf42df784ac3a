"""Numba kernels of mbengine: pure functions over preallocated arrays.

Installed as ``mbengine.kernels``. The kernels know nothing about configs,
checkpoints or Python objects: they take input and output buffers plus sizes.

Importing the package imports nothing (``names``, the activation table config
validation reads, needs no Numba); every module that compiles imports
``target`` before its first ``@njit``, so the compile target is settled first
(see target.py).

Numba's on-disk cache (``cache=True``) is keyed by each function's own source
file: a cached kernel that calls a function or intrinsic of *another* file
(``qlinear`` calls ``qsimd``'s tiles, ``linear`` calls ``simd``'s) is not
recompiled when only that other file changes. After editing a kernel file,
clear the cache (``NUMBA_CACHE_DIR``, or the ``__pycache__`` folders here)
before trusting a test or a timing; CI always starts from an empty one.

Run from the repository root, this directory can also be found as a top-level
``kernels`` package (for example by ``transformers`` probing for the unrelated
Hugging Face ``kernels`` package). Imported under that name it stays an empty
package with no version, so such probes conclude it is not there.
"""
