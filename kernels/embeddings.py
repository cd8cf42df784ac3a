"""Embedding lookups: word embeddings with the trigram window, position + token type.

MobileBERT's trigram input concatenates, for each token t, the embeddings of
[t+1, t, t-1] (zero beyond the sequence). Hugging Face only zeroes beyond the
padded length, so the last real token of a right-padded row sees the [PAD]
embedding; ``mask_aware=1`` zeroes every neighbour whose attention mask is 0
instead, making a padded row equal to the same sequence run alone.
"""

from numba import njit, prange

from . import target  # noqa: F401 (first: it settles the compile target before any @njit exists)


@njit(cache=True, parallel=True)
def embed_words(ids, mask, word, scale, trigram, mask_aware, starts, out):
    """out[starts[b] + s, :] = word[ids[b, s]] (trigram: [next | this | prev], width 3E).

    Sequence b has the rows [starts[b], starts[b + 1]) of ``out`` (padded:
    ``starts[b] = b * S``; ragged: only its real tokens, back to back).
    ``word`` is float32, or int8 with a float32 ``scale`` per row (dequantized
    here); a float32 table comes with an empty ``scale``. ``mask_aware``: a
    one-element int64 array (the runner sets it per call, the plan is fixed).
    """
    B, S = ids.shape
    aware = mask_aware[0]
    E = word.shape[1]
    for r in prange(starts[B]):
        b = _sequence_of(starts, r)
        s = r - starts[b]
        if trigram == 0:
            _row(word, scale, ids[b, s], out, r, 0)
            continue
        if s + 1 < S and (aware == 0 or mask[b, s + 1] != 0):
            _row(word, scale, ids[b, s + 1], out, r, 0)
        else:
            out[r, :E] = 0.0
        _row(word, scale, ids[b, s], out, r, E)
        if s >= 1 and (aware == 0 or mask[b, s - 1] != 0):
            _row(word, scale, ids[b, s - 1], out, r, 2 * E)
        else:
            out[r, 2 * E : 3 * E] = 0.0


@njit(cache=True, inline="always")
def _row(word, scale, tok, out, r, off):
    E = word.shape[1]
    if scale.shape[0] == 0:
        for e in range(E):
            out[r, off + e] = word[tok, e]
    else:
        sc = scale[tok]
        for e in range(E):
            out[r, off + e] = word[tok, e] * sc


@njit(cache=True, parallel=True)
def embed_positions(position_ids, token_type_ids, pos, typ, starts, out):
    """out[starts[b] + s, :] = pos[position_ids[b, s]] + typ[token_type_ids[b, s]] for each row of ``out``."""
    B = position_ids.shape[0]
    H = pos.shape[1]
    for r in prange(starts[B]):
        b = _sequence_of(starts, r)
        s = r - starts[b]
        p = position_ids[b, s]
        t = token_type_ids[b, s]
        for h in range(H):
            out[r, h] = pos[p, h] + typ[t, h]


@njit(cache=True, parallel=True)
def gather_rows(src, src_off, width, starts, out):
    """out[b, :] = src[starts[b], src_off:src_off + width]: the first token of each sequence."""
    for b in prange(out.shape[0]):
        for j in range(width):
            out[b, j] = src[starts[b], src_off + j]


@njit(cache=True, inline="always")
def _sequence_of(starts, r):
    """The sequence whose rows [starts[b], starts[b + 1]) hold row r (binary search)."""
    lo, hi = 0, starts.shape[0] - 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= r:
            lo = mid
        else:
            hi = mid - 1
    return lo
