"""Read ``pytorch_model.bin`` without torch, and without trusting its pickle.

A PyTorch checkpoint is a pickle, and unpickling runs whatever callables the
file names. Here the unpickler's ``find_class`` resolves only the handful of
globals a tensor state dict needs (``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and friends, the ``torch.*Storage``
types), each to a harmless stand-in of ours; any other global (``os.system``,
``builtins.eval``, ...) stops the load before it is called.

Two container formats exist:

* zip (torch >= 1.6): ``<name>/data.pkl`` plus one ``<name>/data/<key>`` entry
  of raw little-endian bytes per storage;
* legacy: four consecutive pickles (magic number, protocol version, system
  info, the object) then the storage keys, then per storage an int64 element
  count followed by its bytes.

Every tensor comes back as a contiguous NumPy array: floating-point ones
(fp16, bf16, fp64) as float32, integer and bool ones (``position_ids``
buffers) as stored. Strided or offset views are honoured (``as_strided`` on
the storage, bounds-checked first).

Sharded checkpoints (``pytorch_model.bin.index.json``) and sharded safetensors
(``model.safetensors.index.json``) are read shard by shard.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np

from mbengine.errors import CheckpointError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bf16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for torch.XStorage: knows only its element type."""

    def __init__(self, name):
        self.name = name
        kind = _STORAGES[name]
        self.dtype = np.dtype("<u2") if kind == "bf16" else np.dtype(kind).newbyteorder("<")
        self.bf16 = kind == "bf16"


class _Storage:
    """A storage reference from the pickle (its bytes are read separately)."""

    def __init__(self, key, storage_type, numel, view=None):
        self.key, self.type, self.numel, self.view = key, storage_type, numel, view


class _Tensor:
    """What torch._utils._rebuild_tensor_v2 would build: a strided view of a storage."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            raise ValueError("a tensor whose storage is not a storage reference")
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(n) for n in size), tuple(int(n) for n in stride)
        if len(self.size) != len(self.stride) or any(n < 0 for n in self.size):
            raise ValueError(f"a tensor with size {self.size} and stride {self.stride}")

    def materialize(self, data: np.ndarray) -> np.ndarray:
        if self.storage.view is not None:  # legacy storage views: (key, offset, size)
            _, start, length = self.storage.view
            data = data[int(start) : int(start) + int(length)]
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, np.float32 if self.storage.type.bf16 or data.dtype.kind == "f" else data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or last >= data.size or any(s < 0 for s in self.stride):
            raise ValueError(
                f"tensor view (offset {self.offset}, size {self.size}, stride {self.stride}) "
                f"outside its storage of {data.size} elements"
            )
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], self.size, tuple(s * data.itemsize for s in self.stride)
        )
        arr = np.array(view, order="C")  # a C-contiguous copy (the default order "K" keeps the strides)
        if self.storage.type.bf16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif arr.dtype.kind == "f" and arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        return arr


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=None, hooks=None, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        shown = f"{module}.{name}"
        py3 = _compat_pickle.IMPORT_MAPPING.get(module)  # protocol 0-2 pickles use Python 2 module names
        if py3:
            shown += f" ({py3}.{name})"
        raise CheckpointError(
            f"{self.path}: refused to load the global {shown}: a tensor checkpoint "
            "needs only tensor-rebuilding globals, and this one was not executed"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r:.80}")
        key = str(pid[2])
        storage = _Storage(key, pid[1], int(pid[4]), pid[5] if len(pid) > 5 else None)
        self.storages.setdefault(key, storage)
        return storage


def _finish(obj, path, data_of) -> dict[str, np.ndarray]:
    """The unpickled state dict -> {name: array}; ``data_of(storage)`` gives a storage's elements."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    out = {}
    for name, value in obj.items():
        if not isinstance(value, _Tensor):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
        out[str(name)] = value.materialize(data_of(value.storage))
    return out


def _read_zip(path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise CheckpointError(f"{path}: a zip file without exactly one data.pkl (not a torch checkpoint)")
        prefix = pkl[0][: -len("data.pkl")]
        order = z.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
        if order != "little":
            raise CheckpointError(f"{path}: big-endian storages are not supported")
        unpickler = _Unpickler(io.BytesIO(z.read(pkl[0])), path)
        obj = unpickler.load()

        def data_of(storage):
            entry = f"{prefix}data/{storage.key}"
            if entry not in names:
                raise CheckpointError(f"{path}: storage {storage.key} is missing from the archive")
            raw = z.read(entry)
            need = storage.numel * storage.type.dtype.itemsize
            if len(raw) < need:
                raise CheckpointError(f"{path}: storage {storage.key} holds {len(raw)} bytes, expected {need}")
            return np.frombuffer(raw, storage.type.dtype, storage.numel)

        return _finish(obj, path, data_of)


def _read_legacy(path) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        if _Unpickler(f, path).load() != LEGACY_MAGIC:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor the legacy format)")
        if _Unpickler(f, path).load() != LEGACY_PROTOCOL:
            raise CheckpointError(f"{path}: unknown legacy protocol version")
        _Unpickler(f, path).load()  # system info
        unpickler = _Unpickler(f, path)
        obj = unpickler.load()
        keys = _Unpickler(f, path).load()
        if not isinstance(keys, list):
            raise CheckpointError(f"{path}: storage key list missing after the tensor pickle")
        data = {}
        for key in keys:
            storage = unpickler.storages.get(str(key))
            if storage is None:
                raise CheckpointError(f"{path}: storage {key} is listed but no tensor uses it")
            (count,) = struct.unpack("<q", _read_exact(f, 8, path))
            raw = _read_exact(f, count * storage.type.dtype.itemsize, path)
            data[str(key)] = np.frombuffer(raw, storage.type.dtype, count)

    def data_of(storage):
        if storage.key not in data:
            raise CheckpointError(f"{path}: storage {storage.key} is missing from the file")
        return data[storage.key]

    return _finish(obj, path, data_of)


def _read_exact(f, n, path):
    chunk = f.read(n)
    if len(chunk) != n:
        raise CheckpointError(f"{path}: truncated (wanted {n} more bytes, found {len(chunk)})")
    return chunk


def read_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a ``pytorch_model.bin`` (zip or legacy format) as NumPy arrays."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror})") from None
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        if magic == b"PK\x03\x04":  # a zip's first entry, but no central directory at the end
            raise CheckpointError(f"{path}: a damaged zip archive (truncated? its central directory is missing)")
        return _read_legacy(path)
    except CheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        struct.error,
        zipfile.BadZipFile,
        UnicodeDecodeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
    ) as e:  # (a garbage length field: a frame or buffer of ~2**63 bytes)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def read_sharded(index_file: str | os.PathLike) -> dict[str, np.ndarray]:
    """A sharded checkpoint: ``*.index.json`` whose ``weight_map`` names each tensor's shard."""
    from mbengine import safetensors_mmap

    index_file = os.fspath(index_file)
    try:
        with open(index_file, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_file}: not a checkpoint index ({e})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_file}: 'weight_map' is not a mapping of tensor names to shard files")
    directory = os.path.dirname(index_file)
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{index_file}: shard {shard!r} is not a file name in the checkpoint's directory")
        file = os.path.join(directory, shard)
        if not os.path.isfile(file):
            raise CheckpointError(f"{index_file}: shard {shard} is missing")
        part = safetensors_mmap.load(file)[0] if shard.endswith(".safetensors") else read_torch_bin(file)
        tensors.update(part)
    missing = sorted(set(weight_map) - set(tensors))
    if missing:
        raise CheckpointError(f"{index_file}: tensors named in the index are in no shard", missing[:20])
    return tensors
