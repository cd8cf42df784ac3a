"""The float64 NumPy reference (tests/reference.py) against Hugging Face transformers.

This validates the spec itself: HF runs in float64 too, so the two must agree
to rounding (relative error 1e-9), over every config variant, right-padded
masks, explicit position ids and every activation.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbengine.kernels.activations import ACTIVATIONS

from .helpers import rel_err
from .hf_util import hf_forward, random_hf_model, state_dict_numpy  # noqa: E402
from .reference import ACT, reference_forward
from .strategies import HF_TESTER_CONFIG, inputs, small_configs

TOL64 = 1e-9  # reference vs HF, both float64
TOL32 = 1e-5  # reference vs HF in float32


def assert_close(ref, hf, tol, keys=("last_hidden_state", "pooler_output", "hidden_states", "attentions")):
    for key in keys:
        if hf[key] is None:
            continue
        ours, theirs = ref[key], hf[key]
        if isinstance(theirs, list):
            assert len(ours) == len(theirs), key
            for i, (o, t) in enumerate(zip(ours, theirs)):
                assert o.shape == t.shape, (key, i, o.shape, t.shape)
                err = rel_err(o, t)
                assert err <= tol, f"{key}[{i}]: relative error {err:.3g} > {tol}"
        else:
            assert ours.shape == theirs.shape, (key, ours.shape, theirs.shape)
            err = rel_err(ours, theirs)
            assert err <= tol, f"{key}: relative error {err:.3g} > {tol}"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), config=small_configs(), seed=st.integers(0, 2**16), explicit_positions=st.booleans())
def test_reference_matches_hf_float64(data, config, seed, explicit_positions):
    hf = random_hf_model(config, seed).double()
    ids, mask, types = data.draw(inputs(config))
    positions = None
    if explicit_positions:
        rng = np.random.default_rng(seed)
        positions = rng.integers(0, config.max_position_embeddings, ids.shape)
    expected = hf_forward(hf, ids, mask, types, positions, output_hidden_states=True, output_attentions=True)
    ref = reference_forward(state_dict_numpy(hf), config, ids, mask, types, positions)
    assert len(ref["hidden_states"]) == config.num_hidden_layers + 1
    assert len(ref["attentions"]) == config.num_hidden_layers
    assert_close(ref, expected, TOL64)


def _tester_inputs(config):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (3, 7))
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 1:] = 0
    types = rng.integers(0, config.type_vocab_size, ids.shape)
    return ids, mask, types


def test_reference_matches_hf_tester_config():
    config = HF_TESTER_CONFIG
    hf = random_hf_model(config, seed=7)
    ids, mask, types = _tester_inputs(config)
    ref = reference_forward(state_dict_numpy(hf), config, ids, mask, types)
    assert_close(
        ref,
        hf_forward(hf, ids, mask, types, output_hidden_states=True),
        TOL32,
        keys=("last_hidden_state", "pooler_output"),
    )
    hf = hf.double()
    assert_close(ref, hf_forward(hf, ids, mask, types, output_hidden_states=True, output_attentions=True), TOL64)


def test_reference_defaults_match_hf():
    """No mask, no token types, no positions: HF's defaults (all visible, type 0, 0..S-1)."""
    config = HF_TESTER_CONFIG.replace(classifier_activation=False, normalization_type="layer_norm")
    hf = random_hf_model(config, seed=3).double()
    ids = np.random.default_rng(1).integers(0, config.vocab_size, (2, 5))
    ref = reference_forward(state_dict_numpy(hf), config, ids)
    assert_close(ref, hf_forward(hf, ids), TOL64, keys=("last_hidden_state", "pooler_output"))
    np.testing.assert_array_equal(ref["pooler_output"], ref["last_hidden_state"][:, 0])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_reference_activations_match_hf(name):
    from transformers.activations import ACT2FN

    x = np.concatenate([np.linspace(-12, 12, 4801), [-1e4, -50.0, -20.5, 20.5, 50.0, 1e4, 0.0]])
    expected = ACT2FN[name](torch.tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ACT[name](x), expected, rtol=1e-9, atol=1e-12)


def test_reference_covers_every_kernel_activation():
    assert set(ACT) == set(ACTIVATIONS)


@settings(max_examples=10, deadline=None)
@given(data=st.data(), config=small_configs(), seed=st.integers(0, 2**16))
def test_mask_aware_trigram_makes_padding_invisible(data, config, seed):
    """With trigram_mask_aware the real tokens of a padded row equal the row run alone."""
    weights = state_dict_numpy(random_hf_model(config, seed))
    ids, mask, types = data.draw(inputs(config))
    batch = reference_forward(weights, config, ids, mask, types, trigram_mask_aware=True)
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        alone = reference_forward(
            weights, config, ids[b : b + 1, :n], None, types[b : b + 1, :n], trigram_mask_aware=True
        )
        assert rel_err(batch["last_hidden_state"][b, :n], alone["last_hidden_state"][0]) <= 1e-12
        assert rel_err(batch["pooler_output"][b], alone["pooler_output"][0]) <= 1e-12
        # without padding the two trigram modes are the same computation
        hf_mode = reference_forward(weights, config, ids[b : b + 1, :n], None, types[b : b + 1, :n])
        np.testing.assert_array_equal(hf_mode["last_hidden_state"], alone["last_hidden_state"])
