"""MobileBertModel: load a checkpoint, check inputs, run the graph, return HF-named outputs."""

from __future__ import annotations

import os
import warnings

import numpy as np

from . import hub, outputs, safetensors_mmap
from .config import MobileBertConfig
from .converters import bert, canonical, engine
from .errors import CheckpointError, ConfigError, InputError, PerformanceWarning
from .graph import build_graph
from .inputs import check_inputs
from .pack import pack
from .runner import Runner, arena_bytes, available_memory
from .weights import PackedWeights


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
    for name in (
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "tf_model.h5",
    ):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    indexes = sorted(n for n in os.listdir(path) if n.endswith(".index") and ".ckpt" in n)
    if indexes:  # a TF1 checkpoint: model.ckpt.index + model.ckpt.data-*
        return os.path.join(path, indexes[-1])
    raise CheckpointError(
        f"no model.safetensors, pytorch_model.bin, tf_model.h5 or TF checkpoint in {path} "
        f"(found: {sorted(os.listdir(path))})"
    )


def checkpoint_file(path: str | os.PathLike) -> str:
    """The weights file of a checkpoint directory (or ``path`` itself when it is one)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _find_checkpoint(path)
    if os.path.isfile(path) or os.path.isfile(path + ".index"):
        return path
    raise CheckpointError(f"no checkpoint at {path}")


def written_by_tensorflow(file: str) -> bool:
    """Whether a weights file was saved by Hugging Face's TensorFlow classes (tf_model.h5, or safetensors
    with their "tf" format tag)."""
    if file.endswith(".h5"):
        return True
    if file.endswith(".safetensors"):
        header, _ = safetensors_mmap.read_header(file)
        metadata = header.get("__metadata__")
        return isinstance(metadata, dict) and metadata.get("format") == "tf"
    return False


def tensor_names(path: str | os.PathLike) -> list[str]:
    """The tensor names of a checkpoint: from the header alone for safetensors, else by reading it."""
    file = checkpoint_file(path)
    if file.endswith(".safetensors") and not written_by_tensorflow(file):
        header, _ = safetensors_mmap.read_header(file)
        return [n for n in header if n != "__metadata__"]
    return list(load_weights(file))


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint directory (or file) as float32 NumPy arrays, HF PyTorch names.

    ``model.safetensors`` is memory-mapped (zero copy). Read into memory, with no
    framework: sharded safetensors (``model.safetensors.index.json``);
    ``pytorch_model.bin`` (zip or legacy, through a restricted unpickler that runs
    no code) and its sharded form; HF's TensorFlow ``tf_model.h5`` (h5py); a TF1
    checkpoint such as Google's original release (``*.ckpt.index`` + data).
    """
    file = checkpoint_file(path)
    if file.endswith(".safetensors"):
        tensors, metadata = safetensors_mmap.load(file)
        if metadata.get("format") != "tf":
            return tensors
    # (the other formats' readers are imported only here: a process serving safetensors or an engine
    # checkpoint, the common case on a small device, does not load zipfile, bz2, lzma or h5py's wrappers)
    from .converters import tf_bundle, tf_h5, torch_bin

    if file.endswith(".safetensors"):  # saved by HF's TF classes (safe_serialization): TF names
        return tf_h5.from_tf_names(tensors)
    if file.endswith(".index.json"):
        tensors = torch_bin.read_sharded(file)
    elif file.endswith(".h5"):
        tensors = tf_h5.read_tf_h5(file)
    elif file.endswith(".index") or os.path.isfile(file + ".index"):
        tensors = tf_bundle.read_tf_checkpoint(file)
    else:
        tensors = torch_bin.read_torch_bin(file)
    return {
        k: (v.astype(np.float32) if v.dtype.kind == "f" and v.dtype != np.float32 else v) for k, v in tensors.items()
    }


