"""Hugging Face MobileBertModel in plain NumPy float64: the spec the engine is checked against.

One small pure function per block, written from ``modeling_mobilebert.py``.
Weights arrive as a flat dict under HF base-model names without the
``mobilebert.`` prefix and are nested by name (``p["encoder"]["layer"][0]...``),
so every function reads its tensors under the checkpoint's own names.

Shapes: B batch, S sequence, E embedding_size, H hidden_size, T true_hidden_size
(the width inside the bottleneck), I intermediate_size, n heads, d head size.

Surprises worth knowing (all checked against transformers by test_reference.py):

- ``embeddings.LayerNorm`` and ``encoder.layer.*.output.LayerNorm`` are built
  without an eps, so as LayerNorm they use torch's default 1e-5; every other
  norm uses ``config.layer_norm_eps``. NoNorm ignores eps.
- ``use_bottleneck_attention`` wins over ``key_query_shared_bottleneck``: the
  ``attention`` bottleneck then has weights but is never used.
- Hugging Face's trigram window only zeroes beyond the padded length, so the
  last real token of a right-padded row sees the [PAD] embedding
  (``trigram_mask_aware=True`` zeroes masked neighbours instead).
"""

from __future__ import annotations

import math

import numpy as np

TORCH_LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, used where HF passes no eps
MASK_MIN = float(np.finfo(np.float32).min)  # what HF adds to the score of a masked key


# ----------------------------------------------------------------------------- activations
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _softplus(x):
    # torch.nn.functional.softplus(beta=1, threshold=20): linear above the threshold
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def _sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACT = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "gelu": gelu,
    "gelu_python": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_python_tanh": gelu_tanh,
    "gelu_accurate": gelu_tanh,
    "gelu_fast": lambda x: 0.5 * x * (1.0 + np.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "quick_gelu": lambda x: x * _sigmoid(1.702 * x),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "gelu_10": lambda x: np.clip(gelu(x), -10.0, 10.0),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "relu2": lambda x: np.maximum(x, 0.0) ** 2,
    "leaky_relu": lambda x: np.where(x >= 0.0, x, 0.01 * x),
    "hardswish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "laplace": lambda x: 0.5 * (1.0 + _erf((x - 0.707107) / (0.282095 * math.sqrt(2.0)))),
    "sqrtsoftplus": lambda x: np.sqrt(_softplus(x)),
}


# ----------------------------------------------------------------------------- weights
def nest(flat: dict[str, np.ndarray]) -> dict:
    """{"a.0.b": w} -> {"a": {0: {"b": w}}} (integer path parts become int keys), as float64."""
    root: dict = {}
    for name, value in flat.items():
        node = root
        *path, leaf = [int(p) if p.isdigit() else p for p in name.split(".")]
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = np.asarray(value, np.float64)
    return root


# ----------------------------------------------------------------------------- blocks
def linear(x, p):
    return x @ p["weight"].T + p["bias"]  # [..., in] -> [..., out]


def norm(x, p, kind, eps):
    if kind == "no_norm":
        return x * p["weight"] + p["bias"]
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, as torch
    return (x - mean) / np.sqrt(var + eps) * p["weight"] + p["bias"]


def trigram(e, mask, mask_aware):
    """[B, S, E] -> [B, S, 3E]: [next token | this token | previous token], zero beyond the ends."""
    B, S, E = e.shape
    nxt = np.zeros_like(e)
    prv = np.zeros_like(e)
    nxt[:, :-1] = e[:, 1:]
    prv[:, 1:] = e[:, :-1]
    if mask_aware:  # a padded neighbour counts as outside the sequence
        visible = (mask != 0)[..., None].astype(np.float64)  # [B, S, 1]
        nxt[:, :-1] *= visible[:, 1:]
        prv[:, 1:] *= visible[:, :-1]
    return np.concatenate([nxt, e, prv], axis=-1)  # [B, S, 3E]


def embeddings(p, config, input_ids, token_type_ids, position_ids, mask, mask_aware):
    x = p["word_embeddings"]["weight"][input_ids]  # [B, S] -> [B, S, E]
    if config.trigram_input:
        x = trigram(x, mask, mask_aware)  # [B, S, E] -> [B, S, 3E]
    if config.trigram_input or config.embedding_size != config.hidden_size:
        x = linear(x, p["embedding_transformation"])  # [B, S, 3E or E] -> [B, S, H]
    x = x + p["position_embeddings"]["weight"][position_ids] + p["token_type_embeddings"]["weight"][token_type_ids]
    return norm(x, p["LayerNorm"], config.normalization_type, TORCH_LAYER_NORM_EPS)  # [B, S, H]


def bottleneck_layer(x, p, config):
    x = linear(x, p["dense"])  # [B, S, H] -> [B, S, T]
    return norm(x, p["LayerNorm"], config.normalization_type, config.layer_norm_eps)


