"""mbengine's benchmarks: run them as ``python -m bench NAME`` (bench/__main__.py lists them).

Run from the repository's root, ``python -m`` puts the root first on ``sys.path``, and the
root's ``kernels/`` and ``converters/`` folders (installed as ``mbengine.kernels`` and
``mbengine.converters``) would then shadow installed packages of those names:
transformers 5 imports Hugging Face's ``kernels`` package, and found ours instead. The
root is taken off the path here (``bench`` itself is imported already; mbengine comes
from its installation, as the README's ``pip install`` makes it).
"""

import os as _os
import sys as _sys

_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isdir(_os.path.join(_ROOT, "kernels")):  # (the repository's layout, not an installed one)
    _sys.path[:] = [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != _ROOT]