class MobileBertPreTrainedModel:
    """Shared machinery of every model class: load, validate inputs, run the graph.

    A model holds its :class:`~mbengine.weights.PackedWeights` (``weights``)
    and the runners of the graphs built from them. A subclass names its task
    head (``HEAD``, see ``converters.canonical``) and turns the graph's named
    outputs into its output dataclass (``_output``).

    ``trigram_padding``: ``"mask"`` (default) zeroes trigram neighbours that the
    attention mask hides, so a right-padded sequence gives the same values as
    the sequence run alone; ``"hf"`` reproduces Hugging Face exactly, where the
    last real token of a padded row sees the [PAD] embedding.

    ``padding``: ``"skip"`` (default) runs a right-padded batch on its real
    tokens only (every op but attention is per token; attention runs each
    sequence over its own length), so padding costs nothing, and returns zeros
    at the padding positions (as PyTorch's nested-tensor fast path does);
    ``"compute"`` computes every position, padding included, and returns
    Hugging Face's values there too. Real positions are the same either way, to
    rounding. A batch that is not right-padded (a zero before a one in a row of
    the mask), and a call that asks for ``output_attentions`` (the
    probabilities have a row for every position), run padded whatever the
    option. ``fuse_ffn``: run
    each feed-forward pair as one kernel (:func:`mbengine.graph.fuse_feed_forward`;
    off by default, by measurement).
    """

    HEAD: str | None = None

    def __init__(
        self,
        weights: PackedWeights,
        *,
        threads: int | None = None,
        trigram_padding: str = "mask",
        padding: str = "skip",
        fuse_ffn: bool = False,
        source: str = "weights",
    ):
        if trigram_padding not in ("mask", "hf"):
            raise ValueError(f"trigram_padding must be 'mask' or 'hf', got {trigram_padding!r}")
        if padding not in PADDING:
            raise ValueError(f"padding must be 'skip' or 'compute', got {padding!r}")
        if weights.head != self.HEAD:
            if self.HEAD is not None:
                raise CheckpointError(
                    f"{source} holds a {weights.head or 'base'} model, not {type(self).__name__}'s head {self.HEAD!r}"
                )
            weights = weights.select(None, weights.pooler)  # the base model of any head
        self._check_config(weights.config)
        self.weights = weights
        self.config = weights.config
        self.pooler = weights.pooler
        self.threads = _check_threads(threads)
        self.trigram_padding = trigram_padding
        self.fuse_ffn = fuse_ffn
        self.padding = padding
        self.source = source
        self._runners: dict[bool, Runner] = {}
        if self.dtype == "int8":
            _warn_if_no_int8_dot()
        self.runner()  # the graph, built now: every tensor is checked against the config at load time

    @property
    def dtype(self) -> str:
        return self.weights.dtype

    @property
    def quantization(self) -> dict | None:
        """What the quantizer decided (an int8 model), else None."""
        return self.weights.quantization

    @staticmethod
    def _check_config(config: MobileBertConfig) -> None:
        pass

    @classmethod
    def from_tensors(
        cls,
        config: MobileBertConfig,
        tensors: dict[str, np.ndarray],
        *,
        add_pooling_layer: bool | None = None,
        fuse: bool = True,
        source: str = "tensors",
        own_decoder: bool = False,
        **kwargs,
    ):
        """A model from checkpoint tensors under Hugging Face names (``mobilebert.`` prefix or not),
        checked against ``config`` and packed.

        ``add_pooling_layer``: None (default) gives the base model a pooler when
        the checkpoint has one (or the config's pooler has no weights); a task
        head uses the pooler if Hugging Face's class does. ``fuse=False`` keeps
        one linear per Hugging Face linear. ``own_decoder``: the masked-LM head
        computes with the checkpoint's decoder weight, not the word embeddings
        (Hugging Face's TensorFlow classes; see ``canonical.model_tensors``).
        """
        pooler = canonical.HEAD_USES_POOLER[cls.HEAD] if add_pooling_layer is None else add_pooling_layer
        if add_pooling_layer is None and cls.HEAD is None and config.classifier_activation:
            pooler = canonical.has_pooler(tensors)  # (a task checkpoint without one, read as the base model)
        cls._check_config(config)
        given = set(tensors)
        tensors = canonical.model_tensors(tensors, config, cls.HEAD, pooler, own_decoder=own_decoder)
        try:
            canonical.validate(tensors, config, source, head=cls.HEAD, pooler=pooler)
        except CheckpointError as e:
            needed = set(canonical.head_shapes(config, cls.HEAD)) - set(canonical.TIED)
            if needed and not needed & set(tensors):  # the task head is missing entirely
                held, _ = canonical.infer_head(given)
                advice = f"; load it with {HEAD_CLASS_NAMES[held]}" if held else ""
                raise CheckpointError(
                    f"{source} has {canonical.heads_present(given)}; {cls.__name__} "
                    f"needs the {cls.HEAD.replace('_', ' ')} head ({', '.join(sorted(needed))})"
                    f"{advice}"
                ) from None
            if any("'pooler." in p and p.startswith("missing") for p in e.problems):
                raise CheckpointError(
                    f"{source} does not match its config",
                    e.problems,
                    f"this checkpoint has no pooler, which {cls.__name__} needs (a checkpoint of another head?)",
                ) from None
            raise
        return cls(pack(config, tensors, head=cls.HEAD, pooler=pooler, fuse=fuse), source=source, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        add_pooling_layer: bool | None = None,
        fuse: bool = True,
        revision: str | None = None,
        **kwargs,
    ):
        """Load a checkpoint directory.

        Either an engine checkpoint (``mbengine convert``; weights already
        packed and memory-mapped, nothing is copied) or a checkpoint that
        :func:`load_weights` reads (weights checked and packed now).
        ``path`` may also be a Hugging Face Hub model id (``"google/mobilebert-uncased"``,
        at ``revision``): see :mod:`mbengine.hub`.
        """
        path = hub.resolve(path, revision)  # a Hub model id: its snapshot in the Hugging Face cache
        source = os.fspath(path)
        raw = _read_config(source)
        if raw.get("model_type") == "bert":  # a BERT checkpoint: the same graph without bottlenecks
            config = bert.config_from_bert(raw)
            return cls.from_tensors(
                config,
                bert.tensors_from_bert(load_weights(path), config),
                source=source,
                add_pooling_layer=add_pooling_layer,
                fuse=fuse,
                **kwargs,
            )
        config = MobileBertConfig.from_pretrained(path)
        if not engine.is_engine_checkpoint(config):
            file = checkpoint_file(source)
            # Hugging Face's TensorFlow classes compute the masked-LM logits with their own decoder weight
            return cls.from_tensors(
                config,
                load_weights(file),
                source=source,
                add_pooling_layer=add_pooling_layer,
                fuse=fuse,
                own_decoder=written_by_tensorflow(file),
                **kwargs,
            )
        if not fuse:
            raise ValueError("an engine checkpoint holds fused weights: fuse=False is not possible")
        weights = engine.read(path, config)
        if add_pooling_layer is not None:
            weights = weights.select(weights.head, add_pooling_layer)
        return cls(weights, source=source, **kwargs)  # (which refuses another head, and takes a base model of any)

    def with_weights(self, weights: PackedWeights):
        """A model of this class and these options on other ``weights`` (e.g. :func:`mbengine.quantize.quantize`'s)."""
        return type(self)(
            weights,
            threads=self.threads,
            trigram_padding=self.trigram_padding,
            padding=self.padding,
            fuse_ffn=self.fuse_ffn,
            source=self.source,
        )

    def runner(self, keep_hidden_states: bool = False) -> Runner:
        r = self._runners.get(keep_hidden_states)
        if r is None:
            graph = build_graph(
                self.weights, keep_hidden_states=keep_hidden_states, fuse_ffn=self.fuse_ffn, source=self.source
            )
            w = self.weights
            recipe = repr((type(self).__name__, w.config, w.head, w.pooler, w.fused, w.quantization))
            recipe += repr((keep_hidden_states, self.fuse_ffn, self.source))
            r = self._runners[keep_hidden_states] = Runner(graph, recipe=recipe)
        return r

    # ------------------------------------------------------------------ inputs
    def check_inputs(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        """Validate and complete the inputs (:func:`mbengine.inputs.check_inputs`)."""
        return check_inputs(self.config, input_ids, attention_mask, token_type_ids, position_ids)

    # -------------------------------------------------------------------- call
    def _run(
        self, input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states, output_attentions, profile
    ):
        """Run the graph; return ({output name: array}, hidden_states, attentions)."""
        ids, mask, types, positions = self.check_inputs(input_ids, attention_mask, token_type_ids, position_ids)
        batch, seq = ids.shape
        runner = self.runner(bool(output_hidden_states))
        graph = runner.graph
        self._check_memory(graph, batch, seq, output_attentions, output_hidden_states)

        def collect(arena):
            real = mask.astype(bool) if arena.ragged else None

            def array(ref):
                a = arena.view(ref)
                if graph.buffers[ref.buf].rows != "tokens":
                    return a.copy()
                if real is None:
                    return a.reshape(batch, seq, ref.width).copy()
                full = np.zeros((batch, seq, ref.width), np.float32)  # padding positions: zeros
                full[real] = a
                return full

            named = {name: array(ref) for name, ref in graph.outputs.items()}
            hidden = tuple(array(r) for r in graph.hidden_states) if output_hidden_states else None
            att = tuple(arena.probs[i].copy() for i in range(graph.num_layers)) if output_attentions else None
            return named, hidden, att

        with _threads(self.threads):
            return runner.run(
                ids,
                mask,
                types,
                positions,
                want_probs=bool(output_attentions),
                trigram_mask_aware=self.trigram_padding == "mask",
                profile=profile,
                collect=collect,
                ragged=self.padding == "skip",
            )

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
                f"outputs, more than the {free / 2**20:,.0f} MiB of memory available; split the batch"
            )

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        profile: dict | None = None,
    ):
        named, hidden, att = self._run(
            input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states, output_attentions, profile
        )
        return self._output(named, hidden, att)

    def _output(self, named, hidden, att):
        raise NotImplementedError


