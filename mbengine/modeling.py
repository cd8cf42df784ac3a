"""MobileBertModel: load a checkpoint, check inputs, run the graph, return HF-named outputs."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields

import numpy as np

from . import safetensors_mmap
from .config import MobileBertConfig
from .converters import canonical
from .errors import CheckpointError, ConfigError, InputError, PerformanceWarning
from .graph import build_graph, linear_ops
from .runner import Runner, arena_bytes, available_memory


@dataclass
class ModelOutput:
    """Base of the output dataclasses: HF field names, numpy float32 arrays."""

    def __getitem__(self, key):
        return getattr(self, key)

    def keys(self):
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: np.ndarray  # (batch, seq, hidden)
    pooler_output: np.ndarray | None = None  # (batch, hidden); None without a pooler
    hidden_states: tuple | None = None  # num_layers + 1 arrays (batch, seq, hidden)
    attentions: tuple | None = None  # num_layers arrays (batch, heads, seq, seq)


@dataclass
class MobileBertForPreTrainingOutput(ModelOutput):
    prediction_logits: np.ndarray  # (batch, seq, vocab)
    seq_relationship_logits: np.ndarray  # (batch, 2)
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class MaskedLMOutput(ModelOutput):
    logits: np.ndarray  # (batch, seq, vocab)
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class NextSentencePredictorOutput(ModelOutput):
    logits: np.ndarray  # (batch, 2): index 0 "B follows A", 1 "B is random"
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    logits: np.ndarray  # (batch, num_labels)
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class MultipleChoiceModelOutput(ModelOutput):
    logits: np.ndarray  # (batch, num_choices)
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    logits: np.ndarray  # (batch, seq, num_labels)
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    start_logits: np.ndarray  # (batch, seq)
    end_logits: np.ndarray  # (batch, seq)
    hidden_states: tuple | None = None
    attentions: tuple | None = None


def _read_config(path: str) -> dict:
    import json

    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(file, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError):
        return {}  # MobileBertConfig.from_pretrained reports the problem precisely
    return raw if isinstance(raw, dict) else {}


def _find_checkpoint(path: str) -> str:
    """The weights file of a checkpoint directory, in order of preference."""
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json", "tf_model.h5"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    indexes = sorted(n for n in os.listdir(path) if n.endswith(".index") and ".ckpt" in n)
    if indexes:  # a TF1 checkpoint: model.ckpt.index + model.ckpt.data-*
        return os.path.join(path, indexes[-1])
    raise CheckpointError(f"no model.safetensors, pytorch_model.bin, tf_model.h5 or TF checkpoint in {path} "
                          f"(found: {sorted(os.listdir(path))})")


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint directory (or file) as float32 NumPy arrays, HF PyTorch names.

    ``model.safetensors`` is memory-mapped (zero copy). Read into memory, with no
    framework: sharded safetensors (``model.safetensors.index.json``);
    ``pytorch_model.bin`` (zip or legacy, through a restricted unpickler that runs
    no code) and its sharded form; HF's TensorFlow ``tf_model.h5`` (h5py); a TF1
    checkpoint such as Google's original release (``*.ckpt.index`` + data).
    """
    from .converters import tf_bundle, tf_h5, torch_bin

    path = os.fspath(path)
    if os.path.isdir(path):
        file = _find_checkpoint(path)
    elif os.path.isfile(path) or os.path.isfile(path + ".index"):
        file = path
    else:
        raise CheckpointError(f"no checkpoint at {path}")
    if file.endswith(".safetensors"):
        return safetensors_mmap.load(file)[0]
    if file.endswith(".index.json"):
        tensors = torch_bin.read_sharded(file)
    elif file.endswith(".h5"):
        tensors = tf_h5.read_tf_h5(file)
    elif file.endswith(".index") or os.path.isfile(file + ".index"):
        tensors = tf_bundle.read_tf_checkpoint(file)
    else:
        tensors = torch_bin.read_torch_bin(file)
    return {k: (v.astype(np.float32) if v.dtype.kind == "f" and v.dtype != np.float32 else v)
            for k, v in tensors.items()}


