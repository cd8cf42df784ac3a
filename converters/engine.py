"""The engine checkpoint: a :class:`~mbengine.weights.PackedWeights` on disk, loaded memory-mapped.

:func:`write` stores one, :func:`read` gives it back (no repacking on a CPU
of the same vector width); neither sees a model.

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
                          <HF name>          every other tensor the graph reads, under its
                                             Hugging Face name (embeddings, biases, norm
                                             weights); the base model's without "mobilebert."
                        metadata: {"format": "mbengine"} (one key: safetensors writes
                        metadata in hash order, so two keys would make two writes of
                        one model differ)
    tokenizer files     copied from the source when present

An int8 checkpoint (``"dtype": "int8"``, made by ``mbengine convert --dtype
int8`` or ``mbengine quantize``; see mbengine/quantize.py) differs in:

                          int8/<op name>           int8 panels (P, ceil(K / 4), 4 * tile_cols):
                                                   [p, g, 4c + j] = Wq[p * tile_cols + c, 4g + j]
                                                   (kernels.qlinear.pack)
                          scale/<op name>          (N,) float32, W[n] ~ scale[n] * Wq[n]
                          outliers/<op name>       (J,) int64 input channels applied in float32
                          outlier_weight/<op name> (J, N) float32, their rows of W.T
                          column_sums/<op name>    (P * tile_cols,) int32, sum over k of each
                                                   packed column (kernels.layout.column_sums:
                                                   read instead of summed at load; optional,
                                                   files written before it are summed)
                          packed/<op name>         float32 panels of the linears kept float32
                          embeddings.word_embeddings.weight          int8 (vocab, E)
                          scale/embeddings.word_embeddings.weight    (vocab,) float32 row scales
                        and the "mbengine" block has a "quantization" entry (calibration,
                        settings, which linears stayed float32, outlier channel count).

Panels are laid out for the CPU's vector width (``tile_cols``: 32 with AVX-512,
16 with AVX, 8 on NEON). A checkpoint packed for another width still loads:
its panels are repacked once at load time.
"""

from __future__ import annotations

import json
import os

import numpy as np

from mbengine import backend, safetensors_mmap
from mbengine.config import MobileBertConfig
from mbengine.errors import CheckpointError, FormatVersionError
from mbengine.graph import linear_shapes
from mbengine.weights import Int8Linear, PackedLinear, PackedWeights

from .canonical import HEADS

# what an int8 linear without outlier channels stores none of (Int8Linear.from_parts replaces both)
_NO_OUTLIERS = np.zeros(0, np.int64)
_NO_OUTLIER_WEIGHT = np.zeros((0, 0), np.float32)
_NO_OUTLIERS.flags.writeable = _NO_OUTLIER_WEIGHT.flags.writeable = False
FORMAT_VERSION = 1
PACKED = "packed/"
INT8_PARTS = ("int8/", "scale/", "outliers/", "outlier_weight/", "column_sums/")
_INT8_KINDS = frozenset(p[:-1] for p in INT8_PARTS)
_PACKED_KIND = PACKED[:-1]
DTYPES = ("float32", "int8")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def is_engine_checkpoint(config: MobileBertConfig) -> bool:
    """Whether a checkpoint's config.json has the "mbengine" block of an engine checkpoint."""
    return isinstance(config.extra.get("mbengine"), dict)


