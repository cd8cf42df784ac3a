"""MobileBertModel: load a checkpoint, check inputs, run the graph, return HF-named outputs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import safetensors_mmap
from .config import MobileBertConfig
from .converters import canonical
from .errors import CheckpointError, InputError
from .graph import build_graph
from .runner import Runner


@dataclass
class BaseModelOutputWithPooling:
    """Hugging Face's field names; numpy float32 arrays."""

    last_hidden_state: np.ndarray  # (batch, seq, hidden)
    pooler_output: np.ndarray  # (batch, hidden)
    hidden_states: tuple | None = None  # num_layers + 1 arrays (batch, seq, hidden)
    attentions: tuple | None = None  # num_layers arrays (batch, heads, seq, seq)


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Memory-map the checkpoint's tensors (``model.safetensors`` in a directory)."""
    path = os.fspath(path)
    file = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
    if not os.path.exists(file):
        present = sorted(os.listdir(path)) if os.path.isdir(path) else []
        raise CheckpointError(
            f"no model.safetensors in {path} (found: {present}); other formats need a converter")
    tensors, _ = safetensors_mmap.load(file)
    return tensors


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
        if arr.dtype.kind == "f" and not np.isin(arr, (0.0, 1.0)).all():
            bad = arr[~np.isin(arr, (0.0, 1.0))].flat[0]
            raise InputError(f"attention_mask holds {bad}; expected only 0 (padding) and 1 (token)")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be an integer array, got dtype {arr.dtype}")
    return arr


def _check_range(name: str, arr: np.ndarray, high: int, what: str) -> None:
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= high:
        bad = lo if lo < 0 else hi
        where = tuple(int(i) for i in np.argwhere((arr < 0) | (arr >= high))[0])
        raise InputError(f"{name} holds {bad} at index {where}, outside [0, {high}) ({what})")


class MobileBertModel:
    """The bare MobileBERT encoder (embeddings, layers, pooler).

    ``trigram_padding``: ``"mask"`` (default) zeroes trigram neighbours that the
    attention mask hides, so a right-padded sequence gives the same values as
    the sequence run alone; ``"hf"`` reproduces Hugging Face exactly, where the
    last real token of a padded row sees the [PAD] embedding.
    """

    def __init__(self, config: MobileBertConfig, weights: dict[str, np.ndarray], *, threads: int | None = None,
                 trigram_padding: str = "mask", fuse: bool = True, source: str = "checkpoint"):
        if trigram_padding not in ("mask", "hf"):
            raise ValueError(f"trigram_padding must be 'mask' or 'hf', got {trigram_padding!r}")
        weights = canonical.base_model_tensors(weights)
        canonical.validate(weights, config, source)
        self.config = config
        self.weights = weights
        self.threads = _check_threads(threads)
        self.trigram_padding = trigram_padding
        self.fuse = fuse
        self._runners: dict[bool, Runner] = {}
        self._merged: dict = {}  # fused weights, shared by the graphs of this model

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> "MobileBertModel":
        """Load an HF directory (config.json + model.safetensors), memory-mapped."""
        config = MobileBertConfig.from_pretrained(path)
        return cls(config, load_weights(path), source=os.fspath(path), **kwargs)

    def runner(self, keep_hidden_states: bool = False) -> Runner:
        r = self._runners.get(keep_hidden_states)
        if r is None:
            graph = build_graph(self.config, self.weights, keep_hidden_states=keep_hidden_states, fuse=self.fuse,
                                cache=self._merged)
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
            if not np.isin(mask, (0, 1)).all():
                bad = mask[~np.isin(mask, (0, 1))][0]
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
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 output_hidden_states: bool = False, output_attentions: bool = False,
                 profile: dict | None = None) -> BaseModelOutputWithPooling:
        ids, mask, types, positions = self.check_inputs(input_ids, attention_mask, token_type_ids, position_ids)
        batch, seq = ids.shape
        runner = self.runner(bool(output_hidden_states))
        graph = runner.graph

        def collect(arena):
            def tokens(ref):
                return arena.view(ref).reshape(batch, seq, ref.width).copy()
            out = BaseModelOutputWithPooling(
                tokens(graph.outputs["last_hidden_state"]), arena.view(graph.outputs["pooler_output"]).copy())
            if output_hidden_states:
                out.hidden_states = tuple(tokens(r) for r in graph.hidden_states)
            if output_attentions:
                out.attentions = tuple(arena.probs[i].copy() for i in range(graph.num_layers))
            return out

        with _threads(self.threads):
            return runner.run(ids, mask, types, positions, want_probs=bool(output_attentions),
                              trigram_mask_aware=self.trigram_padding == "mask", profile=profile, collect=collect)


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
