"""The engine checkpoint: a directory that loads memory-mapped, with no repacking.

Layout (format version 1)::

    config.json         Hugging Face's config fields, plus an "mbengine" block:
                          {"format_version": 1, "dtype": "float32", "tile_cols": 32,
                           "head": "masked_lm" | ... | null, "pooler": true}
    model.safetensors   float32 tensors:
                          packed/<op name>   the weight of every linear op, packed into
                                             (ceil(N / tile_cols), K, tile_cols) panels as
                                             kernels.linear.pack makes them; sibling
                                             projections fused by the graph are one op
                                             (e.g. "packed/encoder.layer.0.bottleneck.input+
                                             encoder.layer.0.bottleneck.attention+
                                             encoder.layer.0.attention.value")
                          <HF name>          every other tensor under its Hugging Face
                                             name (embeddings, biases, norm weights);
                                             the base model's without "mobilebert."
                        metadata: {"format": "mbengine", "format_version": "1"}
    tokenizer files     copied from the source when present

Panels are laid out for the CPU's vector width (``tile_cols``: 32 with AVX-512,
16 with AVX, 8 on NEON). A checkpoint packed for another width still loads:
its panels are repacked once at load time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from mbengine.errors import CheckpointError, FormatVersionError

FORMAT_VERSION = 1
PACKED = "packed/"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def is_engine_checkpoint(config_dict: dict) -> bool:
    return isinstance(config_dict.get("mbengine"), dict)


def check_meta(meta: dict, source: str) -> None:
    """Refuse what this build does not understand, saying what it found."""
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"{source}: engine checkpoint format version {version!r}; this mbengine reads version "
            f"{FORMAT_VERSION} (convert the original checkpoint again with this version)")
    if meta.get("dtype", "float32") != "float32":
        raise FormatVersionError(f"{source}: engine checkpoint dtype {meta.get('dtype')!r} is not supported "
                                 "by this mbengine (float32 only)")
    if not isinstance(meta.get("tile_cols"), int) or meta["tile_cols"] < 1:
        raise CheckpointError(f"{source}: config.json mbengine block has no valid 'tile_cols'")


def split_packed(tensors: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(plain tensors, {op name: packed panels})."""
    plain, packed = {}, {}
    for name, arr in tensors.items():
        if name.startswith(PACKED):
            packed[name[len(PACKED):]] = arr
        else:
            plain[name] = arr
    return plain, packed


def write(model, directory: str | os.PathLike, *, tokenizer_from: str | os.PathLike | None = None,
          force: bool = False) -> str:
    """Write ``model`` (any mbengine model class instance) as an engine checkpoint.

    Atomic: everything goes to a temporary directory beside ``directory``,
    renamed into place at the end; a failure leaves nothing behind. An existing
    ``directory`` is replaced only with ``force``.
    """
    from safetensors.numpy import save_file

    from mbengine.kernels.simd import COLS

    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not force:
        raise FileExistsError(f"{directory} exists; pass force=True (--force) to replace it")
    graph = model.runner().graph  # packs every weight into model's cache
    tensors = {PACKED + name: arr for (kind, name), arr in model._cache.items() if kind == "packed"}
    from mbengine.converters.canonical import linear_weight_names

    tied = "cls.predictions.decoder.weight" if model.config.tie_word_embeddings else None
    # linear weights live only packed; one no op uses (the embedding transformation of a
    # model without trigram input and embedding_size == hidden_size) is not stored at all
    linear = linear_weight_names(model.config, model.HEAD, model.pooler)
    for name, arr in model.weights.items():
        if name in graph.packed_sources or name in linear or name == tied:
            continue
        tensors[name] = arr
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    config = model.config.to_dict()
    config["mbengine"] = {"format_version": FORMAT_VERSION, "dtype": "float32", "tile_cols": COLS,
                          "head": model.HEAD, "pooler": bool(model.pooler)}
    parent = os.path.dirname(directory) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".mbengine-convert-", dir=parent)
    try:
        save_file(tensors, os.path.join(tmp, "model.safetensors"),
                  metadata={"format": "mbengine", "format_version": str(FORMAT_VERSION)})
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        if tokenizer_from is not None:
            for name in TOKENIZER_FILES:
                src = os.path.join(tokenizer_from, name)
                if os.path.isfile(src):
                    shutil.copy2(src, os.path.join(tmp, name))
        if os.path.exists(directory):
            old = tempfile.mkdtemp(prefix=".mbengine-old-", dir=parent)
            os.rename(directory, os.path.join(old, "previous"))
            os.rename(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def unpack(wp: np.ndarray, n: int) -> np.ndarray:
    """Packed panels (P, K, C) back to the (N, K) weight (inverse of kernels.linear.pack)."""
    P, K, C = wp.shape
    return np.ascontiguousarray(wp.transpose(0, 2, 1).reshape(P * C, K)[:n])
