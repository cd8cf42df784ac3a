"""MobileBertConfig: HF's fields and defaults, config.json round trip, validation messages."""

import dataclasses
import json

import pytest
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st

from mbengine.config import MAX_LABELS, MAX_VALUES, MobileBertConfig
from mbengine.errors import ConfigError


def test_fields_and_defaults_match_transformers():
    ours = MobileBertConfig().to_dict()
    hf = transformers.MobileBertConfig().to_dict()
    ours_fields = {f.name for f in dataclasses.fields(MobileBertConfig)} - {"extra"}
    hf_model_fields = set(transformers.MobileBertConfig().__dict__) & set(hf)
    # every MobileBERT-specific field HF has, we have, with the same default
    for name in ours_fields:
        assert name in hf, f"{name} is not a field of transformers.MobileBertConfig"
        assert ours[name] == hf[name], f"default of {name}: ours {ours[name]!r}, HF {hf[name]!r}"
    for name in ("true_hidden_size", "embedding_size", "trigram_input", "key_query_shared_bottleneck"):
        assert name in hf_model_fields and ours[name] == hf[name]


@pytest.mark.parametrize("use_bottleneck", [True, False])
def test_true_hidden_size_derived_like_hf(use_bottleneck):
    kw = dict(use_bottleneck=use_bottleneck, intra_bottleneck_size=64, hidden_size=256)
    assert MobileBertConfig(**kw).true_hidden_size == transformers.MobileBertConfig(**kw).true_hidden_size


def test_json_round_trip_keeps_unknown_keys(tmp_path):
    hf = transformers.MobileBertConfig(hidden_size=256, num_labels=3, architectures=["MobileBertForMaskedLM"])
    hf.save_pretrained(tmp_path)
    original = json.loads((tmp_path / "config.json").read_text())
    cfg = MobileBertConfig.from_pretrained(tmp_path)
    assert cfg.hidden_size == 256
    out = tmp_path / "again"
    cfg.save_pretrained(out)
    again = json.loads((out / "config.json").read_text())
    for key, value in original.items():
        assert again[key] == value, key
    # and HF reads what we wrote
    back = transformers.MobileBertConfig.from_pretrained(out)
    assert back.hidden_size == 256 and back.architectures == ["MobileBertForMaskedLM"]


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(num_attention_heads=3), ["num_attention_heads", "intra_bottleneck_size", "128"]),
        (dict(use_bottleneck=False, hidden_size=100, num_attention_heads=8), ["num_attention_heads", "hidden_size"]),
        (dict(normalization_type="batch_norm"), ["normalization_type", "batch_norm"]),
        (dict(hidden_act="gelu_magic"), ["hidden_act", "gelu_magic"]),
        (dict(hidden_act="prelu"), ["hidden_act", "prelu", "learnable"]),
        (dict(hidden_size=0), ["hidden_size"]),
        (dict(vocab_size=-3), ["vocab_size"]),
        (dict(layer_norm_eps=0.0), ["layer_norm_eps"]),
        (dict(trigram_input="yes"), ["trigram_input"]),
        (dict(pad_token_id=40000), ["pad_token_id", "40000"]),
        (dict(key_query_shared_bottleneck=False), ["key_query_shared_bottleneck", "intra_bottleneck_size", "512"]),
    ],
)
def test_invalid_configs_name_the_field(changes, words):
    with pytest.raises(ConfigError) as info:
        MobileBertConfig(**changes)
    for word in words:
        assert word in str(info.value)


def test_kq_unshared_is_valid_when_sizes_match_or_attention_bottlenecked():
    MobileBertConfig(key_query_shared_bottleneck=False, intra_bottleneck_size=512, num_attention_heads=4)
    MobileBertConfig(key_query_shared_bottleneck=False, use_bottleneck_attention=True)
    MobileBertConfig(key_query_shared_bottleneck=False, use_bottleneck=False)