class MobileBertModel(MobileBertPreTrainedModel):
    """The bare MobileBERT encoder: embeddings, layers and (optionally) the pooler."""

    def _output(self, named, hidden, att):
        return outputs.BaseModelOutputWithPooling(named["last_hidden_state"], named.get("pooler_output"), hidden, att)


class MobileBertForPreTraining(MobileBertPreTrainedModel):
    """Masked-LM and next-sentence heads: ``prediction_logits``, ``seq_relationship_logits``."""

    HEAD = "pretraining"

    @staticmethod
    def _check_config(config):
        _check_lm_head(config)

    def _output(self, named, hidden, att):
        return outputs.MobileBertForPreTrainingOutput(
            named["prediction_logits"], named["seq_relationship_logits"], hidden, att
        )


class MobileBertForMaskedLM(MobileBertPreTrainedModel):
    """Vocabulary logits for every token.

    The decoder is the word-embedding table when the config ties them (as Hugging Face's PyTorch class
    does), the checkpoint's own decoder weight otherwise and for TensorFlow-written checkpoints.
    """

    HEAD = "masked_lm"

    @staticmethod
    def _check_config(config):
        _check_lm_head(config)

    def _output(self, named, hidden, att):
        return outputs.MaskedLMOutput(named["logits"], hidden, att)


