"""Committed checkpoints made by the upstream code, read with no framework: torch's pytorch_model.bin
(zip and legacy), HF's TensorFlow tf_model.h5, and a TF1 bundle laid out like Google's release.

The fixtures in tests/fixtures/tiny were written by TensorFlow and transformers themselves
(tests/fixtures/make_fixtures.py); expected.npz holds what transformers computes from each.
"""

import os
import shutil

import numpy as np
import pytest

import mbengine
from mbengine.converters import tf_bundle
from mbengine.errors import CheckpointError

from .helpers import rel_err

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tiny")
EXPECTED = np.load(os.path.join(FIXTURES, "expected.npz"))


def checkpoint_dir(tmp_path, kind):
    d = tmp_path / kind
    d.mkdir()
    shutil.copy(os.path.join(FIXTURES, "config.json"), d / "config.json")
    if kind == "h5":
        shutil.copy(os.path.join(FIXTURES, "tf_model.h5"), d / "tf_model.h5")
    elif kind.startswith("bin"):
        name = "pytorch_model.bin" if kind == "bin-zip" else "pytorch_model_legacy.bin"
        shutil.copy(os.path.join(FIXTURES, name), d / "pytorch_model.bin")
    else:
        for name in os.listdir(os.path.join(FIXTURES, "tf1")):
            shutil.copy(os.path.join(FIXTURES, "tf1", name), d / name)
    return d


@pytest.mark.parametrize("kind", ["bin-zip", "bin-legacy"])
def test_committed_torch_checkpoints(tmp_path, kind):
    """pytorch_model.bin written by torch 2.13 (zip and legacy format), read without torch."""
    model = mbengine.MobileBertForPreTraining.from_pretrained(checkpoint_dir(tmp_path, kind), trigram_padding="hf")
    out = model(EXPECTED["input_ids"], token_type_ids=EXPECTED["token_type_ids"])
    for field in ("prediction_logits", "seq_relationship_logits"):
        assert rel_err(getattr(out, field), EXPECTED[field]) <= 1e-5, field


@pytest.mark.parametrize("kind", ["h5", "tf1"])
def test_tf_formats_match_transformers(tmp_path, kind):
    model = mbengine.MobileBertForPreTraining.from_pretrained(checkpoint_dir(tmp_path, kind), trigram_padding="hf")
    out = model(EXPECTED["input_ids"], token_type_ids=EXPECTED["token_type_ids"])
    for field in ("prediction_logits", "seq_relationship_logits"):
        assert rel_err(getattr(out, field), EXPECTED[f"{kind}_{field}"]) <= 1e-5, field
        assert rel_err(getattr(out, field), EXPECTED[field]) <= 1e-5, field  # and the original PyTorch model


def test_tf1_skips_optimizer_slots_and_maps_every_name():
    tensors = tf_bundle.read_tf_checkpoint(os.path.join(FIXTURES, "tf1", "model.ckpt"))
    raw = tf_bundle.read_bundle(os.path.join(FIXTURES, "tf1", "model.ckpt"))
    assert any("adam_m" in n for n in raw) and "global_step" in raw
    assert not any("adam" in n or "global_step" in n for n in tensors)
    assert tensors["cls.predictions.dense.weight"].shape == (16, 60)  # extra_output_weights, transposed
    np.testing.assert_array_equal(
        tensors["mobilebert.encoder.layer.1.attention.self.query.weight"],
        raw["bert/encoder/layer_1/attention/self/query/kernel"].T,
    )


def test_convert_tf1_to_engine_checkpoint(tmp_path):
    from mbengine.cli import main

    src = checkpoint_dir(tmp_path, "tf1")
    assert main(["convert", str(src), str(tmp_path / "engine"), "--class", "MobileBertForPreTraining"]) == 0
    model = mbengine.MobileBertForPreTraining.from_pretrained(tmp_path / "engine", trigram_padding="hf")
    out = model(EXPECTED["input_ids"], token_type_ids=EXPECTED["token_type_ids"])
    assert rel_err(out.prediction_logits, EXPECTED["tf1_prediction_logits"]) <= 1e-5


@pytest.mark.parametrize("damage", ["bad-magic", "truncated-index", "missing-shard", "short-shard", "bad-varint"])
def test_broken_tf1_checkpoints(tmp_path, damage):
    d = checkpoint_dir(tmp_path, "tf1")
    index, shard = d / "model.ckpt.index", d / "model.ckpt.data-00000-of-00001"
    data = index.read_bytes()
    if damage == "bad-magic":
        index.write_bytes(data[:-8] + b"\0" * 8)
        match = "bad table magic"
    elif damage == "truncated-index":
        index.write_bytes(data[:30])
        match = "too short"
    elif damage == "missing-shard":
        shard.unlink()
        match = "missing or unreadable data shard"
    elif damage == "short-shard":
        shard.write_bytes(shard.read_bytes()[:1000])
        match = "does not fit its data shard"
    else:
        footer = bytearray(data[-48:])
        footer[:10] = b"\xff" * 10
        index.write_bytes(data[:-48] + bytes(footer))
        match = "corrupt checkpoint index|runs past the end"
    with pytest.raises(CheckpointError, match=match):
        tf_bundle.read_tf_checkpoint(d / "model.ckpt")


def test_broken_h5(tmp_path):
    d = checkpoint_dir(tmp_path, "h5")
    (d / "tf_model.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(CheckpointError, match="tf_model.h5"):
        mbengine.MobileBertForPreTraining.from_pretrained(d)