def _int_array(name: str, value, shape=None) -> np.ndarray:
    """``value`` as an integer array of ``shape`` (or any (batch, seq) shape); InputError otherwise.

    The attention mask may also be boolean or floating point, holding only 0 and 1.
    """
    arr = np.asarray(value)
    if shape is None and arr.ndim != 2:
        raise InputError(f"{name} must have shape (batch, seq), got an array of shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise InputError(f"{name} has shape {arr.shape}, expected {shape} (the shape of input_ids)")
    if name == "attention_mask" and arr.dtype.kind in "bf":
        if arr.dtype.kind == "f" and not _zeros_and_ones(arr):
            bad = arr[(arr != 0.0) & (arr != 1.0)].flat[0]
            raise InputError(f"attention_mask holds {bad}; expected only 0 (padding) and 1 (token)")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be an integer array, got dtype {arr.dtype}")
    return arr


def _zeros_and_ones(arr: np.ndarray) -> bool:
    # (np.isin is ~50x slower on a 128-token mask: it sorts)
    return bool(((arr == 0) | (arr == 1)).all())


def _check_range(name: str, arr: np.ndarray, high: int, what: str) -> None:
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= high:
        bad = lo if lo < 0 else hi
        where = tuple(int(i) for i in np.argwhere((arr < 0) | (arr >= high))[0])
        raise InputError(f"{name} holds {bad} at index {where}, outside [0, {high}) ({what})")


class MobileBertPreTrainedModel:
    """Shared machinery of every model class: load, validate inputs, run the graph.

    A subclass names its task head (``HEAD``, see ``converters.canonical``)
    and turns the graph's named outputs into its output dataclass (``_output``).

    ``trigram_padding``: ``"mask"`` (default) zeroes trigram neighbours that the
    attention mask hides, so a right-padded sequence gives the same values as
    the sequence run alone; ``"hf"`` reproduces Hugging Face exactly, where the
    last real token of a padded row sees the [PAD] embedding.
    """

    HEAD: str | None = None

    def __init__(self, config: MobileBertConfig, weights: dict[str, np.ndarray], *, threads: int | None = None,
                 trigram_padding: str = "mask", fuse: bool = True, source: str = "checkpoint",
                 add_pooling_layer: bool | None = None, packed: dict[str, np.ndarray] | None = None,
                 int8: dict | None = None, scales: dict[str, np.ndarray] | None = None):
        if trigram_padding not in ("mask", "hf"):
            raise ValueError(f"trigram_padding must be 'mask' or 'hf', got {trigram_padding!r}")
        self.pooler = canonical.HEAD_USES_POOLER[self.HEAD] if add_pooling_layer is None else add_pooling_layer
        self._check_config(config)
        given = set(weights)
        weights = canonical.model_tensors(weights, config, self.HEAD, self.pooler)
        int8_tables = set(scales or ())
        if "embeddings.word_embeddings.weight" in int8_tables and config.tie_word_embeddings:
            int8_tables.add("cls.predictions.decoder.weight")  # the tied table (its linear is packed apart)
        try:
            canonical.validate(weights, config, source, head=self.HEAD, pooler=self.pooler,
                               packed=packed is not None, int8=frozenset(int8_tables))
        except CheckpointError as e:
            needed = set(canonical.head_shapes(config, self.HEAD)) - set(canonical.TIED)
            if needed and not needed & set(weights):  # the task head is missing entirely
                raise CheckpointError(f"{source} has {canonical.heads_present(given)}; {type(self).__name__} "
                                      f"needs the {self.HEAD.replace('_', ' ')} head ({', '.join(sorted(needed))})"
                                      ) from None
            if any("'pooler." in p and p.startswith("missing") for p in e.problems):
                held = [cls for prefix, cls in HEAD_CLASSES if any(n.startswith(prefix) for n in given)]
                if self.HEAD is None and held:  # a task checkpoint read as the base model
                    e.problems.append(f"this checkpoint holds {canonical.heads_present(given)} and no pooler: "
                                      f"load it with {held[0]} (or pass add_pooling_layer=False for the base "
                                      "model alone)")
                else:
                    e.problems.append("this checkpoint has no pooler (HF saves none for masked-LM, "
                                      "token-classification and question-answering models): pass "
                                      "add_pooling_layer=False")
                raise CheckpointError(f"{source} does not match its config", e.problems) from None
            raise
        self.config = config
        self.weights = weights
        self.threads = _check_threads(threads)
        self.trigram_padding = trigram_padding
        self.fuse = fuse
        self._runners: dict[bool, Runner] = {}
        # packed weights by ("packed", op name), int8 ones by ("int8", op name), int8 embedding
        # row scales by ("scale", tensor name): shared by this model's graphs
        self._cache: dict = {}
        self.dtype = "int8" if int8 or scales else "float32"
        self.quantization = config.extra.get("mbengine", {}).get("quantization") if self.dtype == "int8" else None
        if self.dtype == "int8":
            _warn_if_no_int8_dot()
        if packed is not None:  # an engine checkpoint: build the graph now to check every packed tensor
            if not fuse:
                raise ValueError("an engine checkpoint holds fused weights: fuse=False is not possible")
            self._cache.update({("packed", name): arr for name, arr in packed.items()})
            self._cache.update({("int8", name): q for name, q in (int8 or {}).items()})
            self._cache.update({("scale", name): s for name, s in (scales or {}).items()})
            used = {op.name for op in linear_ops(self.runner().graph)}
            # a head or pooler this class does not use is ignored, as HF ignores their weights
            stored = set(packed) | set(int8 or ())
            unknown = sorted(n for n in stored - used
                             if not n.startswith(("pooler.", "cls.", "classifier", "qa_outputs")))
            for n in stored - used:
                self._cache.pop(("packed", n), None)
                self._cache.pop(("int8", n), None)
            if unknown:
                raise CheckpointError(f"{source} does not match its config",
                                      [f"unexpected packed tensor '{'int8' if n in (int8 or {}) else 'packed'}/{n}'"
                                       for n in unknown])

    def _check_config(self, config: MobileBertConfig) -> None:
        pass

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs):
        """Load a checkpoint directory, memory-mapped.

        Either an engine checkpoint (``mbengine convert``; weights already
        packed, nothing is copied) or a Hugging Face directory with
        ``model.safetensors`` (weights packed at the first call).
        """
        from .converters import bert, engine

        source = os.fspath(path)
        raw = _read_config(source)
        if raw.get("model_type") == "bert":  # a BERT checkpoint: the same graph without bottlenecks
            config = bert.config_from_bert(raw)
            return cls(config, bert.tensors_from_bert(load_weights(path), config), source=source, **kwargs)
        config = MobileBertConfig.from_pretrained(path)
        tensors = load_weights(path)
        meta = config.extra.get("mbengine")
        if isinstance(meta, dict):
            engine.check_meta(meta, source)
            tensors, packed, int8, scales = engine.split_packed(tensors, source)
            if meta.get("head") != cls.HEAD and cls.HEAD is not None:  # (a base model may come from any)
                raise CheckpointError(f"{source} is an engine checkpoint of a {meta.get('head') or 'base'} model, "
                                      f"not of {cls.__name__}'s head {cls.HEAD!r}")
            kwargs.setdefault("add_pooling_layer", bool(meta.get("pooler", True)))
            return cls(config, tensors, source=source, packed=packed, int8=int8, scales=scales, **kwargs)
        return cls(config, tensors, source=source, **kwargs)

    def runner(self, keep_hidden_states: bool = False) -> Runner:
        r = self._runners.get(keep_hidden_states)
        if r is None:
            graph = build_graph(self.config, self.weights, head=self.HEAD, pooler=self.pooler,
                                keep_hidden_states=keep_hidden_states, fuse=self.fuse, cache=self._cache)
            r = self._runners[keep_hidden_states] = Runner(graph)
        return r

    # ------------------------------------------------------------------ inputs
    def check_inputs(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        """Validate and complete the inputs; InputError names what is wrong."""
        c = self.config
        ids = _int_array("input_ids", input_ids)
        batch, seq = ids.shape
        if batch == 0 or seq == 0:
            raise InputError(f"input_ids is empty (shape {ids.shape}); expected at least one token per sequence")
        _check_range("input_ids", ids, c.vocab_size, f"vocab_size is {c.vocab_size}")
        if attention_mask is None:
            mask = np.ones((batch, seq), np.int64)
        else:
            mask = _int_array("attention_mask", attention_mask, ids.shape)
            if not _zeros_and_ones(mask):
                bad = mask[(mask != 0) & (mask != 1)][0]
                raise InputError(f"attention_mask holds {bad}; expected only 0 (padding) and 1 (token)")
        if token_type_ids is None:
            types = np.zeros((batch, seq), np.int64)
        else:
            types = _int_array("token_type_ids", token_type_ids, ids.shape)
            _check_range("token_type_ids", types, c.type_vocab_size, f"type_vocab_size is {c.type_vocab_size}")
        if position_ids is None:
            if seq > c.max_position_embeddings:
                raise InputError(f"input_ids has {seq} tokens per sequence, more than max_position_embeddings "
                                 f"= {c.max_position_embeddings}; truncate the input")
            positions = np.broadcast_to(np.arange(seq, dtype=np.int64), (batch, seq))
        else:
            positions = _int_array("position_ids", position_ids, ids.shape)
            _check_range("position_ids", positions, c.max_position_embeddings,
                         f"max_position_embeddings is {c.max_position_embeddings}")
        return ids, mask, types, positions

    # -------------------------------------------------------------------- call
    def _run(self, input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states,
             output_attentions, profile):
        """Run the graph; return ({output name: array}, hidden_states, attentions)."""
        ids, mask, types, positions = self.check_inputs(input_ids, attention_mask, token_type_ids, position_ids)
        batch, seq = ids.shape
        runner = self.runner(bool(output_hidden_states))
        graph = runner.graph
        self._check_memory(graph, batch, seq, output_attentions, output_hidden_states)

        def collect(arena):
            def array(ref):
                a = arena.view(ref)
                if graph.buffers[ref.buf].rows == "tokens":
                    a = a.reshape(batch, seq, ref.width)
                return a.copy()
            named = {name: array(ref) for name, ref in graph.outputs.items()}
            hidden = tuple(array(r) for r in graph.hidden_states) if output_hidden_states else None
            att = tuple(arena.probs[i].copy() for i in range(graph.num_layers)) if output_attentions else None
            return named, hidden, att

        with _threads(self.threads):
            return runner.run(ids, mask, types, positions, want_probs=bool(output_attentions),
                              trigram_mask_aware=self.trigram_padding == "mask", profile=profile, collect=collect)

    def _check_memory(self, graph, batch, seq, want_probs, want_hidden):
        """Refuse, before allocating, a call whose buffers and outputs would not fit in memory."""
        need = arena_bytes(graph, batch, seq, bool(want_probs))
        for name, ref in graph.outputs.items():  # the returned copies
            need += 4 * ref.width * (batch * seq if graph.buffers[ref.buf].rows == "tokens" else batch)
        if want_hidden:
            need += 4 * len(graph.hidden_states) * batch * seq * self.config.hidden_size
        if want_probs:
            need += 4 * graph.num_layers * batch * graph.heads * seq * seq
        if need < 256 * 2**20:  # small calls: not worth reading /proc/meminfo on every call
            return
        free = available_memory()
        if free is not None and need > free:
            raise InputError(
                f"a call with batch {batch} x seq {seq} needs about {need / 2**20:,.0f} MiB of activations and "
                f"outputs, more than the {free / 2**20:,.0f} MiB of memory available; split the batch")

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 output_hidden_states: bool = False, output_attentions: bool = False, profile: dict | None = None):
        named, hidden, att = self._run(input_ids, attention_mask, token_type_ids, position_ids,
                                       output_hidden_states, output_attentions, profile)
        return self._output(named, hidden, att)

    def _output(self, named, hidden, att):
        raise NotImplementedError