def test_hf_cannot_run_the_rejected_combination():
    """The combination validate() rejects really fails in transformers too."""
    import torch

    hf = transformers.MobileBertConfig(
        vocab_size=30,
        hidden_size=32,
        embedding_size=16,
        intra_bottleneck_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        key_query_shared_bottleneck=False,
    )
    model = transformers.MobileBertModel(hf).eval()
    with pytest.raises(RuntimeError):
        model(torch.zeros((1, 4), dtype=torch.long))


def test_bad_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="config.json"):
        MobileBertConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="model_type"):
        MobileBertConfig.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="no config.json"):
        MobileBertConfig.from_pretrained(tmp_path / "missing")


def test_config_needs_no_numba(tmp_path):
    """Checking a config (hidden_act against the activation table) compiles nothing and imports no Numba."""
    import subprocess
    import sys

    code = (
        "import sys, mbengine\n"
        "mbengine.MobileBertConfig(hidden_act='gelu_new').to_dict()\n"
        "print('numba' in sys.modules, 'llvmlite' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(num_hidden_layers=10**9), ["num_hidden_layers", "1000000000", "1024"]),
        (dict(vocab_size=10**12), ["vocab_size"]),
        (dict(intermediate_size=2**40), ["intermediate_size"]),
        (
            dict(
                hidden_size=60000,
                intermediate_size=200000,
                num_hidden_layers=1000,
                intra_bottleneck_size=60000,
                num_attention_heads=1,
            ),
            ["values"],
        ),
        (dict(hidden_size="512"), ["hidden_size", "'512'"]),
        (dict(hidden_size=512.0), ["hidden_size"]),
        (dict(num_hidden_layers=True), ["num_hidden_layers"]),
        (dict(hidden_act=["relu"]), ["hidden_act", "string"]),
        (dict(normalization_type=None), ["normalization_type"]),
        (dict(hidden_dropout_prob="0.1"), ["hidden_dropout_prob"]),
        (dict(pad_token_id=1.5), ["pad_token_id"]),
        (dict(extra={"num_labels": 10**12}), ["num_labels"]),
        (dict(extra={"num_labels": "3"}), ["num_labels"]),
        (dict(extra={"id2label": ["a", "b"]}), ["id2label"]),
        (dict(extra={"id2label": {"0": "a", "2": "b"}}), ["id2label", "0..1"]),
        (dict(hidden_act="x" * 100000), ["hidden_act", "characters"]),
    ],
)
def test_absurd_configs_are_refused_before_anything_is_built(changes, words):
    """Sizes of 10^9 or 10^12 and wrong types: a ConfigError naming the field (and a short message even
    when the value is huge), decided from the fields alone."""
    with pytest.raises(ConfigError) as info:
        MobileBertConfig(**changes)
    message = str(info.value)
    assert len(message) < 500, len(message)
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"hidden_size": 64, "name": "caf\xe9"}', ["not UTF-8", "byte 33"]),
        (b"[1, 2, 3]", ["JSON object", "list"]),
        (b'"mobilebert"', ["JSON object", "str"]),
        (b"[" * 100000, ["nested too deeply"]),
        (b'{"hidden_size": 1e999}', ["hidden_size"]),
        (b'{"layer_norm_eps": NaN}', ["layer_norm_eps"]),
    ],
)
def test_config_files_that_are_not_configs(tmp_path, content, words):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(ConfigError) as info:
        MobileBertConfig.from_pretrained(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)
    for word in words:
        assert word in str(info.value)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    [f.name for f in dataclasses.fields(MobileBertConfig) if f.name != "extra"]
    + ["id2label", "label2id", "num_labels", "problem_type", "architectures", "model_type"]
)


@given(st.dictionaries(FIELDS, JSON_VALUES | st.integers(1, 10**13), max_size=6))
@settings(max_examples=300, deadline=None)
def test_any_json_object_is_a_config_or_a_config_error(tmp_path_factory, fields):
    """Whatever a config.json's fields hold: it loads, or it is refused with ConfigError; never another
    exception. (A loaded config is also bounded: its model fits in MAX_VALUES values.)"""
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(fields))
    try:
        config = MobileBertConfig.from_pretrained(path)
    except ConfigError:
        return
    assert config.parameter_count() <= MAX_VALUES
    assert 1 <= config.num_labels <= MAX_LABELS
