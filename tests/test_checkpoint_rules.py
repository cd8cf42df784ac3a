"""Checkpoint structure against each format's rules, and errors that stay readable however much is wrong.

- safetensors: the tensors' byte ranges tile the data section (contiguous, not
  overlapping, covering it exactly), as the format specifies;
- engine checkpoints: the config's mbengine block (tile_cols, dtype, head,
  pooler) agrees with the tensors stored, and every missing or mis-shaped
  tensor is reported in one CheckpointError;
- a CheckpointError with many problems shows the first few, counts the rest
  and ends with the likely cause.
"""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import mbengine
from mbengine import safetensors_mmap
from mbengine.cli import random_checkpoint
from mbengine.config import MobileBertConfig
from mbengine.converters import engine
from mbengine.errors import CheckpointError
from mbengine.kernels.simd import COLS

CONFIG = MobileBertConfig(
    vocab_size=40,
    hidden_size=32,
    embedding_size=16,
    intra_bottleneck_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=32,
)


def write_raw(path, header: dict, data: bytes):
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


def header_of(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


@pytest.fixture
def small_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": np.arange(4, dtype=np.float32), "b": np.ones((2, 2), np.float32)}, str(path))
    return path


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda h, d: (h | {"b": h["b"] | {"data_offsets": [0, 16]}}, d), ["overlaps"]),  # b on top of a
        (
            lambda h, d: (h | {"b": h["b"] | {"data_offsets": [20, 36]}}, d + b"\0" * 4),
            ["leaves bytes [16, 20) unused"],
        ),
        (lambda h, d: (h, d + b"\0" * 8), ["end at byte 32", "has 40 bytes"]),  # trailing bytes no tensor covers
        (lambda h, d: (h | {"__metadata__": ["not", "a", "map"]}, d), ["__metadata__"]),
    ],
)
def test_safetensors_byte_ranges_must_tile_the_data(small_file, edit, words):
    write_raw(small_file, *edit(*header_of(small_file)))
    with pytest.raises(CheckpointError) as info:
        safetensors_mmap.load(small_file)
    assert str(small_file) in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_safetensors_written_by_the_library_pass(small_file):
    tensors, _ = safetensors_mmap.load(small_file)
    np.testing.assert_array_equal(tensors["a"], np.arange(4))


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"shape": [True, 2]}, "malformed header entry"),  # a bool is not a size
        ({"shape": [-2, -2]}, "malformed header entry"),
        ({"shape": "2x2"}, "malformed header entry"),
        ({"shape": [2.0, 2]}, "malformed header entry"),
        ({"data_offsets": [16]}, "malformed header entry"),
        ({"data_offsets": [16, 32.0]}, "malformed header entry"),
        ({"data_offsets": [16, 2**70]}, "malformed header entry"),
        ({"dtype": 4}, "malformed header entry"),
        ({"dtype": "Q4_K"}, "unsupported dtype 'Q4_K'"),
        ({"shape": [2, 3]}, "byte range [16, 32) does not hold a F32 tensor of shape [2, 3]"),
        ({"shape": [3, 2], "data_offsets": [16, 40]}, "byte range [16, 40) runs past the end of the file"),
    ],
)
def test_safetensors_header_entries_are_checked(small_file, entry, words):
    """Each entry of the header is checked before any view is made; the error names the tensor."""
    header, data = header_of(small_file)
    write_raw(small_file, header | {"b": header["b"] | entry}, data)
    with pytest.raises(CheckpointError) as info:
        safetensors_mmap.load(small_file)
    assert f"b: {words}" in str(info.value)