class MobileBertModel(MobileBertPreTrainedModel):
    """The bare MobileBERT encoder: embeddings, layers and (optionally) the pooler."""

    def _output(self, named, hidden, att):
        return BaseModelOutputWithPooling(named["last_hidden_state"], named.get("pooler_output"), hidden, att)


class MobileBertForPreTraining(MobileBertPreTrainedModel):
    """Masked-LM and next-sentence heads: ``prediction_logits``, ``seq_relationship_logits``."""

    HEAD = "pretraining"

    def _check_config(self, config):
        _check_lm_head(config)

    def _output(self, named, hidden, att):
        return MobileBertForPreTrainingOutput(named["prediction_logits"], named["seq_relationship_logits"],
                                              hidden, att)


class MobileBertForMaskedLM(MobileBertPreTrainedModel):
    """Vocabulary logits for every token; the decoder is tied to the word embeddings."""

    HEAD = "masked_lm"

    def _check_config(self, config):
        _check_lm_head(config)

    def _output(self, named, hidden, att):
        return MaskedLMOutput(named["logits"], hidden, att)


class MobileBertForNextSentencePrediction(MobileBertPreTrainedModel):
    HEAD = "next_sentence"

    def _output(self, named, hidden, att):
        return NextSentencePredictorOutput(named["logits"], hidden, att)


