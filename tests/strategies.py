"""Hypothesis strategies: small MobileBERT configs over every variant, and padded inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from mbengine.config import MobileBertConfig

HIDDEN_ACTS = ("relu", "gelu", "gelu_new", "silu", "tanh", "relu6")

# transformers' MobileBertModelTester (tests/models/mobilebert/test_modeling_mobilebert.py):
# the fields it sets; the rest are MobileBertConfig defaults, so the bottleneck
# (intra_bottleneck_size 128) is wider than the hidden state (64), with trigram
# input, 4 FFNs, NoNorm and a shared key/query bottleneck.
HF_TESTER_CONFIG = MobileBertConfig(
    vocab_size=99,
    hidden_size=64,
    embedding_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=512,
    type_vocab_size=16,
    initializer_range=0.02,
)


@st.composite
def small_configs(draw) -> MobileBertConfig:
    """Every structural variant at toy sizes; never the combination validate() rejects."""
    use_bottleneck = draw(st.booleans())
    use_bottleneck_attention = draw(st.booleans())
    key_query_shared_bottleneck = draw(st.booleans())
    hidden = draw(st.integers(8, 64))
    if not use_bottleneck:
        intra = draw(st.integers(4, 64))  # unused: the attention width is the hidden size
        width = hidden
    elif not use_bottleneck_attention and not key_query_shared_bottleneck:
        intra = width = hidden  # Q and K read the hidden state, so the widths must agree
    else:
        intra = width = draw(st.integers(4, 64))
    heads = draw(st.sampled_from([h for h in (1, 2, 3, 4) if width % h == 0]))
    if draw(st.booleans()):
        embedding = hidden
    else:
        embedding = draw(st.integers(4, 48))
    return MobileBertConfig(
        vocab_size=draw(st.integers(20, 120)),
        hidden_size=hidden,
        num_hidden_layers=draw(st.integers(1, 3)),
        num_attention_heads=heads,
        intermediate_size=draw(st.integers(4, 40)),
        hidden_act=draw(st.sampled_from(HIDDEN_ACTS)),
        max_position_embeddings=draw(st.integers(16, 64)),
        type_vocab_size=draw(st.integers(1, 16)),
        # a large eps makes a norm that uses the wrong eps visible
        layer_norm_eps=draw(st.sampled_from([1e-12, 1e-6, 1e-3, 0.1])),
        embedding_size=embedding,
        trigram_input=draw(st.booleans()),
        use_bottleneck=use_bottleneck,
        intra_bottleneck_size=intra,
        use_bottleneck_attention=use_bottleneck_attention,
        key_query_shared_bottleneck=key_query_shared_bottleneck,
        num_feedforward_networks=draw(st.integers(1, 4)),
        normalization_type=draw(st.sampled_from(["no_norm", "layer_norm"])),
        classifier_activation=draw(st.booleans()),
    )


@st.composite
def inputs(draw, cfg: MobileBertConfig, max_batch: int = 3, max_seq: int = 12):
    """(input_ids, attention_mask, token_type_ids), int64 (B, S), right padded.

    Every row has at least one real token; the mask is ones then zeros.
    """
    batch = draw(st.integers(1, max_batch))
    seq = draw(st.integers(1, min(max_seq, cfg.max_position_embeddings)))
    lengths = draw(st.lists(st.integers(1, seq), min_size=batch, max_size=batch))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int64)
    types = rng.integers(0, cfg.type_vocab_size, (batch, seq), dtype=np.int64)
    mask = (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    return ids, mask, types