def test_safetensors_dtypes_alignment_and_read_only(tmp_path):
    """Float16, bfloat16 and float64 come back as float32, integers as stored; a tensor at an offset
    its dtype does not divide is copied to aligned memory; every array is read-only."""
    path = tmp_path / "model.safetensors"
    values = np.array([1.5, -2.25, 3e-3], np.float64)
    bf16 = (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2")  # (exact for these values)
    parts = [
        ("odd", "I8", [1], np.array([7], np.int8).tobytes()),  # everything after it starts at an odd byte
        ("f32", "F32", [3], values.astype("<f4").tobytes()),
        ("f16", "F16", [3], values.astype("<f2").tobytes()),
        ("bf16", "BF16", [3], bf16.tobytes()),
        ("f64", "F64", [3], values.astype("<f8").tobytes()),
        ("i64", "I64", [3], np.array([1, -2, 2**40], "<i8").tobytes()),
    ]
    header, data = {}, b""
    for name, dtype, shape, raw in parts:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    write_raw(path, header, data)
    tensors, _ = safetensors_mmap.load(path)
    for name in ("f32", "f16", "bf16", "f64"):
        assert tensors[name].dtype == np.float32, name
        np.testing.assert_allclose(tensors[name], values, rtol=4e-3, err_msg=name)
    np.testing.assert_array_equal(tensors["i64"], [1, -2, 2**40])
    assert tensors["i64"].dtype == np.int64
    for name, arr in tensors.items():
        assert arr.flags.aligned and not arr.flags.writeable, name
        with pytest.raises(ValueError):
            arr[...] = 0


@pytest.fixture
def engine_dir(tmp_path):
    src = random_checkpoint(str(tmp_path / "hf"), CONFIG, head="pretraining")
    return engine.write(mbengine.MobileBertForPreTraining.from_pretrained(src).weights, tmp_path / "engine")


def edit_meta(directory, **changes):
    path = os.path.join(directory, "config.json")
    config = json.loads(open(path).read())
    config["mbengine"].update(changes)
    open(path, "w").write(json.dumps(config))


def edit_tensors(directory, change):
    path = os.path.join(directory, "model.safetensors")
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "mbengine"})


def test_engine_tile_cols_must_match_the_panels(engine_dir):
    edit_meta(engine_dir, tile_cols=COLS * 2)
    with pytest.raises(CheckpointError, match=f"tile_cols = {COLS * 2}"):
        mbengine.MobileBertForPreTraining.from_pretrained(engine_dir)


def test_engine_dtype_must_match_the_tensors(engine_dir):
    edit_meta(engine_dir, dtype="int8")
    with pytest.raises(CheckpointError, match="dtype is int8 but no tensor is int8"):
        mbengine.MobileBertForPreTraining.from_pretrained(engine_dir)


@pytest.mark.parametrize("pooler", ["yes", 1, None])
def test_engine_pooler_must_be_a_boolean(engine_dir, pooler):
    edit_meta(engine_dir, pooler=pooler)
    with pytest.raises(CheckpointError, match="'pooler' must be true or false"):
        mbengine.MobileBertForPreTraining.from_pretrained(engine_dir)


def test_engine_head_must_be_known(engine_dir):
    edit_meta(engine_dir, head="summarization")
    with pytest.raises(CheckpointError, match="unknown head 'summarization'"):
        mbengine.MobileBertForPreTraining.from_pretrained(engine_dir)


def test_engine_head_that_the_tensors_lack(engine_dir):
    """The metadata says pretraining; a head tensor and a head linear are gone: both named, in one error."""

    def drop(tensors):
        del tensors["cls.predictions.bias"]
        del tensors["packed/cls.seq_relationship"]

    edit_tensors(engine_dir, drop)
    with pytest.raises(CheckpointError) as info:
        mbengine.MobileBertForPreTraining.from_pretrained(engine_dir)
    assert "missing tensor 'cls.predictions.bias'" in str(info.value)
    assert "missing linear weight 'cls.seq_relationship'" in str(info.value)
    assert len(info.value.problems) == 2


def test_many_problems_make_a_short_error(tmp_path):
    """Tensors whose names mean nothing here: one short error, a count, the first few names and the cause."""
    path = tmp_path / "odd"
    random_checkpoint(str(path), CONFIG)
    tensors = load_file(str(path / "model.safetensors"))
    save_file(
        {f"model/{name.replace('.', '/')}:0": arr for name, arr in tensors.items()}, str(path / "model.safetensors")
    )
    with pytest.raises(CheckpointError) as info:
        mbengine.MobileBertModel.from_pretrained(path)
    message = str(info.value)
    assert len(info.value.problems) > 2 * CheckpointError.SHOWN
    assert len(message.splitlines()) == CheckpointError.SHOWN + 3  # the first line, the problems, "more", the cause
    assert f"and {len(info.value.problems) - CheckpointError.SHOWN} more" in message
    assert message.splitlines()[-1].strip().startswith("no tensor name matched")
