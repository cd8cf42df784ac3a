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