class MobileBertForSequenceClassification(MobileBertPreTrainedModel):
    """Logits over ``config.num_labels`` from the pooled output (``config.problem_type`` tells how to read them)."""

    HEAD = "sequence_classification"

    def _output(self, named, hidden, att):
        return SequenceClassifierOutput(named["logits"], hidden, att)


class MobileBertForTokenClassification(MobileBertPreTrainedModel):
    HEAD = "token_classification"

    def _output(self, named, hidden, att):
        return TokenClassifierOutput(named["logits"], hidden, att)


class MobileBertForQuestionAnswering(MobileBertPreTrainedModel):
    """Answer-span ``start_logits`` and ``end_logits`` per token."""

    HEAD = "question_answering"

    def _check_config(self, config):
        if config.num_labels != 2:
            raise ConfigError(f"MobileBertForQuestionAnswering needs num_labels = 2 (start and end logits), "
                              f"the config has {config.num_labels}")

    def _output(self, named, hidden, att):
        return QuestionAnsweringModelOutput(named["start_logits"][..., 0], named["end_logits"][..., 0], hidden, att)


class MobileBertForMultipleChoice(MobileBertPreTrainedModel):
    """Inputs of shape (batch, num_choices, seq); ``logits`` (batch, num_choices)."""

    HEAD = "multiple_choice"

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 output_hidden_states: bool = False, output_attentions: bool = False, profile: dict | None = None):
        ids = np.asarray(input_ids)
        if ids.ndim != 3:
            raise InputError(f"input_ids must have shape (batch, num_choices, seq), got an array of shape {ids.shape}")
        batch, choices, seq = ids.shape

        def flat(name, value):
            if value is None:
                return None
            arr = np.asarray(value)
            if arr.shape != ids.shape:
                raise InputError(f"{name} has shape {arr.shape}, expected {ids.shape} (the shape of input_ids)")
            return arr.reshape(batch * choices, seq)

        named, hidden, att = self._run(ids.reshape(batch * choices, seq), flat("attention_mask", attention_mask),
                                       flat("token_type_ids", token_type_ids), flat("position_ids", position_ids),
                                       output_hidden_states, output_attentions, profile)
        return MultipleChoiceModelOutput(named["logits"].reshape(batch, choices), hidden, att)


