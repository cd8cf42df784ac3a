"""Read Hugging Face's TensorFlow checkpoint ``tf_model.h5`` (Keras h5 weights) without TensorFlow.

The file is HDF5, read with h5py: the root's ``layer_names`` attribute lists
the top-level layers, each group's ``weight_names`` its weights (Keras splits
an attribute longer than HDF5's 64 KiB limit into ``weight_names0``,
``weight_names1``, ...: the full-size model's 1 100+ names always are), named like
``tf_mobile_bert_for_pre_training/mobilebert/encoder/layer_._0/attention/self/query/kernel:0``.
:func:`hf_name` maps such a name to Hugging Face's PyTorch name as transformers
does when it converts between its TF and PyTorch classes: drop the model scope
and ``:0``, ``layer_._0`` -> ``layer.0``, ``predictions___cls`` -> ``cls``,
``kernel``/``gamma``/``embeddings`` -> ``weight`` (kernels transposed),
``beta`` -> ``bias``.
"""

from __future__ import annotations

import os
import re

import numpy as np

from mbengine.errors import CheckpointError

# Keras leaf names -> PyTorch's (transformers' convert_tf_weight_name_to_pt_weight_name)
LEAF = {"kernel": "weight", "gamma": "weight", "embeddings": "weight", "beta": "bias"}


def hf_name(tf_name: str) -> tuple[str, bool]:
    """(HF PyTorch name, transpose?) of an HF TF weight name."""
    name = tf_name.replace(":0", "")
    name = re.sub(r"/[^/]*___([^/]*)/", r"/\1/", name)  # "predictions___cls" is the cls module's scope
    name = name.replace("_._", "/")  # "layer_._0": a list element
    name = re.sub(r"//+", "/", name)
    parts = name.split("/")
    if len(parts) > 1:
        parts = parts[1:]  # the model's own scope
    last = parts[-1]
    parts[-1] = LEAF.get(last, last)
    return ".".join(parts), last == "kernel"


def read_tf_h5(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of ``tf_model.h5`` under Hugging Face's PyTorch names."""
    try:
        import h5py
    except ImportError:
        raise CheckpointError(
            f"{path}: reading tf_model.h5 needs h5py, which is not installed: "
            "pip install h5py (or pip install 'mbengine[h5]')"
        ) from None
    path = os.fspath(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable HDF5 file ({e})") from None
    out = {}
    with f:
        try:
            layers = _names(f.attrs, "layer_names")
            if layers is None:
                raise CheckpointError(f"{path}: no 'layer_names' attribute (not Keras h5 weights)")
            for layer in layers:
                group = f[layer]
                for weight in _names(group.attrs, "weight_names") or []:
                    if weight not in group:
                        raise CheckpointError(f"{path}: weight {weight!r} is listed but missing")
                    arr = np.asarray(group[weight])
                    if arr.dtype.kind == "f" and arr.dtype != np.float32:
                        arr = arr.astype(np.float32)
                    name, transpose = hf_name(weight)
                    out[name] = np.ascontiguousarray(arr.T) if transpose else arr
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:  # h5py's errors on damaged files
            raise CheckpointError(f"{path}: unreadable HDF5 content ({type(e).__name__}: {e})") from None
    return out


def from_tf_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tensors saved by HF's TF classes to safetensors (names like ``mobilebert/embeddings/...:0``, no
    model scope) under HF's PyTorch names, kernels transposed as in :func:`read_tf_h5`."""
    out = {}
    for tf_name, arr in tensors.items():
        name, transpose = hf_name("model/" + tf_name)  # (hf_name drops the model's scope)
        out[name] = np.ascontiguousarray(arr.T) if transpose else arr
    return out


def _names(attrs, key: str) -> list[str] | None:
    """An attribute's list of names, joined from its chunks ``key0``, ``key1``, ... if Keras split it."""
    if key in attrs:
        return [_text(v) for v in attrs[key]]
    if f"{key}0" not in attrs:
        return None
    names, chunk = [], 0
    while f"{key}{chunk}" in attrs:
        names += [_text(v) for v in attrs[f"{key}{chunk}"]]
        chunk += 1
    return names


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
