"""Float32 linear layer with a fused epilogue.

    out[i, o0 + n] = norm( act( sum_k x[i, x0 + k] * w[n, k] + b[n] ) + res[i, r0 + n] )

``w`` is stored as Hugging Face stores ``nn.Linear.weight``: (N, K), one row
per output, so both operands are contiguous along K. Inputs and outputs are
column windows of larger row-major buffers, given as (buffer, column offset):
the graph packs several tensors side by side in one buffer.

Epilogue order is bias, activation, residual, norm. ``res_off < 0`` means no
residual. ``norm``: 0 none, 1 NoNorm (``y * nw + nb``), 2 LayerNorm over the N
outputs of the row (``eps``).
"""

from numba import njit, prange

from .activations import apply_activation
from .flags import FASTMATH

NORM_NONE = 0
NORM_NONORM = 1
NORM_LAYERNORM = 2


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def linear(x, x_off, w, b, act, res, res_off, norm, nw, nb, eps, out, out_off):
    M = x.shape[0]
    N, K = w.shape
    for i in prange(M):
        for n in range(N):
            acc = 0.0
            for k in range(K):
                acc += x[i, x_off + k] * w[n, k]
            out[i, out_off + n] = acc
        _epilogue_row(out, i, out_off, N, b, act, res, res_off, norm, nw, nb, eps)


@njit(cache=True, inline="always")
def _epilogue_row(out, i, out_off, N, b, act, res, res_off, norm, nw, nb, eps):
    """Apply bias, activation, residual and norm to out[i, out_off:out_off+N]."""
    for n in range(N):
        v = out[i, out_off + n] + b[n]
        if act != 0:
            v = apply_activation(v, act)
        if res_off >= 0:
            v += res[i, res_off + n]
        out[i, out_off + n] = v
    if norm == NORM_NONORM:
        for n in range(N):
            out[i, out_off + n] = out[i, out_off + n] * nw[n] + nb[n]
    elif norm == NORM_LAYERNORM:
        _layernorm_row(out, i, out_off, N, nw, nb, eps)


@njit(cache=True, inline="always")
def _layernorm_row(a, i, off, N, nw, nb, eps):
    # two-pass statistics in float64: activations reach ~1e7
    s = 0.0
    for n in range(N):
        s += a[i, off + n]
    mean = s / N
    ss = 0.0
    for n in range(N):
        d = a[i, off + n] - mean
        ss += d * d
    inv = 1.0 / (ss / N + eps) ** 0.5
    for n in range(N):
        a[i, off + n] = (a[i, off + n] - mean) * inv * nw[n] + nb[n]
