"""Zero-copy, memory-mapped reading of ``.safetensors`` files.

The ``safetensors`` library returns copies; an inference engine wants the
weights to stay in the page cache and be shared between processes. The format
is an 8-byte little-endian header length, a JSON header mapping each tensor to
its dtype, shape and byte range, then the raw data. We map the file read-only
and hand out NumPy views into it. Every header entry is checked against the
file before any view is made.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import weakref

import numpy as np

from .errors import CheckpointError

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # converted to float32 by widening the bits
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """Return (header dict, offset of the data section)."""
    header, start, _ = _read_header(path)
    return header, start


def _read_header(path) -> tuple[dict, int, bytes]:
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        n = int.from_bytes(head, "little")
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path}: not a safetensors file (header length {n} does not fit a {size}-byte file)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    return header, 8 + n, raw


def load(path: str | os.PathLike, *, to_float32: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Map ``path`` and return ({name: read-only array}, metadata).

    Float32 tensors are views into the map. Other float types are converted to
    float32 (a copy) when ``to_float32``; integer tensors are returned as stored.
    """
    path = os.fspath(path)
    header, data_start, raw = _read_header(path)
    size = os.path.getsize(path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: safetensors __metadata__ must map names to strings, got {metadata!r:.200}")
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    data = np.frombuffer(mapped, np.uint8)  # read-only, as every view of it (the map is read-only)
    _LAYOUTS[id(data)] = (weakref.ref(data, lambda _, key=id(data): _LAYOUTS.pop(key, None)), raw, size)
    tensors: dict[str, np.ndarray] = {}
    problems = []
    ranges = []
    for name, info in header.items():  # (a model has ~1000 entries: this loop is part of its start-up)
        if not _entry_ok(info):
            problems.append(
                f"{name}: malformed header entry {info!r:.200} (expected dtype, shape and "
                "data_offsets: a string, a list of sizes, two offsets)"
            )
            continue
        dtype_name, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        dtype = _DTYPES.get(dtype_name)
        if dtype is None:
            problems.append(f"{name}: unsupported dtype {dtype_name!r:.40}")
            continue
        if end - begin != math.prod(shape) * dtype.itemsize:  # (exact: a product of huge sizes cannot wrap)
            problems.append(
                f"{name}: byte range [{begin}, {end}) does not hold a {dtype_name} tensor of shape {list(shape)}"
            )
            continue
        if data_start + end > size:
            problems.append(f"{name}: byte range [{begin}, {end}) runs past the end of the file")
            continue
        ranges.append((begin, end, name))
        if problems:
            continue  # (the file is refused: make no more views)
        arr = data[data_start + begin : data_start + end]
        if (data_start + begin) % dtype.itemsize:  # numba needs aligned data: copy the rare unaligned
            arr = arr.copy()  # tensor (the map itself is page-aligned)
        arr = arr.view(dtype).reshape(shape)
        if dtype_name == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif to_float32 and dtype in _WIDEN:
            arr = arr.astype(np.float32)
        if arr.flags.writeable:  # (a copy: views of the map are read-only already)
            arr.flags.writeable = False
        tensors[name] = arr
    if not problems:
        problems = _layout_problems(ranges, size - data_start)
    if problems:
        raise CheckpointError(f"{path}: corrupt safetensors file", problems)
    return tensors, metadata


# {id(map array): (weak reference to it, its file's header, the file's size)}: see layout_digest
_LAYOUTS: dict[int, tuple] = {}


def layout_digest(a: np.ndarray) -> str | None:
    """For the array :func:`load` made of a whole file's bytes (what its tensors are views of: their
    ``.base``), a digest of where each tensor lies in it (the header and the size); None for any other
    array. Two files with the same digest put every tensor at the same offset of their maps."""
    entry = _LAYOUTS.get(id(a))
    if entry is None or entry[0]() is not a:
        return None
    if isinstance(entry[1], bytes):  # (hashed when first asked: a process on Numba never asks)
        from .kernels.native import sha256  # (CPython's own: no OpenSSL)

        entry = _LAYOUTS[id(a)] = (entry[0], sha256(entry[1] + entry[2].to_bytes(8, "little")).hexdigest(), entry[2])
    return entry[1]


_WIDEN = (_DTYPES["F64"], _DTYPES["F16"])  # float types made float32 (BF16 has its own route)


def _is_count(v) -> bool:
    return type(v) is int and 0 <= v < 2**62  # (bool is a subclass of int, not int itself)


def _entry_ok(info) -> bool:
    if type(info) is not dict:
        return False
    shape, offsets = info.get("shape"), info.get("data_offsets")
    return (
        type(info.get("dtype")) is str
        and type(shape) is list
        and all(map(_is_count, shape))
        and type(offsets) is list
        and len(offsets) == 2
        and all(map(_is_count, offsets))
    )


def _layout_problems(ranges: list[tuple[int, int, str]], data_size: int) -> list[str]:
    """What breaks the format's rule that the tensors' byte ranges tile the data section: in offset
    order, each begins where the previous ends, the first at 0 and the last at the end of the file."""
    problems, at, last = [], 0, None
    for begin, end, name in sorted(ranges):
        if begin < at:
            problems.append(f"{name}: byte range [{begin}, {end}) overlaps {last}'s, which ends at {at}")
        elif begin > at:
            problems.append(f"{name}: byte range [{begin}, {end}) leaves bytes [{at}, {begin}) unused")
        at, last = max(at, end), name
    if at != data_size and not problems:
        problems.append(f"the tensors end at byte {at} of the data section, which has {data_size} bytes")
    return problems
