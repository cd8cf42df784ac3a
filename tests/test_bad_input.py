"""Bad call arguments and broken checkpoints give specific errors; nothing is broadcast or clipped."""

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from mbengine import MobileBertModel
from mbengine.cli import random_checkpoint
from mbengine.config import MobileBertConfig
from mbengine.errors import CheckpointError, InputError

CFG = MobileBertConfig(
    vocab_size=50,
    hidden_size=32,
    embedding_size=16,
    intra_bottleneck_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=20,
    type_vocab_size=3,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_checkpoint(str(tmp_path_factory.mktemp("ckpt")), CFG, seed=3)


@pytest.fixture(scope="module")
def model(checkpoint):
    return MobileBertModel.from_pretrained(checkpoint)


IDS = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(input_ids=IDS[0]), ["input_ids", "(batch, seq)", "(4,)"]),
        (dict(input_ids=IDS[None]), ["input_ids", "(1, 2, 4)"]),
        (dict(input_ids=IDS.astype(np.float32)), ["input_ids", "integer", "float32"]),
        (dict(input_ids=np.array([[1, 2, 50]])), ["input_ids", "50", "vocab_size is 50"]),
        (dict(input_ids=np.array([[1, -1, 3]])), ["input_ids", "-1", "(0, 1)"]),
        (dict(input_ids=np.zeros((0, 4), np.int64)), ["input_ids", "empty"]),
        (dict(input_ids=np.zeros((2, 0), np.int64)), ["input_ids", "empty"]),
        (dict(input_ids=np.ones((1, 21), np.int64)), ["21", "max_position_embeddings", "20"]),
        (dict(input_ids=IDS, attention_mask=np.ones((2, 3))), ["attention_mask", "(2, 3)", "(2, 4)"]),
        (dict(input_ids=IDS, attention_mask=np.full((2, 4), 0.5)), ["attention_mask", "0.5"]),
        (dict(input_ids=IDS, attention_mask=np.full((2, 4), "1")), ["attention_mask", "integer", "<U1"]),
        (dict(input_ids=IDS, attention_mask=np.full((2, 4), 2)), ["attention_mask", "2", "0", "1"]),
        (dict(input_ids=IDS, attention_mask=np.ones(4, np.int64)), ["attention_mask", "(4,)", "(2, 4)"]),
        (dict(input_ids=IDS, token_type_ids=np.zeros((1, 4), np.int64)), ["token_type_ids", "(1, 4)", "(2, 4)"]),
        (dict(input_ids=IDS, token_type_ids=np.full((2, 4), 3)), ["token_type_ids", "3", "type_vocab_size is 3"]),
        (dict(input_ids=IDS, position_ids=np.full((2, 4), 20)), ["position_ids", "20", "max_position_embeddings"]),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(model, kwargs, words):
    with pytest.raises(ValueError) as info:
        model(**kwargs)
    assert isinstance(info.value, InputError)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_bool_and_float_masks_accepted_and_equal_to_int_mask(model):
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    b = model(IDS, attention_mask=mask).last_hidden_state
    for dtype in (bool, np.float32):
        a = model(IDS, attention_mask=mask.astype(dtype)).last_hidden_state
        np.testing.assert_array_equal(a, b)


def test_inputs_are_not_modified(model):
    ids, mask = IDS.copy(), np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    keep = ids.copy(), mask.copy()
    model(ids, attention_mask=mask)
    np.testing.assert_array_equal(ids, keep[0])
    np.testing.assert_array_equal(mask, keep[1])


def _rewrite(src, dst, change):
    tensors = load_file(os.path.join(src, "model.safetensors"))
    change(tensors)
    os.makedirs(dst, exist_ok=True)
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    with open(os.path.join(src, "config.json")) as f, open(os.path.join(dst, "config.json"), "w") as g:
        g.write(f.read())
    return dst


