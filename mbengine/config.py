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

# Upper bounds of the size fields: far above any MobileBERT or BERT (the largest use
# hidden 1024, 24 layers, vocab 250k), low enough that a config is refused before a
# loop over 10^9 layers or an allocation of 10^12 floats begins.
MAX_SIZE = {
    "vocab_size": 2**22,
    "hidden_size": 2**16,
    "num_hidden_layers": 2**10,
    "num_attention_heads": 2**10,
    "intermediate_size": 2**18,
    "max_position_embeddings": 2**20,
    "type_vocab_size": 2**16,
    "embedding_size": 2**16,
    "intra_bottleneck_size": 2**16,
    "num_feedforward_networks": 2**6,
}
MAX_LABELS = 2**20
MAX_CONFIG_BYTES = 16 * 2**20
MAX_VALUES = 2**34  # float32 values of all tensors together (64 GiB)

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
        return {i: f"LABEL_{i}" for i in range(self.num_labels)}

    @property
    def label2id(self) -> dict[str, int]:
        raw = self.extra.get("label2id")
        if raw:
            return {str(k): int(v) for k, v in raw.items()}
        return {v: k for k, v in self.id2label.items()}

    @property
    def num_labels(self) -> int:
        raw = self.extra.get("id2label")
        n = self.extra.get("num_labels")
        return len(raw) if raw else 2 if n is None else n

    @property
    def problem_type(self) -> str | None:
        return self.extra.get("problem_type")

    # ------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ConfigError naming the field if the config is impossible to run.

        Types and bounds are checked first (:data:`MAX_SIZE`), in time independent of
        the values, so an absurd config is refused before anything is built from it.
        """
        from mbengine.kernels.names import ACTIVATIONS, UNSUPPORTED

        for name, limit in MAX_SIZE.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"config field {name!r} must be a positive integer, got {_short(value)}")
            if value > limit:
                raise ConfigError(
                    f"config field {name!r} is {value}, more than mbengine accepts ({limit}); "
                    "is the config.json damaged?"
                )
        flags = (
            "trigram_input",
            "use_bottleneck",
            "use_bottleneck_attention",
            "key_query_shared_bottleneck",
            "classifier_activation",
            "tie_word_embeddings",
        )
        for name in flags:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config field {name!r} must be true or false, got {_short(getattr(self, name))}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "classifier_dropout"):
            value = getattr(self, name)
            if value is None and name == "classifier_dropout":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"config field {name!r} must be a finite number, got {_short(value)}")
        for name in ("normalization_type", "hidden_act"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"config field {name!r} must be a string, got {_short(getattr(self, name))}")
        pad = self.pad_token_id
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int)):
            raise ConfigError(f"config field 'pad_token_id' must be an integer or null, got {_short(pad)}")
        self._validate_labels()
        values = self.parameter_count()
        if values > MAX_VALUES:
            raise ConfigError(
                f"this config describes a model of {values:.3g} values, more than mbengine accepts "
                f"({MAX_VALUES:.3g}); is the config.json damaged?"
            )
        if self.normalization_type not in NORMALIZATION_TYPES:
            raise ConfigError(
                f"config field 'normalization_type' must be one of {list(NORMALIZATION_TYPES)}, "
                f"got {_short(self.normalization_type)}"
            )
        if self.hidden_act in UNSUPPORTED:
            raise ConfigError(
                f"config field 'hidden_act' is {self.hidden_act!r}, which {UNSUPPORTED[self.hidden_act]}; "
                "mbengine supports only stateless activations"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"config field 'hidden_act' is {_short(self.hidden_act)}; supported: {sorted(ACTIVATIONS)}"
            )
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps > 0 and math.isfinite(eps)):
            raise ConfigError(f"config field 'layer_norm_eps' must be a positive finite number, got {_short(eps)}")
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
        problem = self.extra.get("problem_type")
        if problem not in (None, "regression", "single_label_classification", "multi_label_classification"):
            raise ConfigError(
                f"config field 'problem_type' is {_short(problem)}; expected regression, single_label_classification "
                "or multi_label_classification"
            )
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

    def _validate_labels(self) -> None:
        raw = self.extra.get("id2label")
        if raw is not None:
            if not isinstance(raw, dict) or len(raw) > MAX_LABELS:
                raise ConfigError(
                    f"config field 'id2label' must map at most {MAX_LABELS} label indices to names, got {_short(raw)}"
                )
            try:
                keys = sorted(int(k) for k in raw)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(
                    f"config field 'id2label' must map label indices to names, got {_short(raw)}"
                ) from None
            if keys != list(range(len(keys))):
                raise ConfigError(f"config field 'id2label' must have the keys 0..{len(keys) - 1}, got {_short(keys)}")
        n = self.extra.get("num_labels")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LABELS):
            raise ConfigError(f"config field 'num_labels' must be an integer in [1, {MAX_LABELS}], got {_short(n)}")

    def parameter_count(self) -> int:
        """Values in the tensors of this config's base model with every head's largest part, estimated
        from the fields alone (no loop over layers): what a checkpoint of it holds, at most."""
        H, E, I = self.hidden_size, self.embedding_size, self.intermediate_size
        T = self.intra_bottleneck_size if self.use_bottleneck else H
        per_ffn = 2 * I * T + 4 * T
        per_layer = 4 * T * max(T, H) + 2 * H * T + self.num_feedforward_networks * per_ffn + 16 * max(T, H)
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * max(E, H)
        heads = 2 * self.vocab_size * H + H * H + self.num_labels * H
        return embeddings + 3 * E * H + self.num_hidden_layers * per_layer + heads

    # ------------------------------------------------------------------- json
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MobileBertConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(data).__name__}")
        model_type = data.get("model_type", "mobilebert")
        if model_type != "mobilebert":
            raise ConfigError(f"config field 'model_type' is {_short(model_type)}, expected 'mobilebert'")
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
            with open(path, "rb") as f:
                raw = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config ({e.strerror})") from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: more than {MAX_CONFIG_BYTES // 2**20} MiB: not a config.json")
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{path}: not UTF-8 text ({e.reason} at byte {e.start + 1}); a config.json is UTF-8 JSON"
            ) from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a config (JSON nested too deeply)") from None
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


def _short(value) -> str:
    """``repr(value)``, cut to a readable length (a damaged config can hold anything)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"... ({type(value).__name__}, {len(text)} characters)"