def read(directory: str | os.PathLike, config: MobileBertConfig | None = None) -> PackedWeights:
    """The PackedWeights of an engine checkpoint, memory-mapped (panels for another vector width:
    repacked once for this CPU).

    Refuses, naming the file, what this version cannot read and int8 parts
    that do not agree; whether the tensors fit the config is checked when a
    graph is built from them (:func:`mbengine.graph.build_graph`).
    """
    source = os.fspath(directory)
    config = MobileBertConfig.from_pretrained(source) if config is None else config
    meta = config.extra.get("mbengine")
    if not isinstance(meta, dict):
        raise CheckpointError(f'{source} is not an engine checkpoint (its config.json has no "mbengine" block)')
    check_meta(meta, source)
    tensors, _ = safetensors_mmap.load(os.path.join(source, "model.safetensors"))
    plain, packed, int8, scales = split_packed(tensors, source)
    head, pooler = meta.get("head"), meta.get("pooler", True)
    if not isinstance(pooler, bool):
        raise CheckpointError(f"{source}: config.json mbengine block: 'pooler' must be true or false, got {pooler!r}")
    problems = _meta_problems(meta, packed, tensors, int8, scales)
    if problems:
        raise CheckpointError(f"{source}: the tensors do not agree with config.json's mbengine block", problems)
    shapes = linear_shapes(config, head, pooler) if packed else {}  # (an int8 file stores its N)
    linears = dict(int8)
    for name, panels in packed.items():
        n = shapes.get(name, (panels.shape[0] * panels.shape[2],))[0]
        if panels.shape[2] != backend.layout().cols:
            panels = PackedLinear(panels, n).dense()  # packed for another vector width: once for this CPU
            linears[name] = PackedLinear.from_dense(panels)
        else:
            linears[name] = PackedLinear(panels, n)
    # (format 1 files of untied masked-LM models also hold the decoder's (V, E) weight, which the
    # packed decoder already holds)
    plain.pop("cls.predictions.decoder.weight", None)
    problems = [
        f"{source}: tensor {name!r} holds non-finite values (NaN or Inf)"
        for name, arr in plain.items()
        if arr.dtype.kind == "f" and not np.isfinite(arr).all()
    ]
    if problems:
        raise CheckpointError(f"{source}: invalid tensors", problems)
    return PackedWeights(config, head, pooler, plain, linears, scales, meta.get("quantization"), fused=True)


def _meta_problems(meta: dict, packed: dict, tensors: dict, int8: dict, scales: dict) -> list[str]:
    """Where the metadata's tile_cols and dtype disagree with the tensors stored."""
    cols = meta["tile_cols"]
    problems = [
        f"'packed/{name}' is {arr.dtype} {list(arr.shape)}, expected float32 panels (P, K, tile_cols = {cols})"
        for name, arr in sorted(packed.items())
        if arr.dtype != np.float32 or arr.ndim != 3 or arr.shape[2] != cols
    ]
    problems += [
        f"'int8/{name}' has panels {list(tensors['int8/' + name].shape)}, expected (P, K / 4, "
        f"4 * tile_cols = {4 * cols})"
        for name in sorted(int8)
        if tensors["int8/" + name].shape[2] != 4 * cols
    ]
    dtype = meta.get("dtype", "float32")
    if dtype == "float32" and (int8 or scales):
        names = sorted(int8) + sorted(scales)
        problems.append(
            f"dtype is float32 but {len(names)} weights are int8 ({', '.join(names[:3])}"
            f"{', ...' if len(names) > 3 else ''})"
        )
    if dtype == "int8" and not (int8 or scales):
        problems.append("dtype is int8 but no tensor is int8")
    return problems


def check_meta(meta: dict, source: str) -> None:
    """Refuse what this build does not understand, saying what it found."""
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"{source}: engine checkpoint format version {version!r}; this mbengine reads version "
            f"{FORMAT_VERSION} (convert the original checkpoint again with this version)"
        )
    if meta.get("dtype", "float32") not in DTYPES:
        raise FormatVersionError(
            f"{source}: engine checkpoint dtype {meta.get('dtype')!r} is not supported "
            f"by this mbengine ({' or '.join(DTYPES)})"
        )
    if not isinstance(meta.get("tile_cols"), int) or meta["tile_cols"] < 1:
        raise CheckpointError(f"{source}: config.json mbengine block has no valid 'tile_cols'")
    if meta.get("head") is not None and meta.get("head") not in HEADS:
        raise CheckpointError(
            f"{source}: config.json mbengine block names an unknown head {meta.get('head')!r} "
            f"(one of {', '.join(HEADS)}, or null)"
        )