class MobileBertForNextSentencePrediction(MobileBertPreTrainedModel):
    HEAD = "next_sentence"

    def _output(self, named, hidden, att):
        return outputs.NextSentencePredictorOutput(named["logits"], hidden, att)


class MobileBertForSequenceClassification(MobileBertPreTrainedModel):
    """Logits over ``config.num_labels`` from the pooled output (``config.problem_type`` tells how to read them)."""

    HEAD = "sequence_classification"

    def _output(self, named, hidden, att):
        return outputs.SequenceClassifierOutput(named["logits"], hidden, att)


class MobileBertForTokenClassification(MobileBertPreTrainedModel):
    HEAD = "token_classification"

    def _output(self, named, hidden, att):
        return outputs.TokenClassifierOutput(named["logits"], hidden, att)


class MobileBertForQuestionAnswering(MobileBertPreTrainedModel):
    """Answer-span ``start_logits`` and ``end_logits`` per token."""

    HEAD = "question_answering"

    @staticmethod
    def _check_config(config):
        if config.num_labels != 2:
            raise ConfigError(
                f"MobileBertForQuestionAnswering needs num_labels = 2 (start and end logits), "
                f"the config has {config.num_labels}"
            )

    def _output(self, named, hidden, att):
        return outputs.QuestionAnsweringModelOutput(
            named["start_logits"][..., 0], named["end_logits"][..., 0], hidden, att
        )


