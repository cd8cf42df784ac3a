"""Fused multi-head self-attention, one (batch, head) per parallel task.

For each query row i of sequence b and head h (head width D, columns h*D..):

    s_j   = scale * (q_i . k_j) + mask_add[b, j]
    p_j   = exp(s_j - max_j s) / sum_j exp(s_j - max_j s)
    out_i = sum_j p_j v_j

Q, K and V are column windows of token-major buffers (row b*S + s), and the
context is written straight into the token-major output layout, so no
transposes happen. Only one row of scores per (batch, head) exists at a time,
in ``scratch[b*H + h]``. ``mask_add`` is 0 for visible keys and a large
negative number (float32 min, as Hugging Face uses) for padding. With
``want_probs`` the probabilities are also stored in ``probs[b, h, i, :]``.
"""

import math

import numpy as np
from numba import njit, prange

from .flags import FASTMATH


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def attention(q, q_off, k, k_off, v, v_off, mask_add, heads, head_dim, scale,
              out, out_off, probs, want_probs, scratch):
    B, S = mask_add.shape
    D = head_dim
    for bh in prange(B * heads):
        b = bh // heads
        h = bh - b * heads
        sc = scratch[bh]
        row0 = b * S
        qc = q_off + h * D
        kc = k_off + h * D
        vc = v_off + h * D
        oc = out_off + h * D
        for i in range(S):
            qi = row0 + i
            m = -np.inf
            for j in range(S):
                kj = row0 + j
                acc = np.float32(0.0)
                for d in range(D):
                    acc += q[qi, qc + d] * k[kj, kc + d]
                s = acc * scale + mask_add[b, j]
                sc[j] = s
                if s > m:
                    m = s
            total = 0.0
            for j in range(S):
                e = math.exp(sc[j] - m)
                sc[j] = e
                total += e
            inv = np.float32(1.0 / total)
            for d in range(D):
                out[qi, oc + d] = 0.0
            for j in range(S):
                p = sc[j] * inv
                if want_probs:
                    probs[b, h, i, j] = p
                vj = row0 + j
                for d in range(D):
                    out[qi, oc + d] += p * v[vj, vc + d]