def test_missing_unexpected_and_misshaped_tensors_all_named(checkpoint, tmp_path):
    def change(t):
        del t["encoder.layer.0.attention.self.key.weight"]
        t["encoder.layer.0.extra.weight"] = np.zeros((2, 2), np.float32)
        t["encoder.layer.0.intermediate.dense.weight"] = np.zeros((24, 15), np.float32)

    path = _rewrite(checkpoint, str(tmp_path / "broken"), change)
    with pytest.raises(CheckpointError) as info:
        MobileBertModel.from_pretrained(path)
    msg = str(info.value)
    assert "missing tensor 'encoder.layer.0.attention.self.key.weight' (expected shape [16, 16])" in msg
    assert "unexpected tensor 'encoder.layer.0.extra.weight' with shape [2, 2]" in msg
    assert "'encoder.layer.0.intermediate.dense.weight' has shape [24, 15], expected [24, 16]" in msg
    assert len(info.value.problems) == 3


def test_non_finite_weights_rejected(checkpoint, tmp_path):
    def change(t):
        t["embeddings.word_embeddings.weight"][3, 1] = np.nan

    path = _rewrite(checkpoint, str(tmp_path / "nan"), change)
    with pytest.raises(CheckpointError, match="word_embeddings.weight.*non-finite"):
        MobileBertModel.from_pretrained(path)


def test_config_that_does_not_match_weights(checkpoint, tmp_path):
    path = tmp_path / "other"
    _rewrite(checkpoint, str(path), lambda t: None)
    cfg = json.loads((path / "config.json").read_text())
    cfg["intermediate_size"] = 30
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"intermediate.dense.weight' has shape \[24, 16\], expected \[30, 16\]"):
        MobileBertModel.from_pretrained(path)


@pytest.mark.parametrize("damage", ["truncate", "header", "empty"])
def test_corrupt_safetensors_file(checkpoint, tmp_path, damage):
    path = _rewrite(checkpoint, str(tmp_path / damage), lambda t: None)
    file = os.path.join(path, "model.safetensors")
    data = open(file, "rb").read()
    if damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "header":
        data = data[:8] + b"{garbage" + data[16:]
    else:
        data = b""
    with open(file, "wb") as f:
        f.write(data)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        MobileBertModel.from_pretrained(path)


def test_missing_weights_file_lists_directory(tmp_path):
    CFG.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"no model.safetensors, pytorch_model.bin, .*config.json"):
        MobileBertModel.from_pretrained(tmp_path)


def test_bad_threads_argument(checkpoint):
    with pytest.raises(ValueError, match="threads"):
        MobileBertModel.from_pretrained(checkpoint, threads=0)


def test_huge_batch_refused_before_allocating(model, monkeypatch):
    import mbengine.modeling as modeling

    monkeypatch.setattr(modeling, "available_memory", lambda: 64 * 2**20)
    ids = np.ones((40000, 20), np.int64)
    with pytest.raises(InputError, match=r"batch 40000 x seq 20 needs about [\d,]+ MiB .* 64 MiB"):
        model(ids)
    assert model.runner()._arenas.get((40000, 20, False)) is None


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_arrays_never_crash(model, data):
    """Arbitrary dtype and shape at the public boundary: a result or an InputError, nothing else."""
    dtype = data.draw(
        st.sampled_from(
            [
                np.int8,
                np.int16,
                np.int32,
                np.int64,
                np.uint8,
                np.uint64,
                np.float16,
                np.float32,
                np.float64,
                np.bool_,
                np.complex64,
                object,
                "U3",
            ]
        )
    )
    shape = tuple(data.draw(st.lists(st.integers(0, 5), min_size=0, max_size=4)))
    values = data.draw(st.sampled_from(["small", "negative", "huge", "nan"]))
    size = int(np.prod(shape))
    base = {
        "small": np.arange(size) % 40,
        "negative": -np.arange(size) - 1,
        "huge": np.full(size, 2**40),
        "nan": np.full(size, np.nan),
    }[values]
    try:
        with np.errstate(invalid="ignore", over="ignore"):
            arr = np.asarray(base).astype(dtype).reshape(shape)
    except (ValueError, TypeError, OverflowError):
        return
    try:
        out = model(arr)
    except InputError as e:
        assert "input_ids" in str(e)
        return
    assert out.last_hidden_state.shape == arr.shape + (CFG.hidden_size,)
    assert np.isfinite(out.last_hidden_state).all()