class MobileBertForMultipleChoice(MobileBertPreTrainedModel):
    """Inputs of shape (batch, num_choices, seq); ``logits`` (batch, num_choices)."""

    HEAD = "multiple_choice"

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        profile: dict | None = None,
    ):
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

        named, hidden, att = self._run(
            ids.reshape(batch * choices, seq),
            flat("attention_mask", attention_mask),
            flat("token_type_ids", token_type_ids),
            flat("position_ids", position_ids),
            output_hidden_states,
            output_attentions,
            profile,
        )
        return outputs.MultipleChoiceModelOutput(named["logits"].reshape(batch, choices), hidden, att)


PADDING = ("skip", "compute")
HEAD_CLASS_NAMES = {
    None: "MobileBertModel",
    "pretraining": "MobileBertForPreTraining",
    "masked_lm": "MobileBertForMaskedLM",
    "next_sentence": "MobileBertForNextSentencePrediction",
    "sequence_classification": "MobileBertForSequenceClassification",
    "multiple_choice": "MobileBertForMultipleChoice",
    "token_classification": "MobileBertForTokenClassification",
    "question_answering": "MobileBertForQuestionAnswering",
}


def _check_lm_head(config):
    if config.hidden_size < config.embedding_size:
        raise ConfigError(
            f"the masked-LM head needs hidden_size >= embedding_size (its extra dense weight has "
            f"hidden_size - embedding_size = {config.hidden_size - config.embedding_size} rows); "
            f"got hidden_size {config.hidden_size}, embedding_size {config.embedding_size}"
        )


def _check_threads(threads):
    if threads is None:
        return None
    from . import backend

    limit = backend.get().max_threads
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit:
        raise ValueError(f"threads must be an integer in [1, {limit}] (NUMBA_NUM_THREADS), got {threads!r}")
    return threads


class _threads:
    """Set the kernels' thread count for the calling thread (Numba's, or the native library's pool), restore it
    afterwards."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        if self.n is not None:
            from . import backend

            self.kernels = backend.get()
            self.old = self.kernels.get_num_threads()
            self.kernels.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.n is not None:
            self.kernels.set_num_threads(self.old)


def _warn_if_no_int8_dot() -> None:
    """int8 on the portable kernel is slower than float32: say so (once per process)."""
    from . import backend

    layout = backend.layout()
    forced = os.environ.get("MBENGINE_INT8_KERNEL", "").strip()
    if layout.variant == "generic" and not forced:  # (not when MBENGINE_INT8_KERNEL chose it)
        warnings.warn(
            f"no int8 micro-kernel for this CPU ({layout.target}; mbengine has them for x86 with "
            "SSSE3 or later and for aarch64): the int8 model runs on the portable kernel, several times "
            "slower than float32 here; it still uses less memory",
            PerformanceWarning,
            stacklevel=3,
        )
