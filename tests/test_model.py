"""MobileBertModel against the float64 NumPy reference and against Hugging Face transformers.

Hypothesis draws configs over every variant (bottleneck modes, FFN count,
trigram, embedding width, norm type, pooler activation, activation) and
inputs with right padding. The float32 engine must stay within 1e-4 relative
error (||ours - ref|| / ||ref|| per example) of both references.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbengine import MobileBertModel
from mbengine.config import MobileBertConfig

from .helpers import rel_err
from .hf_util import hf_forward, random_hf_model, save_hf, state_dict_numpy
from .reference import reference_forward
from .strategies import HF_TESTER_CONFIG, inputs, small_configs

TOL = 1e-4
WORST: dict[str, float] = {}  # worst relative error seen per comparison, printed at the end


def check(name, ours, ref, tol=TOL):
    """Per-example relative error along the batch axis."""
    worst = max(rel_err(o, r) for o, r in zip(ours, ref))
    WORST[name] = max(WORST.get(name, 0.0), worst)
    assert worst <= tol, f"{name}: relative error {worst:.3g} > {tol}"


@pytest.fixture(scope="module", autouse=True)
def report_worst():
    yield
    print("\nworst relative errors (float32 engine):", {k: f"{v:.2e}" for k, v in sorted(WORST.items())})


def engine_for(hf_model, config, tmp_path_factory, **kwargs):
    path = tmp_path_factory.mktemp("hf")
    save_hf(hf_model, str(path))
    return MobileBertModel.from_pretrained(path, **kwargs)


SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@settings(max_examples=60, **SETTINGS)
@given(data=st.data(), config=small_configs(), seed=st.integers(0, 2**16))
def test_matches_reference_and_hf(tmp_path_factory, data, config, seed):
    hf = random_hf_model(config, seed)
    model = engine_for(hf, config, tmp_path_factory, trigram_padding="hf")
    ids, mask, types = data.draw(inputs(config))
    out = model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True, output_attentions=True)
    ref = reference_forward(state_dict_numpy(hf), config, ids, mask, types)
    hfo = hf_forward(hf, ids, mask, types, output_hidden_states=True, output_attentions=True)
    for name, expected in (("reference", ref), ("hf", hfo)):
        check(f"{name}/last_hidden_state", out.last_hidden_state, expected["last_hidden_state"])
        check(f"{name}/pooler_output", out.pooler_output, expected["pooler_output"])
        assert len(out.hidden_states) == len(expected["hidden_states"]) == config.num_hidden_layers + 1
        for ours, exp in zip(out.hidden_states, expected["hidden_states"]):
            check(f"{name}/hidden_states", ours, exp)
        assert len(out.attentions) == config.num_hidden_layers
        for ours, exp in zip(out.attentions, expected["attentions"]):
            check(f"{name}/attentions", ours, exp)


@settings(max_examples=20, **SETTINGS)
@given(data=st.data(), config=small_configs(), seed=st.integers(0, 2**16))
def test_padded_rows_equal_rows_alone(tmp_path_factory, data, config, seed):
    """With the default trigram_padding="mask", padding never changes the real tokens."""
    hf = random_hf_model(config, seed)
    model = engine_for(hf, config, tmp_path_factory)
    ids, mask, types = data.draw(inputs(config))
    batch = model(ids, attention_mask=mask, token_type_ids=types)
    weights = state_dict_numpy(hf)
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        alone = model(ids[b : b + 1, :n], token_type_ids=types[b : b + 1, :n])
        check("padded-vs-alone/last_hidden_state", batch.last_hidden_state[b : b + 1, :n], alone.last_hidden_state)
        check("padded-vs-alone/pooler_output", batch.pooler_output[b : b + 1], alone.pooler_output)
        # and the mask-aware reference agrees with the padded batch
        ref = reference_forward(
            weights, config, ids[b : b + 1], mask[b : b + 1], types[b : b + 1], trigram_mask_aware=True
        )
        check(
            "reference-mask-aware/last_hidden_state",
            batch.last_hidden_state[b : b + 1, :n],
            ref["last_hidden_state"][:, :n],
        )


@settings(max_examples=30, **SETTINGS)
@given(data=st.data(), config=small_configs(), seed=st.integers(0, 2**16))
def test_skipped_padding_matches_hf_at_real_positions(tmp_path_factory, data, config, seed):
    """The default padding="skip" (only the real tokens run): Hugging Face's values at every real
    position of every hidden state, zeros at the padding, HF's pooler output."""
    hf = random_hf_model(config, seed)
    model = engine_for(hf, config, tmp_path_factory, trigram_padding="hf")
    ids, mask, types = data.draw(inputs(config))
    out = model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    expected = hf_forward(hf, ids, mask, types, output_hidden_states=True)
    real = mask.astype(bool)[..., None]
    for ours, exp in zip(
        (out.last_hidden_state, *out.hidden_states), (expected["last_hidden_state"], *expected["hidden_states"])
    ):
        assert not (ours * ~real).any()
        check("skip/hidden_states", ours, exp * real)
    check("skip/pooler_output", out.pooler_output, expected["pooler_output"])


