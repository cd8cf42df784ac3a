"""MobileBertConfig: Hugging Face's fields and defaults, frozen and validated.

Reads and writes HF-compatible ``config.json``. Keys this class does not model
(``architectures``, ``id2label``, ``torch_dtype``, ...) are kept in ``extra``
and written back unchanged, so a round trip loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

NORMALIZATION_TYPES = ("no_norm", "layer_norm")

# Fields HF derives itself; present in some saved configs, never authoritative.
_DERIVED = ("true_hidden_size",)


@dataclass(frozen=True)
class MobileBertConfig:
    """Hyper-parameters of a MobileBERT model (HF names, HF defaults).

    The defaults are Hugging Face's ``MobileBertConfig()`` defaults, which
    describe ``google/mobilebert-uncased`` except that its hub config sets
    ``classifier_activation`` to false.
    """

    vocab_size: int = 30522
    hidden_size: int = 512
    num_hidden_layers: int = 24
    num_attention_heads: int = 4
    intermediate_size: int = 512
    hidden_act: str = "relu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    embedding_size: int = 128
    trigram_input: bool = True
    use_bottleneck: bool = True
    intra_bottleneck_size: int = 128
    use_bottleneck_attention: bool = False
    key_query_shared_bottleneck: bool = True
    num_feedforward_networks: int = 4
    normalization_type: str = "no_norm"
    classifier_activation: bool = True
    classifier_dropout: float | None = None
    tie_word_embeddings: bool = True
    # Everything else found in config.json, kept verbatim for the round trip.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ sizes
    @property
    def true_hidden_size(self) -> int:
        """Width inside the bottleneck (HF: intra_bottleneck_size if use_bottleneck)."""
        return self.intra_bottleneck_size if self.use_bottleneck else self.hidden_size

    @property
    def attention_head_size(self) -> int:
        return self.true_hidden_size // self.num_attention_heads

    @property
    def all_head_size(self) -> int:
        return self.attention_head_size * self.num_attention_heads

    @property
    def value_input_size(self) -> int:
        """Width of the tensor the value projection reads."""
        return self.true_hidden_size if self.use_bottleneck_attention else self.hidden_size

    # ---------------------------------------------------------- task labels
    @property
    def id2label(self) -> dict[int, str]:
        """HF's label names (``config.json`` keys are strings; here ints)."""
        raw = self.extra.get("id2label")
        if raw:
            return {int(k): str(v) for k, v in raw.items()}
        n = self.extra.get("num_labels", 2)
        return {i: f"LABEL_{i}" for i in range(n)}

    @property
    def label2id(self) -> dict[str, int]:
        raw = self.extra.get("label2id")
        if raw:
            return {str(k): int(v) for k, v in raw.items()}
        return {v: k for k, v in self.id2label.items()}

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def problem_type(self) -> str | None:
        return self.extra.get("problem_type")

    # ------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ConfigError naming the field if the config is impossible to run."""
        from mbengine.kernels.names import ACTIVATIONS, UNSUPPORTED

        positive = (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size",
            "embedding_size", "intra_bottleneck_size", "num_feedforward_networks",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"config field {name!r} must be a positive integer, got {value!r}")
        flags = (
            "trigram_input", "use_bottleneck", "use_bottleneck_attention",
            "key_query_shared_bottleneck", "classifier_activation", "tie_word_embeddings",
        )
        for name in flags:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config field {name!r} must be true or false, got {getattr(self, name)!r}")
        if self.normalization_type not in NORMALIZATION_TYPES:
            raise ConfigError(
                f"config field 'normalization_type' must be one of {list(NORMALIZATION_TYPES)}, "
                f"got {self.normalization_type!r}"
            )
        if not isinstance(self.hidden_act, str):
            raise ConfigError(f"config field 'hidden_act' must be an activation name, got {self.hidden_act!r}")
        if self.hidden_act in UNSUPPORTED:
            raise ConfigError(
                f"config field 'hidden_act' is {self.hidden_act!r}, which {UNSUPPORTED[self.hidden_act]}; "
                "mbengine supports only stateless activations"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"config field 'hidden_act' is {self.hidden_act!r}; supported: {sorted(ACTIVATIONS)}"
            )
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps > 0 and math.isfinite(eps)):
            raise ConfigError(f"config field 'layer_norm_eps' must be a positive finite number, got {eps!r}")
        if self.pad_token_id is not None and not (0 <= self.pad_token_id < self.vocab_size):
            raise ConfigError(
                f"config field 'pad_token_id' is {self.pad_token_id}, outside the vocabulary [0, {self.vocab_size})"
            )
        if self.true_hidden_size % self.num_attention_heads:
            width = "intra_bottleneck_size" if self.use_bottleneck else "hidden_size"
            raise ConfigError(
                f"config field 'num_attention_heads' ({self.num_attention_heads}) does not divide the attention "
                f"width {width} = {self.true_hidden_size}"
            )
        raw = self.extra.get("id2label")
        if raw is not None:
            try:
                keys = sorted(int(k) for k in raw)
            except (TypeError, ValueError, AttributeError):
                raise ConfigError(f"config field 'id2label' must map label indices to names, got {raw!r}") from None
            if keys != list(range(len(keys))):
                raise ConfigError(f"config field 'id2label' must have the keys 0..{len(keys) - 1}, got {keys}")
        problem = self.extra.get("problem_type")
        if problem not in (None, "regression", "single_label_classification", "multi_label_classification"):
            raise ConfigError(
                f"config field 'problem_type' is {problem!r}; expected regression, single_label_classification "
                "or multi_label_classification")
        if (
            self.use_bottleneck
            and not self.use_bottleneck_attention
            and not self.key_query_shared_bottleneck
            and self.intra_bottleneck_size != self.hidden_size
        ):
            raise ConfigError(
                "config field 'key_query_shared_bottleneck' is false while use_bottleneck is true and "
                "use_bottleneck_attention is false: queries and keys then read the hidden state "
                f"(width hidden_size = {self.hidden_size}) but their projections expect "
                f"intra_bottleneck_size = {self.intra_bottleneck_size} inputs (Hugging Face fails the same way); "
                "set key_query_shared_bottleneck or use_bottleneck_attention to true, or make the sizes equal"
            )

    # ------------------------------------------------------------------- json
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MobileBertConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(data).__name__}")
        model_type = data.get("model_type", "mobilebert")
        if model_type != "mobilebert":
            raise ConfigError(f"config field 'model_type' is {model_type!r}, expected 'mobilebert'")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k not in _DERIVED}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        out["true_hidden_size"] = self.true_hidden_size
        out["model_type"] = "mobilebert"
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "MobileBertConfig":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "MobileBertConfig":
        """Read ``config.json`` from a checkpoint directory (or the file itself)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.exists(path):
            raise ConfigError(f"no config.json at {path}")
        return cls.from_json_file(path)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    def replace(self, **changes) -> "MobileBertConfig":
        return dataclasses.replace(self, **changes)
