"""Every MobileBERT task head against Hugging Face transformers, over hypothesis-drawn configs."""

import numpy as np
import pytest
import torch
import transformers
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mbengine
from mbengine.config import MobileBertConfig
from mbengine.errors import CheckpointError, ConfigError

from .helpers import rel_err
from .hf_util import HEADS, hf_config, random_head_model, save_hf
from .strategies import inputs, small_configs

TOL = 1e-4


def token_level(cls_name, field) -> bool:
    """Whether an output field has a value per token (then padding="skip" leaves zeros at the padding)."""
    if field in ("prediction_logits", "start_logits", "end_logits"):
        return True
    return field == "logits" and cls_name in ("MobileBertForMaskedLM", "MobileBertForTokenClassification")


def compare(cls_name, config, seed, ids, mask, types, tmp_path_factory):
    """Our head against HF's: padding computed, every position; padding skipped (the default), the real
    positions, and zeros at the padding."""
    fields, _ = HEADS[cls_name]
    hf = random_head_model(cls_name, config, seed)
    path = tmp_path_factory.mktemp("head")
    save_hf(hf, str(path))
    if cls_name == "MobileBertForMultipleChoice":  # (batch, choices, seq): choices are rolled rows
        ids, mask, types = (np.stack([a, np.roll(a, 1, axis=0)], axis=1) for a in (ids, mask, types))
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
    real = mask.astype(bool)
    for padding in ("compute", "skip"):
        ours = getattr(mbengine, cls_name).from_pretrained(path, trigram_padding="hf", padding=padding)
        out = ours(ids, attention_mask=mask, token_type_ids=types)
        for field in fields:
            got, want = getattr(out, field), getattr(ref, field).numpy()
            assert got.shape == want.shape, (field, got.shape, want.shape)
            if padding == "skip" and token_level(cls_name, field):
                assert not got[~real].any(), f"{cls_name}.{field}: padding positions are not zero"
                want = want.copy()
                want[~real] = 0  # (relative errors over the real positions)
            for b in range(got.shape[0]):
                err = rel_err(got[b], want[b])
                assert err <= TOL, f"{cls_name}.{field}[{b}] (padding={padding}): relative error {err:.3g}"


@pytest.mark.parametrize("cls_name", list(HEADS))
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data(), config=small_configs(), seed=st.integers(0, 2**16))
def test_head_matches_hf(tmp_path_factory, cls_name, data, config, seed):
    extra = HEADS[cls_name][1]
    if cls_name in ("MobileBertForPreTraining", "MobileBertForMaskedLM"):
        assume(config.hidden_size >= config.embedding_size)  # else HF cannot build the head either
    if extra:
        config = MobileBertConfig.from_dict({**config.to_dict(), **extra})
    ids, mask, types = data.draw(inputs(config))
    compare(cls_name, config, seed, ids, mask, types, tmp_path_factory)


@pytest.mark.parametrize("tie", [True, False])
def test_masked_lm_tied_and_untied_decoder(tmp_path_factory, tie):
    config = MobileBertConfig(
        vocab_size=70,
        hidden_size=48,
        embedding_size=16,
        intra_bottleneck_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=30,
        tie_word_embeddings=tie,
        normalization_type="layer_norm",
    )
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 70, (2, 10))
    compare("MobileBertForMaskedLM", config, 5, ids, np.ones_like(ids), np.zeros_like(ids), tmp_path_factory)


def test_vocab_projection_over_many_columns(tmp_path_factory):
    """A vocabulary above the kernel's chunking threshold, not a multiple of the tile width."""
    config = MobileBertConfig(
        vocab_size=3001,
        hidden_size=32,
        embedding_size=16,
        intra_bottleneck_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
    )
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 3001, (3, 11))
    compare("MobileBertForPreTraining", config, 9, ids, np.ones_like(ids), np.zeros_like(ids), tmp_path_factory)