def test_hf_tester_config(tmp_path_factory):
    config = HF_TESTER_CONFIG
    hf = random_hf_model(config, seed=7)
    model = engine_for(hf, config, tmp_path_factory, trigram_padding="hf", padding="compute")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (3, 7))
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    types = rng.integers(0, config.type_vocab_size, ids.shape)
    out = model(ids, attention_mask=mask, token_type_ids=types)
    expected = hf_forward(hf, ids, mask, types)
    check("hf-tester/last_hidden_state", out.last_hidden_state, expected["last_hidden_state"])
    check("hf-tester/pooler_output", out.pooler_output, expected["pooler_output"])


def test_fusion_rewrite_changes_nothing(tmp_path_factory):
    """Sibling-linear fusion is a pure rewrite: fused and unfused graphs agree to float32 rounding."""
    config = MobileBertConfig(
        vocab_size=60,
        hidden_size=48,
        embedding_size=16,
        intra_bottleneck_size=24,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=40,
    )
    hf = random_hf_model(config, seed=1)
    path = tmp_path_factory.mktemp("fuse")
    save_hf(hf, str(path))
    fused = MobileBertModel.from_pretrained(path)
    plain = MobileBertModel.from_pretrained(path, fuse=False)
    assert len(fused.runner().graph.ops) < len(plain.runner().graph.ops)
    ids = np.random.default_rng(2).integers(0, 60, (2, 11))
    check("fused-vs-unfused", fused(ids).last_hidden_state, plain(ids).last_hidden_state, tol=1e-6)


def test_repeated_calls_and_shapes_are_deterministic(tmp_path_factory):
    config = HF_TESTER_CONFIG
    hf = random_hf_model(config, seed=3)
    model = engine_for(hf, config, tmp_path_factory)
    rng = np.random.default_rng(5)
    a = rng.integers(0, config.vocab_size, (2, 9))
    first = model(a).last_hidden_state
    for shape in [(1, 3), (4, 17), (2, 9)]:  # other arenas in between
        model(rng.integers(0, config.vocab_size, shape))
    np.testing.assert_array_equal(model(a).last_hidden_state, first)


def well_conditioned_hf_model(config, seed, gain=0.5, outliers=1e6):
    """A random model whose float32 forward is well conditioned at full depth.

    With unit-gain random weights 24 NoNorm layers are chaotic (activations
    grow to 1e15 and HF's own float32 forward is 30% off its float64 value),
    which tests nothing. Linear weights with gain 0.5 keep every layer
    contractive; then, as trained MobileBERTs do, a few output channels of the
    last layer are scaled to ~1e7 (NoNorm weight x ``outliers``).
    """
    import torch
    import transformers

    from .hf_util import hf_config

    torch.manual_seed(seed)
    model = transformers.MobileBertModel(hf_config(config)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif "embeddings" in name and "transformation" not in name:
                p.normal_(0.0, 0.5)
            else:
                p.normal_(0.0, gain / np.sqrt(p.shape[1]))
        last = model.encoder.layer[-1].output.bottleneck.LayerNorm
        last.weight[:8] *= outliers
    return model


@pytest.mark.slow
def test_full_size_google_mobilebert_uncased(tmp_path_factory):
    """The google/mobilebert-uncased architecture (24 layers), seq 128, against transformers."""
    config = MobileBertConfig(classifier_activation=False)
    hf = well_conditioned_hf_model(config, seed=11)
    model = engine_for(hf, config, tmp_path_factory, trigram_padding="hf")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (2, 128))
    mask = np.ones_like(ids)
    mask[1, 100:] = 0
    types = np.zeros_like(ids)
    types[:, 64:] = 1
    out = model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    expected = hf_forward(hf, ids, mask, types, output_hidden_states=True)
    assert np.abs(expected["last_hidden_state"]).max() > 1e6  # the outlier channels are there
    real = mask.astype(bool)[..., None]  # the padding is skipped: HF's values at the real positions
    check("full-size/last_hidden_state", out.last_hidden_state, expected["last_hidden_state"] * real)
    check("full-size/pooler_output", out.pooler_output, expected["pooler_output"])
    for ours, exp in zip(out.hidden_states, expected["hidden_states"]):
        check("full-size/hidden_states", ours, exp * real)
