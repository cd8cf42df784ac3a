"""Residual add followed by NoNorm or LayerNorm, for when no linear precedes it.

    out[i, o0 + n] = norm(a[i, a0 + n] + r[i, r0 + n])

``norm`` (:class:`.names.Norm`): none, NoNorm (``y * w + b``), LayerNorm
(biased variance, float64 statistics, ``eps``). ``r_off < 0`` means no residual. ``out`` may be
``a`` itself (same offset).
"""

from numba import njit, prange

from .linear import _layernorm_row
from .names import Norm


@njit(cache=True, parallel=True)
def add_norm(a, a_off, r, r_off, width, norm, w, b, eps, out, out_off):
    for i in prange(a.shape[0]):
        for n in range(width):
            v = a[i, a_off + n]
            if r_off >= 0:
                v += r[i, r_off + n]
            out[i, out_off + n] = v
        if norm == Norm.NONORM:
            for n in range(width):
                out[i, out_off + n] = out[i, out_off + n] * w[n] + b[n]
        elif norm == Norm.LAYERNORM:
            _layernorm_row(out, i, out_off, width, w, b, eps)
