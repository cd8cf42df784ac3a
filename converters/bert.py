"""BERT checkpoints through the MobileBERT graph.

A BERT layer is a MobileBERT layer without bottlenecks, with one feed-forward
network, LayerNorm and no trigram input, and Hugging Face gives the tensors
the same names. So a ``model_type: bert`` checkpoint (all-MiniLM-L6-v2, say)
runs on the same kernels after two adjustments: the MobileBERT-only tensors
it lacks are added (the unused embedding transformation, the masked-LM head's
empty extra dense weight), and the two LayerNorms MobileBERT builds with
torch's default eps (embeddings, layer output) take BERT's ``layer_norm_eps``
(config key ``mbengine_default_layer_norm_eps``, read by the graph builder).
"""

from __future__ import annotations

import numpy as np

from mbengine.config import MobileBertConfig
from mbengine.errors import ConfigError

EPS_KEY = "mbengine_default_layer_norm_eps"


def config_from_bert(raw: dict) -> MobileBertConfig:
    """The MobileBertConfig that computes what BertModel computes for this BERT config."""
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(
            f"BERT config field 'position_embedding_type' is {raw['position_embedding_type']!r}; "
            "only absolute position embeddings are supported"
        )
    hidden = raw.get("hidden_size", 768)
    keep = (
        "vocab_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "max_position_embeddings",
        "type_vocab_size",
        "layer_norm_eps",
        "pad_token_id",
        "initializer_range",
        "hidden_dropout_prob",
        "attention_probs_dropout_prob",
        "classifier_dropout",
    )
    fields = {k: raw[k] for k in keep if k in raw}
    extra = {k: v for k, v in raw.items() if k not in keep and k not in ("hidden_size", "model_type")}
    extra[EPS_KEY] = raw.get("layer_norm_eps", 1e-12)
    extra["source_model_type"] = "bert"
    return MobileBertConfig(
        hidden_size=hidden,
        embedding_size=hidden,
        intra_bottleneck_size=hidden,
        trigram_input=False,
        use_bottleneck=False,
        use_bottleneck_attention=False,
        key_query_shared_bottleneck=False,
        num_feedforward_networks=1,
        normalization_type="layer_norm",
        classifier_activation=True,
        extra=extra,
        **fields,
    )


def tensors_from_bert(tensors: dict[str, np.ndarray], config: MobileBertConfig) -> dict[str, np.ndarray]:
    """Add the MobileBERT tensors a BERT checkpoint does not have (all unused or empty)."""
    out = {k[len("bert.") :] if k.startswith("bert.") else k: v for k, v in tensors.items()}
    H = config.hidden_size
    out.setdefault("embeddings.embedding_transformation.weight", np.zeros((H, H), np.float32))
    out.setdefault("embeddings.embedding_transformation.bias", np.zeros(H, np.float32))
    if "cls.predictions.bias" in out or "cls.predictions.decoder.weight" in out:
        out.setdefault("cls.predictions.dense.weight", np.zeros((0, config.vocab_size), np.float32))
    return out