HEAD_CLASSES = (("cls.predictions.", "MobileBertForMaskedLM"), ("qa_outputs.", "MobileBertForQuestionAnswering"),
                ("classifier.", "MobileBertForTokenClassification"))  # the pooler-less heads, by their tensors


def _check_lm_head(config):
    if config.hidden_size < config.embedding_size:
        raise ConfigError(
            f"the masked-LM head needs hidden_size >= embedding_size (its extra dense weight has "
            f"hidden_size - embedding_size = {config.hidden_size - config.embedding_size} rows); "
            f"got hidden_size {config.hidden_size}, embedding_size {config.embedding_size}")


def _check_threads(threads):
    if threads is None:
        return None
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit:
        raise ValueError(f"threads must be an integer in [1, {limit}] (NUMBA_NUM_THREADS), got {threads!r}")
    return threads


class _threads:
    """Set Numba's thread count for the calling thread, restore it afterwards."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        if self.n is not None:
            import numba

            self.old = numba.get_num_threads()
            numba.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.n is not None:
            import numba

            numba.set_num_threads(self.old)


def _warn_if_no_int8_dot() -> None:
    """int8 on the portable kernel is slower than float32: say so (once per process)."""
    from .kernels.qsimd import VARIANT, _detected
    from .kernels.target import TARGET

    if VARIANT == "generic" and _detected() == "generic":  # (not when MBENGINE_INT8_KERNEL forced it)
        warnings.warn(f"no int8 micro-kernel for this CPU ({TARGET.describe()}; mbengine has them for x86 with "
                      "SSSE3 or later and for aarch64): the int8 model runs on the portable kernel, several times "
                      "slower than float32 here; it still uses less memory", PerformanceWarning, stacklevel=3)
