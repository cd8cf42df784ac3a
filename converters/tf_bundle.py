"""Read a TensorFlow checkpoint (tensor bundle) without TensorFlow.

Google's original MobileBERT release is a TF1 checkpoint: ``model.ckpt.index``
plus ``model.ckpt.data-0000N-of-0000M``. The index is an SSTable (LevelDB's
table format): a footer pointing at an index block, whose entries point at
data blocks, whose entries map each tensor name (keys prefix-compressed
against restart points) to a serialized ``BundleEntryProto`` -- dtype, shape,
shard, byte offset and size. The empty key holds the ``BundleHeaderProto``.
The tensors' bytes sit in the data shards. Both protobufs are small enough to
decode with the varint reader below. Every block's trailer (compression type
byte, masked CRC-32C) is checked, and so is every tensor's ``crc32c`` unless
``verify=False``.

:func:`read_tf_checkpoint` returns the tensors under Hugging Face's PyTorch
names, renamed exactly as transformers' ``load_tf_weights_in_mobilebert``
does (table :data:`RENAMES`, kernels transposed, optimizer slots skipped).
"""

from __future__ import annotations

import mmap
import os
import re
import struct

import numpy as np

from mbengine.errors import CheckpointError

from .checksum import masked_crc32c, require

FOOTER_SIZE = 48
TABLE_MAGIC = 0xDB4775248B80FB57
# tensorflow/core/framework/types.proto
DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    14: "bf16",
    19: np.float16,
}
DT_STRING = 7


# ------------------------------------------------------------------ protobuf wire format
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of a serialized protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf field")
        yield number, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _entry(value: bytes) -> dict:
    """BundleEntryProto: dtype=1, shape=2 (TensorShapeProto: dim=2 {size=1}), shard_id=3, offset=4, size=5,
    crc32c=6 (fixed32, masked), slices=7."""
    entry = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0, "crc32c": None, "slices": False}
    for number, _, v in _fields(value):
        if number == 1:
            entry["dtype"] = v
        elif number == 2:
            for n2, _, dim in _fields(v):
                if n2 == 2:
                    size = next((_signed(s) for n3, _, s in _fields(dim) if n3 == 1), 0)
                    entry["shape"].append(size)
        elif number == 3:
            entry["shard_id"] = v
        elif number == 4:
            entry["offset"] = _signed(v)
        elif number == 5:
            entry["size"] = _signed(v)
        elif number == 6 and len(v) == 4:
            entry["crc32c"] = int.from_bytes(v, "little")
        elif number == 7:
            entry["slices"] = True
    return entry


