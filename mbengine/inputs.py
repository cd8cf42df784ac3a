"""A model call's inputs, checked against the config and completed (mask, token types, positions)."""

from __future__ import annotations

import numpy as np

from .config import MobileBertConfig
from .errors import InputError


def check_inputs(config: MobileBertConfig, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
    """(input_ids, attention_mask, token_type_ids, position_ids) as int64-compatible (batch, seq) arrays,
    the optional ones filled in; InputError names what is wrong."""
    c = config
    ids = _int_array("input_ids", input_ids)
    batch, seq = ids.shape
    if batch == 0 or seq == 0:
        raise InputError(f"input_ids is empty (shape {ids.shape}); expected at least one token per sequence")
    _check_range("input_ids", ids, c.vocab_size, f"vocab_size is {c.vocab_size}")
    if attention_mask is None:
        mask = np.ones((batch, seq), np.int64)
    else:
        mask = _int_array("attention_mask", attention_mask, ids.shape)
        if not _zeros_and_ones(mask):
            bad = mask[(mask != 0) & (mask != 1)][0]
            raise InputError(f"attention_mask holds {bad}; expected only 0 (padding) and 1 (token)")
    if token_type_ids is None:
        types = np.zeros((batch, seq), np.int64)
    else:
        types = _int_array("token_type_ids", token_type_ids, ids.shape)
        _check_range("token_type_ids", types, c.type_vocab_size, f"type_vocab_size is {c.type_vocab_size}")
    if position_ids is None:
        if seq > c.max_position_embeddings:
            raise InputError(
                f"input_ids has {seq} tokens per sequence, more than max_position_embeddings "
                f"= {c.max_position_embeddings}; truncate the input"
            )
        positions = np.broadcast_to(np.arange(seq, dtype=np.int64), (batch, seq))
    else:
        positions = _int_array("position_ids", position_ids, ids.shape)
        _check_range(
            "position_ids",
            positions,
            c.max_position_embeddings,
            f"max_position_embeddings is {c.max_position_embeddings}",
        )
    return ids, mask, types, positions


def _int_array(name: str, value, shape=None) -> np.ndarray:
    """``value`` as an integer array of ``shape`` (or any (batch, seq) shape); InputError otherwise.

    The attention mask may also be boolean or floating point, holding only 0 and 1.
    """
    arr = np.asarray(value)
    if shape is None and arr.ndim != 2:
        raise InputError(f"{name} must have shape (batch, seq), got an array of shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise InputError(f"{name} has shape {arr.shape}, expected {shape} (the shape of input_ids)")
    if name == "attention_mask" and arr.dtype.kind in "bf":
        if arr.dtype.kind == "f" and not _zeros_and_ones(arr):
            bad = arr[(arr != 0.0) & (arr != 1.0)].flat[0]
            raise InputError(f"attention_mask holds {bad}; expected only 0 (padding) and 1 (token)")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be an integer array, got dtype {arr.dtype}")
    return arr


def _zeros_and_ones(arr: np.ndarray) -> bool:
    # (np.isin is ~50x slower on a 128-token mask: it sorts)
    return bool(((arr == 0) | (arr == 1)).all())


def _check_range(name: str, arr: np.ndarray, high: int, what: str) -> None:
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= high:
        bad = lo if lo < 0 else hi
        where = tuple(int(i) for i in np.argwhere((arr < 0) | (arr >= high))[0])
        raise InputError(f"{name} holds {bad} at index {where}, outside [0, {high}) ({what})")