def bottleneck(x, p, config):
    """-> (query input, key input, value input, attention residual)."""
    if not config.use_bottleneck:
        return x, x, x, x
    layer_input = bottleneck_layer(x, p["input"], config)  # [B, S, T]
    if config.use_bottleneck_attention:
        return layer_input, layer_input, layer_input, layer_input
    if config.key_query_shared_bottleneck:
        shared = bottleneck_layer(x, p["attention"], config)  # [B, S, T]
        return shared, shared, x, layer_input
    return x, x, x, layer_input


def split_heads(x, n):
    B, S, A = x.shape
    return x.reshape(B, S, n, A // n).transpose(0, 2, 1, 3)  # [B, S, n*d] -> [B, n, S, d]


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def self_attention(q_in, k_in, v_in, mask_add, p, config):
    """-> (context [B, S, n*d], probabilities [B, n, S, S])."""
    n = config.num_attention_heads
    q = split_heads(linear(q_in, p["query"]), n)  # [B, n, S, d]
    k = split_heads(linear(k_in, p["key"]), n)  # [B, n, S, d]
    v = split_heads(linear(v_in, p["value"]), n)  # [B, n, S, d]
    scores = q @ k.transpose(0, 1, 3, 2) * config.attention_head_size**-0.5  # [B, n, S, S]
    probs = softmax(scores + mask_add[:, None, None, :])  # [B, n, S, S]
    ctx = probs @ v  # [B, n, S, d]
    B, _, S, d = ctx.shape
    return ctx.transpose(0, 2, 1, 3).reshape(B, S, n * d), probs  # [B, S, n*d]


def add_norm(x, residual, p, kind, eps):
    return norm(linear(x, p["dense"]) + residual, p["LayerNorm"], kind, eps)


def ffn(x, p, config):
    h = ACT[config.hidden_act](linear(x, p["intermediate"]["dense"]))  # [B, S, T] -> [B, S, I]
    return add_norm(h, x, p["output"], config.normalization_type, config.layer_norm_eps)  # [B, S, T]


def layer(x, p, mask_add, config):
    """One MobileBertLayer: [B, S, H] -> ([B, S, H], probs [B, n, S, S])."""
    kind, eps = config.normalization_type, config.layer_norm_eps
    q_in, k_in, v_in, residual = bottleneck(x, p.get("bottleneck"), config)
    ctx, probs = self_attention(q_in, k_in, v_in, mask_add, p["attention"]["self"], config)  # [B, S, T]
    h = add_norm(ctx, residual, p["attention"]["output"], kind, eps)  # [B, S, T]
    for i in range(config.num_feedforward_networks - 1):
        h = ffn(h, p["ffn"][i], config)  # [B, S, T]
    inter = ACT[config.hidden_act](linear(h, p["intermediate"]["dense"]))  # [B, S, T] -> [B, S, I]
    out = add_norm(inter, h, p["output"], kind, TORCH_LAYER_NORM_EPS)  # [B, S, I] -> [B, S, T]
    if config.use_bottleneck:
        out = add_norm(out, x, p["output"]["bottleneck"], kind, eps)  # [B, S, T] -> [B, S, H]
    return out, probs


def pooler(h, p, config):
    first = h[:, 0]  # [B, S, H] -> [B, H]
    if not config.classifier_activation:
        return first
    return np.tanh(linear(first, p["dense"]))  # [B, H]


# ----------------------------------------------------------------------------- model
def reference_forward(
    weights: dict[str, np.ndarray],
    config,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    trigram_mask_aware=False,
) -> dict:
    """HF ``MobileBertModel(...)`` with every output, in float64.

    ``trigram_mask_aware=False`` is Hugging Face's behaviour exactly;
    ``True`` treats neighbours with attention mask 0 as outside the sequence.
    """
    p = nest(weights)
    input_ids = np.asarray(input_ids)
    B, S = input_ids.shape
    mask = np.ones((B, S), np.int64) if attention_mask is None else np.asarray(attention_mask)
    types = np.zeros((B, S), np.int64) if token_type_ids is None else np.asarray(token_type_ids)
    positions = np.broadcast_to(np.arange(S), (B, S)) if position_ids is None else np.asarray(position_ids)
    mask_add = np.where(mask == 0, MASK_MIN, 0.0)  # [B, S] additive, per key

    h = embeddings(p["embeddings"], config, input_ids, types, positions, mask, trigram_mask_aware)  # [B, S, H]
    hidden_states, attentions = [h], []
    for i in range(config.num_hidden_layers):
        h, probs = layer(h, p["encoder"]["layer"][i], mask_add, config)
        hidden_states.append(h)
        attentions.append(probs)
    return {
        "last_hidden_state": h,
        "pooler_output": pooler(h, p.get("pooler"), config),
        "hidden_states": hidden_states,
        "attentions": attentions,
    }
