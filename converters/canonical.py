"""The canonical checkpoint form: HF PyTorch tensor names, float32 arrays.

Every reader ends here, so the check of a tensor dict against a config is
written once: :func:`expected_shapes` lists what a MobileBertModel of that
config holds, and :func:`validate` reports every missing, unexpected,
mis-shaped or non-finite tensor in one error.
"""

from __future__ import annotations

import numpy as np

from mbengine.config import MobileBertConfig
from mbengine.errors import CheckpointError

BASE_PREFIX = "mobilebert."
# Tensors that belong to task heads or are non-persistent buffers: not part of
# the base model, ignored when only the base model is loaded.
HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.", "seq_relationship.")
IGNORED = ("embeddings.position_ids",)


def _norm(shapes: dict, prefix: str, width: int) -> None:
    shapes[prefix + ".weight"] = (width,)
    shapes[prefix + ".bias"] = (width,)


def _linear(shapes: dict, prefix: str, n_out: int, n_in: int, bias: bool = True) -> None:
    shapes[prefix + ".weight"] = (n_out, n_in)
    if bias:
        shapes[prefix + ".bias"] = (n_out,)


def expected_shapes(config: MobileBertConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of HF's MobileBertModel (pooler included)."""
    c = config
    H, E, th, I, A = c.hidden_size, c.embedding_size, c.true_hidden_size, c.intermediate_size, c.all_head_size
    ib = c.intra_bottleneck_size
    s: dict[str, tuple[int, ...]] = {}
    s["embeddings.word_embeddings.weight"] = (c.vocab_size, E)
    s["embeddings.position_embeddings.weight"] = (c.max_position_embeddings, H)
    s["embeddings.token_type_embeddings.weight"] = (c.type_vocab_size, H)
    # HF builds the transformation even when it is not applied.
    _linear(s, "embeddings.embedding_transformation", H, E * (3 if c.trigram_input else 1))
    _norm(s, "embeddings.LayerNorm", H)
    for i in range(c.num_hidden_layers):
        p = f"encoder.layer.{i}."
        _linear(s, p + "attention.self.query", A, th)
        _linear(s, p + "attention.self.key", A, th)
        _linear(s, p + "attention.self.value", A, c.value_input_size)
        _linear(s, p + "attention.output.dense", th, th)
        _norm(s, p + "attention.output.LayerNorm", th)
        _linear(s, p + "intermediate.dense", I, th)
        _linear(s, p + "output.dense", th, I)
        _norm(s, p + "output.LayerNorm", th)
        if c.use_bottleneck:
            _linear(s, p + "output.bottleneck.dense", H, th)
            _norm(s, p + "output.bottleneck.LayerNorm", H)
            _linear(s, p + "bottleneck.input.dense", ib, H)
            _norm(s, p + "bottleneck.input.LayerNorm", ib)
            if c.key_query_shared_bottleneck:
                _linear(s, p + "bottleneck.attention.dense", ib, H)
                _norm(s, p + "bottleneck.attention.LayerNorm", ib)
        for j in range(c.num_feedforward_networks - 1):
            f = p + f"ffn.{j}."
            _linear(s, f + "intermediate.dense", I, th)
            _linear(s, f + "output.dense", th, I)
            _norm(s, f + "output.LayerNorm", th)
    if c.classifier_activation:
        _linear(s, "pooler.dense", H, H)
    return s


# Task heads: which tensors each head adds (HF names), and whether it uses the pooler.
HEADS = (
    "pretraining",
    "masked_lm",
    "next_sentence",
    "sequence_classification",
    "multiple_choice",
    "token_classification",
    "question_answering",
)
HEAD_USES_POOLER = {
    None: True,
    "pretraining": True,
    "masked_lm": False,
    "next_sentence": True,
    "sequence_classification": True,
    "multiple_choice": True,
    "token_classification": False,
    "question_answering": False,
}
HEAD_MARKS = (
    ("cls.predictions.", "a masked-LM head"),
    ("cls.seq_relationship.", "a next-sentence head"),
    ("classifier.", "a classifier head (sequence, token or multiple-choice classification)"),
    ("qa_outputs.", "a question-answering head"),
)


def heads_present(names) -> str:
    """What task heads a checkpoint's tensor names hold, in words (for errors)."""
    found = [words for prefix, words in HEAD_MARKS if any(n.startswith(prefix) for n in names)]
    return " and ".join(found) if found else "no task head (a base model)"


def infer_head(names) -> tuple[str | None, list[str]]:
    """(the task head the tensor names hold, or None for a base model; the heads they fit when the names
    cannot tell them apart). A classifier of ``num_labels`` rows on the pooled output and one on every
    token hold the same tensors: such a checkpoint fits several heads."""
    names = [n[len(BASE_PREFIX) :] if n.startswith(BASE_PREFIX) else n for n in names]
    has = {
        prefix: any(n.startswith(prefix) for n in names)
        for prefix in ("cls.predictions.", "cls.seq_relationship.", "classifier.", "qa_outputs.")
    }
    if has["cls.predictions."]:
        return ("pretraining" if has["cls.seq_relationship."] else "masked_lm"), []
    if has["cls.seq_relationship."]:
        return "next_sentence", []
    if has["qa_outputs."]:
        return "question_answering", []
    if has["classifier."]:
        return None, ["sequence_classification", "token_classification", "multiple_choice"]
    return None, []


def has_pooler(names) -> bool:
    """Whether the tensor names include the pooler's dense layer."""
    return any(n in ("pooler.dense.weight", BASE_PREFIX + "pooler.dense.weight") for n in names)


TIED = {  # HF ties these to another tensor and does not save them
    "cls.predictions.decoder.weight": "embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


def head_shapes(config: MobileBertConfig, head: str | None) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the tensors ``head`` adds to the base model."""
    c = config
    H, V = c.hidden_size, c.vocab_size
    s: dict[str, tuple[int, ...]] = {}
    if head in ("pretraining", "masked_lm"):
        _linear(s, "cls.predictions.transform.dense", H, H)
        _norm(s, "cls.predictions.transform.LayerNorm", H)
        s["cls.predictions.dense.weight"] = (H - c.embedding_size, V)
        s["cls.predictions.decoder.weight"] = (V, c.embedding_size)
        s["cls.predictions.bias"] = (V,)
        if not c.tie_word_embeddings:  # transformers 5 then unties the decoder bias too
            s["cls.predictions.decoder.bias"] = (V,)
    if head in ("pretraining", "next_sentence"):
        _linear(s, "cls.seq_relationship", 2, H)
    if head in ("sequence_classification", "token_classification"):
        _linear(s, "classifier", c.num_labels, H)
    if head == "multiple_choice":
        _linear(s, "classifier", 1, H)
    if head == "question_answering":
        _linear(s, "qa_outputs", c.num_labels, H)
    return s


def model_shapes(
    config: MobileBertConfig, head: str | None = None, pooler: bool | None = None
) -> dict[str, tuple[int, ...]]:
    """Every tensor a model class needs: base (pooler if used) plus head."""
    shapes = expected_shapes(config)
    if pooler is None:
        pooler = HEAD_USES_POOLER[head]
    if not pooler:
        shapes = {k: v for k, v in shapes.items() if not k.startswith("pooler.")}
    shapes.update(head_shapes(config, head))
    return shapes


def model_tensors(
    tensors: dict[str, np.ndarray],
    config: MobileBertConfig | None = None,
    head: str | None = None,
    pooler: bool | None = None,
    own_decoder: bool = False,
) -> dict[str, np.ndarray]:
    """The tensors of one model class, under canonical names.

    Base tensors lose the ``mobilebert.`` prefix; buffers are dropped; tied
    tensors HF does not save are filled in from what they are tied to. With a
    ``config``, tensors of other heads (and an unused pooler) are dropped as
    Hugging Face ignores them; anything else that does not belong is kept so
    :func:`validate` reports it. ``own_decoder``: the masked-LM decoder is the
    checkpoint's own weight even when the config ties it to the word
    embeddings (what Hugging Face's TensorFlow classes compute with: they keep
    ``predictions/decoder/weight`` as a variable of its own).
    """
    out = {}
    for name, arr in tensors.items():
        if name.startswith(BASE_PREFIX):
            name = name[len(BASE_PREFIX) :]
        if name in IGNORED:
            continue
        out[name] = arr
    if config is None:
        return out
    wanted = model_shapes(config, head, pooler)
    for name in list(out):
        if name not in wanted and (name.startswith(HEAD_PREFIXES) or name.startswith("pooler.")):
            del out[name]
    if "cls.predictions.bias" in wanted:
        if config.tie_word_embeddings:  # HF ties (and does not save) the decoder's weight and bias
            bias = out.pop("cls.predictions.decoder.bias", None)
            if "cls.predictions.bias" not in out and bias is not None:
                out["cls.predictions.bias"] = bias
            if "embeddings.word_embeddings.weight" in out and not own_decoder:
                out["cls.predictions.decoder.weight"] = out["embeddings.word_embeddings.weight"]
        elif "cls.predictions.decoder.bias" not in out and "cls.predictions.bias" in out:
            out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"]  # older untied checkpoints
    return out


def validate(
    tensors: dict[str, np.ndarray],
    config: MobileBertConfig,
    source: str = "checkpoint",
    check_finite: bool = True,
    head: str | None = None,
    pooler: bool | None = None,
) -> None:
    """Raise CheckpointError listing every tensor that does not fit ``config`` (and ``head``)."""
    expected = model_shapes(config, head, pooler)
    problems = []
    for name in sorted(expected.keys() - tensors.keys()):
        problems.append(f"missing tensor {name!r} (expected shape {list(expected[name])})")
    for name in sorted(tensors.keys() - expected.keys()):
        problems.append(f"unexpected tensor {name!r} with shape {list(tensors[name].shape)}")
    for name in sorted(expected.keys() & tensors.keys()):
        arr = tensors[name]
        if tuple(arr.shape) != expected[name]:
            problems.append(
                f"tensor {name!r} has shape {list(arr.shape)}, expected {list(expected[name])} for this config"
            )
        elif arr.dtype.kind != "f":
            problems.append(f"tensor {name!r} has dtype {arr.dtype}, expected a floating-point type")
        elif check_finite and not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            problems.append(f"tensor {name!r} holds {bad} non-finite values (NaN or Inf)")
    hint = None
    if problems and not expected.keys() & tensors.keys():
        found = sorted(tensors)[:3]
        hint = (
            f"no tensor name matched a MobileBERT tensor name: the names could not be read, or the checkpoint "
            f"is not a MobileBERT model (it holds {len(tensors)} tensors, e.g. {', '.join(found) or 'none'})"
        )
    if problems:
        raise CheckpointError(f"{source} does not match its config", problems, hint)