def split_packed(tensors: dict[str, np.ndarray], source: str = "checkpoint") -> tuple[dict, dict, dict, dict]:
    """(plain tensors, {op name: float32 panels}, {op name: Int8Linear}, {tensor name: row scales}).

    The int8 parts are checked here (every part present, dtypes, shapes that
    agree, finite positive scales); whether they fit the config is checked
    when the graph is built.
    """
    plain, packed, parts = {}, {}, {}
    for name, arr in tensors.items():  # (~1000 names in a model: part of its start-up)
        kind, slash, rest = name.partition("/")
        if not slash:
            plain[name] = arr
        elif kind == _PACKED_KIND:
            packed[rest] = arr
        elif kind in _INT8_KINDS:
            parts.setdefault(rest, {})[kind] = arr
        else:
            plain[name] = arr
    int8, scales, problems = {}, {}, []
    # every scale checked at once (a model has ~300): each one alone only when some scale is bad
    stacked = [p["scale"] for p in parts.values() if "scale" in p and p["scale"].dtype == np.float32]
    every = np.concatenate([a.reshape(-1) for a in stacked]) if stacked else np.zeros(0, np.float32)
    all_fine = every.size == 0 or bool(every.min() > 0 and every.max() < np.inf)  # (NaN fails both)
    for name, part in sorted(parts.items()):
        where = f"{source}: {name!r}"
        scale = part.get("scale")
        if scale is None:
            problems.append(f"{where}: int8 data without 'scale/{name}'")
            continue
        if scale.dtype != np.float32 or scale.ndim != 1:
            problems.append(f"{where}: 'scale/{name}' is {scale.dtype} {list(scale.shape)}, expected float32 (N,)")
            continue
        if not all_fine and scale.size and not (scale.min() > 0 and scale.max() < np.inf):
            bad = int(np.count_nonzero(~(np.isfinite(scale) & (scale > 0))))
            problems.append(f"{where}: 'scale/{name}' holds {bad} zero, negative or non-finite scales")
            continue
        if name in plain:  # an int8 tensor with one scale per row (the word embeddings)
            table = plain[name]
            if table.dtype != np.int8 or table.ndim != 2 or table.shape[0] != scale.shape[0]:
                problems.append(
                    f"{where} is {table.dtype} {list(table.shape)} with {scale.shape[0]} row scales, "
                    f"expected int8 with one scale per row"
                )
            else:
                scales[name] = scale
            continue
        problems += _int8_linear(name, part, where, int8)
    for name, arr in plain.items():
        if (
            arr.dtype.char == "b"  # int8
            and name not in scales
            and not any(p.startswith(f"{source}: {name!r}") for p in problems)
        ):
            problems.append(f"{source}: int8 tensor {name!r} has no 'scale/{name}'")
    if problems:
        raise CheckpointError(f"{source}: invalid int8 weights", problems)
    return plain, packed, int8, scales


