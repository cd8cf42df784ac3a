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
def embed_words(ids, mask, word, scale, trigram, mask_aware, out):
    """out[b*S + s, :] = word[ids[b, s]] (trigram: [next | this | prev], width 3E).

    ``word`` is float32, or int8 with a float32 ``scale`` per row (dequantized
    here); a float32 table comes with an empty ``scale``.
    """
    B, S = ids.shape
    E = word.shape[1]
    for r in prange(B * S):
        b = r // S
        s = r - b * S
        if trigram == 0:
            _row(word, scale, ids[b, s], out, r, 0)
            continue
        if s + 1 < S and (mask_aware == 0 or mask[b, s + 1] != 0):
            _row(word, scale, ids[b, s + 1], out, r, 0)
        else:
            out[r, :E] = 0.0
        _row(word, scale, ids[b, s], out, r, E)
        if s >= 1 and (mask_aware == 0 or mask[b, s - 1] != 0):
            _row(word, scale, ids[b, s - 1], out, r, 2 * E)
        else:
            out[r, 2 * E:3 * E] = 0.0


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
def embed_positions(position_ids, token_type_ids, pos, typ, out):
    """out[b*S + s, :] = pos[position_ids[b, s]] + typ[token_type_ids[b, s]]."""
    B, S = position_ids.shape
    H = pos.shape[1]
    for r in prange(B * S):
        b = r // S
        s = r - b * S
        p = position_ids[b, s]
        t = token_type_ids[b, s]
        for h in range(H):
            out[r, h] = pos[p, h] + typ[t, h]


@njit(cache=True, parallel=True)
def gather_rows(src, src_off, width, stride, out):
    """out[b, :] = src[b * stride, src_off:src_off + width]: the first token of each row."""
    for b in prange(out.shape[0]):
        for j in range(width):
            out[b, j] = src[b * stride, src_off + j]
