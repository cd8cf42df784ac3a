"""Checkpoints written by TensorFlow itself, against the outputs TensorFlow computed from them.

tests/fixtures/tf (made by tests/fixtures/make_tf_fixtures.py with tensorflow 2.21 and
transformers 4.57's TF classes, random weights set in TF): TFMobileBertForPreTraining and
TFMobileBertForMaskedLM saved as tf_model.h5 for three configs (the full model's 24
layers x 4 FFNs at tiny widths, whose h5 name lists Keras splits into weight_names0..1;
3 stacked FFNs; use_bottleneck_attention), one saved as TF-named safetensors, and a TF1
checkpoint in the layout of Google's SQuAD fine-tuned release. The reference is what
the framework that wrote each file computes: TF's own logits, made with TF's own
decoder weight, which is not the word-embedding table (PyTorch would tie them and
get other logits).
"""

import os

import numpy as np
import pytest

import mbengine
from mbengine.converters import tf_bundle

from .helpers import rel_err

TF = os.path.join(os.path.dirname(__file__), "fixtures", "tf")
H5_CASES = [
    (variant, head) for variant in ("deep", "ffn", "bottleneck_attention") for head in ("pretraining", "masked_lm")
] + [("ffn", "masked_lm_safetensors")]
OUTPUTS = {
    "pretraining": ("prediction_logits", "seq_relationship_logits"),
    "masked_lm": ("logits",),
    "masked_lm_safetensors": ("logits",),
}
CLASSES = {
    "pretraining": mbengine.MobileBertForPreTraining,
    "masked_lm": mbengine.MobileBertForMaskedLM,
    "masked_lm_safetensors": mbengine.MobileBertForMaskedLM,
}
TOL = 1e-4  # float32 against TF's float32


def run(model, expected, **kw):
    return model(
        expected["input_ids"].astype(np.int64),
        attention_mask=expected["attention_mask"],
        token_type_ids=expected["token_type_ids"],
        output_hidden_states=True,
        **kw,
    )


@pytest.mark.parametrize("variant, head", H5_CASES, ids=[f"{v}-{h}" for v, h in H5_CASES])
def test_tensorflow_checkpoints_give_tensorflows_outputs(variant, head):
    path = os.path.join(TF, variant, head)
    expected = np.load(os.path.join(path, "expected.npz"))
    real = expected["attention_mask"].astype(bool)
    # every position, padding included, as TF computes it
    model = CLASSES[head].from_pretrained(path, trigram_padding="hf", padding="compute")
    out = run(model, expected)
    for field in OUTPUTS[head]:
        assert rel_err(out[field], expected[field]) <= TOL, field
    assert rel_err(out.hidden_states[-1], expected["last_hidden_state"]) <= TOL
    # the defaults (padding skipped) agree at the real positions
    default = run(CLASSES[head].from_pretrained(path, trigram_padding="hf"), expected)
    key = OUTPUTS[head][0]
    assert rel_err(default[key][real], expected[key][real]) <= TOL


def test_the_decoder_is_tensorflows_own():
    """The fixtures' point: TF's decoder is not the word-embedding table, so tying them (PyTorch's rule)
    gives other logits."""
    path = os.path.join(TF, "ffn", "masked_lm")
    expected = np.load(os.path.join(path, "expected.npz"))
    model = mbengine.MobileBertForMaskedLM.from_pretrained(path, trigram_padding="hf", padding="compute")
    words = model.weights.tensors["embeddings.word_embeddings.weight"]
    decoder = model.weights.linears["cls.predictions.decoder"].dense()[:, : words.shape[1]]
    assert rel_err(decoder, words) > 0.5
    from mbengine import modeling

    tied = mbengine.MobileBertForMaskedLM.from_tensors(
        model.config, modeling.load_weights(path), trigram_padding="hf", padding="compute"
    )
    assert rel_err(run(tied, expected).logits, expected["logits"]) > 0.1


def test_split_weight_names_are_really_split():
    import h5py

    with h5py.File(os.path.join(TF, "deep", "pretraining", "tf_model.h5"), "r") as f:
        attrs = f["mobilebert"].attrs
        assert "weight_names" not in attrs and "weight_names0" in attrs and "weight_names1" in attrs


def test_googles_squad_checkpoint_is_a_question_answering_model():
    path = os.path.join(TF, "squad_tf1")
    expected = np.load(os.path.join(path, "expected.npz"))
    names = tf_bundle.read_bundle(os.path.join(path, "model.ckpt"))
    assert names["cls/squad/output_weights"].shape == (2, 32)
    model = mbengine.MobileBertForQuestionAnswering.from_pretrained(path, trigram_padding="hf", padding="compute")
    out = run(model, expected)
    for field in ("start_logits", "end_logits"):
        assert rel_err(out[field], expected[field]) <= TOL, field