def test_base_model_from_head_checkpoint(tmp_path_factory):
    """MobileBertModel from a masked-LM checkpoint, which has no pooler: the pooler is left out (its
    absence read from the tensors); asked for explicitly, it is an error that says what is missing."""
    config = MobileBertConfig(
        vocab_size=50,
        hidden_size=32,
        embedding_size=16,
        intra_bottleneck_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
    )
    hf = random_head_model("MobileBertForMaskedLM", config, 3)
    path = tmp_path_factory.mktemp("mlm")
    save_hf(hf, str(path))
    with pytest.raises(CheckpointError, match="missing tensor 'pooler.dense.weight'"):
        mbengine.MobileBertModel.from_pretrained(path, add_pooling_layer=True)
    ids = np.arange(1, 9)[None]
    with torch.no_grad():
        want = hf.mobilebert(torch.tensor(ids)).last_hidden_state.numpy()
    for model in (
        mbengine.MobileBertModel.from_pretrained(path, trigram_padding="hf"),
        mbengine.MobileBertModel.from_pretrained(path, add_pooling_layer=False, trigram_padding="hf"),
    ):
        out = model(ids)
        assert out.pooler_output is None
        assert rel_err(out.last_hidden_state, want) <= TOL


def test_untied_decoder_is_the_checkpoints_own(tmp_path):
    """tie_word_embeddings false: the masked-LM logits come from the checkpoint's own decoder weight (not
    the word embeddings), as in PyTorch."""
    config = MobileBertConfig(
        vocab_size=50,
        hidden_size=32,
        embedding_size=16,
        intra_bottleneck_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
        tie_word_embeddings=False,
    )
    hf = random_head_model("MobileBertForMaskedLM", config, 5)
    decoder = hf.cls.predictions.decoder.weight
    assert decoder.shape == (50, 16) and not torch.equal(decoder, hf.mobilebert.embeddings.word_embeddings.weight)
    save_hf(hf, str(tmp_path))
    ids = np.arange(1, 12)[None]
    with torch.no_grad():
        want = hf(torch.tensor(ids)).logits.numpy()
    model = mbengine.MobileBertForMaskedLM.from_pretrained(tmp_path, trigram_padding="hf")
    assert rel_err(model(ids).logits, want) <= TOL


def test_lm_head_needs_hidden_at_least_embedding():
    config = MobileBertConfig(
        vocab_size=30,
        hidden_size=16,
        embedding_size=32,
        intra_bottleneck_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
    )
    with pytest.raises(ConfigError, match="hidden_size >= embedding_size"):
        mbengine.MobileBertForMaskedLM.from_tensors(config, {})
    with pytest.raises(RuntimeError):  # transformers cannot build it either
        transformers.MobileBertForMaskedLM(hf_config(config))


def test_question_answering_needs_two_labels(tmp_path):
    config = MobileBertConfig.from_dict(
        {
            "vocab_size": 30,
            "hidden_size": 32,
            "embedding_size": 16,
            "intra_bottleneck_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 20,
            "num_labels": 3,
        }
    )
    with pytest.raises(ConfigError, match="num_labels = 2"):
        mbengine.MobileBertForQuestionAnswering.from_tensors(config, {})


def test_multiple_choice_shape_errors(tmp_path_factory):
    config = MobileBertConfig(
        vocab_size=30,
        hidden_size=32,
        embedding_size=16,
        intra_bottleneck_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
    )
    hf = random_head_model("MobileBertForMultipleChoice", config, 1)
    path = tmp_path_factory.mktemp("mc")
    save_hf(hf, str(path))
    model = mbengine.MobileBertForMultipleChoice.from_pretrained(path)
    with pytest.raises(ValueError, match=r"\(batch, num_choices, seq\)"):
        model(np.ones((2, 5), np.int64))
    with pytest.raises(ValueError, match="attention_mask"):
        model(np.ones((2, 3, 5), np.int64), attention_mask=np.ones((2, 5), np.int64))