def _int8_linear(name: str, part: dict, where: str, int8: dict) -> list[str]:
    wq, scale = part.get("int8"), part["scale"]
    outliers = part.get("outliers", _NO_OUTLIERS)  # (Int8Linear.from_parts shares the empty ones)
    outlier_w = part.get("outlier_weight")
    if wq is None:
        return [f"{where}: 'scale/{name}' without 'int8/{name}'"]
    if wq.dtype != np.int8 or wq.ndim != 3:
        return [f"{where}: 'int8/{name}' is {wq.dtype} {list(wq.shape)}, expected int8 (P, K/4, 4 * tile_cols)"]
    if scale.shape[0] > wq.shape[0] * wq.shape[2] // 4 or scale.shape[0] <= (wq.shape[0] - 1) * wq.shape[2] // 4:
        return [f"{where}: {scale.shape[0]} scales for int8 panels of shape {list(wq.shape)}"]
    if outliers.dtype != np.int64 or outliers.ndim != 1:
        return [f"{where}: 'outliers/{name}' is {outliers.dtype} {list(outliers.shape)}, expected int64 (J,)"]
    J, N = outliers.shape[0], scale.shape[0]
    if outlier_w is None and J == 0:
        outlier_w = _NO_OUTLIER_WEIGHT  # (from_parts gives every linear without outliers its shared pair)
    elif outlier_w is None:
        outlier_w = np.zeros((0, N), np.float32)  # (the check below reports it missing)
    if outlier_w is not _NO_OUTLIER_WEIGHT and (outlier_w.dtype != np.float32 or outlier_w.shape != (J, N)):
        return [
            f"{where}: 'outlier_weight/{name}' is {outlier_w.dtype} {list(outlier_w.shape)}, expected float32 {[J, N]}"
        ]
    if J and not np.isfinite(outlier_w).all():
        return [f"{where}: 'outlier_weight/{name}' holds non-finite values"]
    K = 4 * wq.shape[1]  # the padded input width; the op's own width is checked when the graph binds
    if J and (outliers.min() < 0 or outliers.max() >= K or len(set(outliers.tolist())) != J):
        return [f"{where}: outlier channels must be distinct inputs in [0, {K}), got {outliers.tolist()}"]
    sums = part.get("column_sums")
    if sums is not None and (sums.dtype != np.int32 or sums.shape != (wq.shape[0] * wq.shape[2] // 4,)):
        return [
            f"{where}: 'column_sums/{name}' is {sums.dtype} {list(sums.shape)}, expected int32 "
            f"[{wq.shape[0] * wq.shape[2] // 4}] (one per packed column)"
        ]
    int8[name] = Int8Linear.from_parts(wq, scale, outliers, outlier_w, sums)
    return []


def write(
    weights: PackedWeights,
    directory: str | os.PathLike,
    *,
    tokenizer_from: str | os.PathLike | None = None,
    force: bool = False,
) -> str:
    """Write ``weights`` as an engine checkpoint (see the module doc for the layout).

    Atomic: everything goes to a staging directory beside ``directory``, which
    then replaces it in one step (:mod:`.publish`: the destination is always the
    old version or the new one); a failure or a kill leaves nothing that the
    next write does not remove. An existing ``directory`` is replaced only with
    ``force``. The same weights give byte-identical files.
    """
    import shutil  # (writing only: a process that just loads need not import these)

    from safetensors.numpy import save_file

    from .publish import Staging

    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not force:
        raise FileExistsError(f"{directory} exists; pass force=True (--force) to replace it")
    if not weights.fused:
        raise ValueError("an engine checkpoint holds fused linears: pack the weights with fuse=True")
    tensors = dict(weights.tensors)
    for name, w in weights.linears.items():
        if isinstance(w, PackedLinear):
            tensors[PACKED + name] = w.panels
        else:
            tensors["int8/" + name] = w.panels
            tensors["scale/" + name] = w.stored_scale
            tensors["column_sums/" + name] = w.column_sums()
            if w.outliers.size:
                tensors["outliers/" + name] = w.outliers
                tensors["outlier_weight/" + name] = w.outlier_w
    for name, scale in weights.row_scales.items():
        tensors["scale/" + name] = scale
    tensors = {
        k: np.ascontiguousarray(v, dtype=v.dtype if v.dtype in (np.int8, np.int32, np.int64) else np.float32)
        for k, v in tensors.items()
    }
    config = weights.config.to_dict()
    config["mbengine"] = {
        "format_version": FORMAT_VERSION,
        "dtype": weights.dtype,
        "tile_cols": backend.layout().cols,
        "head": weights.head,
        "pooler": bool(weights.pooler),
    }
    if weights.dtype == "int8":
        config["mbengine"]["quantization"] = weights.quantization
    stage = Staging(directory)
    with stage as tmp:
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "mbengine"})
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        if tokenizer_from is not None:
            for name in TOKENIZER_FILES:
                src = os.path.join(tokenizer_from, name)
                if os.path.isfile(src):
                    shutil.copyfile(src, os.path.join(tmp, name))  # (the umask's permissions, not the source's)
        if os.path.exists(directory) and not force:  # (appeared while we wrote)
            raise FileExistsError(f"{directory} exists; pass force=True (--force) to replace it")
        stage.publish()
    return directory