# ------------------------------------------------------------------------- SSTable
def _block(data: bytes, handle: tuple[int, int], path: str) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of the block at (offset, size); checks its trailer."""
    offset, size = handle
    if size < 4 or offset + size + 5 > len(data) - FOOTER_SIZE:
        raise CheckpointError(f"{path}: block at {offset} (+{size}) runs past the end of the file")
    # trailer: compression type (0 = none) and the masked CRC-32C of the block and that byte
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if masked_crc32c(data[offset : offset + size + 1]) != stored:
        raise CheckpointError(f"{path}: block at {offset} fails its CRC-32C check (corrupt file)")
    if data[offset + size] != 0:
        raise CheckpointError(f"{path}: compressed index blocks (type {data[offset + size]}) are not supported")
    block = data[offset : offset + size]
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise CheckpointError(f"{path}: corrupt block at {offset}")
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise ValueError(f"entry at {offset + pos} overruns its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + length]))
        pos += length
    return entries


def _handle(value: bytes) -> tuple[int, int]:
    offset, pos = _varint(value, 0)
    size, _ = _varint(value, pos)
    return offset, size


def read_index(prefix: str) -> dict[str, dict]:
    """{tensor name: BundleEntryProto fields} from ``prefix.index``; the header under ''."""
    path = prefix + ".index"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint index ({e.strerror})") from None
    if len(data) < FOOTER_SIZE:
        raise CheckpointError(f"{path}: too short to be a checkpoint index")
    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, 40)
    if magic != TABLE_MAGIC:
        raise CheckpointError(f"{path}: not a TensorFlow checkpoint index (bad table magic)")
    require(path)
    try:
        _, pos = _varint(footer, 0)  # metaindex offset
        _, pos = _varint(footer, pos)  # metaindex size
        index_offset, pos = _varint(footer, pos)
        index_size, _ = _varint(footer, pos)
        out = {}
        for _, handle in _block(data, (index_offset, index_size), path):
            for key, value in _block(data, _handle(handle), path):
                name = key.decode("utf-8")
                if name == "":
                    header = {n: v for n, _, v in _fields(value)}
                    out[""] = {"num_shards": header.get(1, 1), "endianness": header.get(2, 0)}
                else:
                    out[name] = _entry(value)
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint index ({e})") from None
    return out


def read_bundle(prefix: str | os.PathLike, verify: bool = True) -> dict[str, np.ndarray]:
    """Every numeric tensor of a TF checkpoint under its TF name (strings skipped).

    ``verify``: check each tensor's bytes against its CRC-32C (~0.1 s per 100 MB).
    """
    prefix = os.fspath(prefix)
    if prefix.endswith(".index"):
        prefix = prefix[: -len(".index")]
    index = read_index(prefix)
    header = index.pop("", {"num_shards": 1, "endianness": 0})
    if header["endianness"] != 0:
        raise CheckpointError(f"{prefix}.index: big-endian checkpoints are not supported")
    num_shards = header["num_shards"]
    shards: dict[int, tuple[str, memoryview]] = {}  # shard id -> (file name, its memory-mapped bytes)
    tensors = {}
    for name, e in index.items():
        if e["dtype"] == DT_STRING or e["slices"]:
            continue
        kind = DTYPES.get(e["dtype"])
        if kind is None:
            raise CheckpointError(f"{prefix}.index: tensor {name!r} has an unsupported dtype (enum {e['dtype']})")
        shard = e["shard_id"]
        if not 0 <= shard < num_shards:
            raise CheckpointError(f"{prefix}.index: tensor {name!r} is in shard {shard} of {num_shards}")
        if shard not in shards:
            shards[shard] = _map_shard(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")
        file, raw = shards[shard]
        dtype = np.dtype("<u2") if kind == "bf16" else np.dtype(kind).newbyteorder("<")
        count = int(np.prod(e["shape"], dtype=np.int64))
        begin, end = e["offset"], e["offset"] + e["size"]
        if e["size"] != count * dtype.itemsize or begin < 0 or end > len(raw):
            raise CheckpointError(
                f"{file}: tensor {name!r} (shape {e['shape']}) does not fit its data shard "
                f"(bytes {begin}..{end} of {len(raw)})"
            )
        if verify and e["crc32c"] is not None and masked_crc32c(raw[begin:end]) != e["crc32c"]:
            raise CheckpointError(f"{file}: tensor {name!r} fails its CRC-32C check (corrupt data shard)")
        arr = np.frombuffer(raw, dtype, count, begin).reshape(e["shape"])
        if kind == "bf16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = arr.copy()
    return tensors


def _map_shard(file: str) -> tuple[str, memoryview]:
    try:
        with open(file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return file, memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b"")
    except OSError as err:
        raise CheckpointError(f"{file}: missing or unreadable data shard ({err.strerror})") from None


# ------------------------------------------------------------- Google's names -> HF's
RENAMES = (
    ("ffn_layer", "ffn"),
    ("FakeLayerNorm", "LayerNorm"),
    ("extra_output_weights", "dense/kernel"),
    ("bert", "mobilebert"),
)
SQUAD = "cls/squad/"  # run_squad.py's output layer (Hugging Face's loader has no mapping for it)
SKIP = {"adam_v", "adam_m", "AdamWeightDecayOptimizer", "AdamWeightDecayOptimizer_1", "global_step"}
LEAF = {
    "kernel": "weight",
    "gamma": "weight",
    "output_weights": "weight",
    "output_bias": "bias",
    "beta": "bias",
    "squad": "classifier",
}


def hf_name(tf_name: str) -> tuple[str | None, bool]:
    """(HF PyTorch name or None to skip, transpose?) as load_tf_weights_in_mobilebert maps it.

    Two differences on purpose: transformers walks the model's attributes and
    silently drops a name component the model lacks; here the name is kept, so
    a tensor that fits nowhere is reported by ``canonical.validate`` instead of
    landing somewhere unexpected. And Google's SQuAD fine-tuned checkpoints
    (``cls/squad/output_weights``, (2, hidden), and ``output_bias``) become
    ``MobileBertForQuestionAnswering``'s ``qa_outputs``, which transformers'
    loader cannot map.
    """
    if any(p in SKIP for p in tf_name.split("/")):
        return None, False
    if tf_name.startswith(SQUAD):  # Google's SQuAD head: logits = x @ output_weights^T, (2, hidden) as stored
        leaf = tf_name[len(SQUAD) :]
        return {"output_weights": "qa_outputs.weight", "output_bias": "qa_outputs.bias"}.get(leaf, tf_name), False
    for old, new in RENAMES:
        tf_name = tf_name.replace(old, new)
    parts = tf_name.split("/")
    out = []
    for p in parts:
        m = re.fullmatch(r"([A-Za-z]+)_(\d+)", p)
        if m:
            out += [LEAF.get(m.group(1), m.group(1)), m.group(2)]
        else:
            out.append(LEAF.get(p, p))
    if parts[-1].endswith("_embeddings"):
        out.append("weight")
    return ".".join(out), parts[-1] == "kernel"


def read_tf_checkpoint(prefix: str | os.PathLike, verify: bool = True) -> dict[str, np.ndarray]:
    """A TF1 MobileBERT checkpoint's tensors under Hugging Face's PyTorch names.

    Floating-point tensors come back as float32, kernels transposed to (out, in).
    """
    out = {}
    for name, arr in read_bundle(prefix, verify).items():
        target, transpose = hf_name(name)
        if target is None:
            continue
        if arr.dtype.kind == "f" and arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        out[target] = np.ascontiguousarray(arr.T) if transpose else arr
    return out
