"""Engine checkpoints: round trip for every model class, foreign tile widths, versioning, atomic writes."""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import mbengine
from mbengine.cli import main as cli_main
from mbengine.config import MobileBertConfig
from mbengine.converters import engine
from mbengine.errors import CheckpointError, FormatVersionError
from mbengine.kernels.simd import COLS
from mbengine.weights import PackedLinear

from .hf_util import HEADS, random_head_model, save_hf

CONFIG = MobileBertConfig(
    vocab_size=90,
    hidden_size=48,
    embedding_size=16,
    intra_bottleneck_size=24,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=30,
)
IDS = np.random.default_rng(0).integers(0, 90, (2, 9))


def hf_checkpoint(tmp_path, cls_name="MobileBertForPreTraining"):
    extra = HEADS.get(cls_name, ([], {}))[1]
    config = MobileBertConfig.from_dict({**CONFIG.to_dict(), **extra}) if extra else CONFIG
    path = tmp_path / "hf"
    save_hf(random_head_model(cls_name, config, 4), str(path))
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    return path


def outputs(model, ids=IDS):
    if isinstance(model, mbengine.MobileBertForMultipleChoice):
        ids = np.stack([ids, ids[::-1]], axis=1)
    out = model(ids)
    return {k: out[k] for k in out.keys()}


@pytest.mark.parametrize("cls_name", list(HEADS))
def test_round_trip_gives_identical_outputs(tmp_path, cls_name):
    src = hf_checkpoint(tmp_path, cls_name)
    cls = getattr(mbengine, cls_name)
    original = cls.from_pretrained(src)
    dst = engine.write(original.weights, tmp_path / "engine", tokenizer_from=src)
    assert sorted(os.listdir(dst)) == ["config.json", "model.safetensors", "vocab.txt"]
    loaded = cls.from_pretrained(dst)
    for key, value in outputs(original).items():
        np.testing.assert_array_equal(outputs(loaded)[key], value, err_msg=key)
    # the packed weights are views into the file, not copies
    assert all(not w.panels.flags.owndata for w in loaded.weights.linears.values())


def test_cli_convert_and_info(tmp_path, capsys):
    src = hf_checkpoint(tmp_path)
    dst = tmp_path / "engine"
    assert cli_main(["convert", str(src), str(dst)]) == 0
    assert "MobileBertForPreTraining" in capsys.readouterr().out
    assert cli_main(["convert", str(src), str(dst)]) == 1  # exists
    assert "--force" in capsys.readouterr().err
    assert cli_main(["convert", str(src), str(dst), "--force"]) == 0
    assert cli_main(["info", str(dst)]) == 1 - 1
    assert "engine checkpoint v1" in capsys.readouterr().out
    model = mbengine.MobileBertForPreTraining.from_pretrained(dst)
    reference = mbengine.MobileBertForPreTraining.from_pretrained(src)
    np.testing.assert_array_equal(model(IDS).prediction_logits, reference(IDS).prediction_logits)


def test_panels_of_another_width_are_repacked(tmp_path):
    """A checkpoint written on a machine with another vector width loads and gives the same outputs."""
    src = hf_checkpoint(tmp_path)
    model = mbengine.MobileBertForPreTraining.from_pretrained(src)
    dst = engine.write(model.weights, tmp_path / "engine")
    tensors = load_file(os.path.join(dst, "model.safetensors"))
    other = 8 if COLS != 8 else 16
    for name in [n for n in tensors if n.startswith(engine.PACKED)]:
        wp = tensors[name]
        n = wp.shape[0] * wp.shape[2]
        w = PackedLinear(wp, n).dense()
        p = -(-n // other)
        padded = np.zeros((p * other, w.shape[1]), np.float32)
        padded[:n] = w
        tensors[name] = np.ascontiguousarray(padded.reshape(p, other, -1).transpose(0, 2, 1))
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    cfg = json.loads(open(os.path.join(dst, "config.json")).read())
    cfg["mbengine"]["tile_cols"] = other
    open(os.path.join(dst, "config.json"), "w").write(json.dumps(cfg))
    again = mbengine.MobileBertForPreTraining.from_pretrained(dst)
    np.testing.assert_array_equal(again(IDS).prediction_logits, model(IDS).prediction_logits)


def _engine(tmp_path):
    src = hf_checkpoint(tmp_path)
    return engine.write(mbengine.MobileBertForPreTraining.from_pretrained(src).weights, tmp_path / "engine")


def test_unknown_format_version_refused(tmp_path):
    dst = _engine(tmp_path)
    cfg = json.loads(open(os.path.join(dst, "config.json")).read())
    cfg["mbengine"]["format_version"] = 99
    open(os.path.join(dst, "config.json"), "w").write(json.dumps(cfg))
    with pytest.raises(FormatVersionError, match="version 99.*reads version 1"):
        mbengine.MobileBertForPreTraining.from_pretrained(dst)


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_broken_packed_tensors_named(tmp_path, damage):
    dst = _engine(tmp_path)
    file = os.path.join(dst, "model.safetensors")
    tensors = load_file(file)
    name = "packed/encoder.layer.1.attention.output"
    if damage == "missing":
        del tensors[name]
        match = "missing linear weight 'encoder.layer.1.attention.output'"
    elif damage == "unexpected":
        tensors["packed/encoder.layer.7.nothing"] = np.zeros((1, 2, COLS), np.float32)
        match = "unexpected linear weight 'encoder.layer.7.nothing'"
    else:
        tensors[name] = tensors[name][:, :-1].copy()
        match = "packed weight of 'encoder.layer.1.attention.output' has shape"
    save_file(tensors, file)
    with pytest.raises(CheckpointError, match=match):
        mbengine.MobileBertForPreTraining.from_pretrained(dst)


def test_wrong_class_for_engine_checkpoint(tmp_path):
    dst = _engine(tmp_path)
    with pytest.raises(CheckpointError, match="pretraining"):
        mbengine.MobileBertForQuestionAnswering.from_pretrained(dst)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    src = hf_checkpoint(tmp_path)
    model = mbengine.MobileBertForPreTraining.from_pretrained(src)
    import safetensors.numpy

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        engine.write(model.weights, tmp_path / "engine")
    assert sorted(os.listdir(tmp_path)) == ["hf"]
