"""The graph: a model's PackedWeights become a list of ops, once.

:func:`wire` appends the ops of a config (embeddings, layers, pooler, head:
one builder each); :func:`build_graph` wires the graph of a
:class:`~mbengine.weights.PackedWeights` and hands every op the arrays it
reads, checking each against the config. Nothing here packs or copies a
weight (:func:`mbengine.pack.pack` walks the same wiring to pack them).

Every config variant (bottleneck on/off, bottleneck attention, shared
key/query bottleneck, the number of stacked FFNs, trigram input, embedding
width, NoNorm/LayerNorm, pooler activation) is decided here, so the runner
has no model-specific branches: it walks the op list and calls kernels.

Activations live in token-major buffers of shape (rows, width), rows being
``batch * seq`` (or ``batch`` for the pooler). An op reads and writes
*column windows* of buffers (:class:`Ref`), which lets sibling projections
write side by side into one buffer and be merged into a single wider linear
(:func:`fuse_sibling_linears`, a rewrite that can be switched off when
packing: its merged linears are what the packed weights hold).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

import numpy as np

from . import backend
from .config import MobileBertConfig
from .converters.canonical import model_shapes
from .errors import CheckpointError
from .kernels import layout as k_layout
from .kernels.names import ACTIVATIONS, Norm
from .weights import WORD_EMBEDDINGS, Int8Linear, PackedLinear, PackedWeights

TORCH_LAYERNORM_EPS = 1e-5  # HF builds two of MobileBERT's LayerNorms without eps


class Ref(NamedTuple):  # (small values, made by the hundred: a NamedTuple is quicker to define and make)
    """Columns [off, off + width) of arena buffer ``buf``."""

    buf: str
    off: int
    width: int

    def follows(self, other: "Ref") -> bool:
        return self.buf == other.buf and self.off == other.off + other.width


class Buffer(NamedTuple):
    name: str
    width: int
    rows: str = "tokens"  # "tokens": batch*seq rows; "batch": one row per sequence


# ------------------------------------------------------------------------ ops
# (ops, graphs and outputs that hold arrays compare by identity, eq=False: == of their arrays has no
# truth value, and each generated method costs a serving process ~0.1 ms to create at import)
@dataclass(eq=False)
class EmbedWords:
    """Word embeddings of the input ids, trigram window optional."""

    name: str
    table: np.ndarray  # (vocab, E), float32, or int8 with a scale per row
    trigram: bool
    out: Ref
    scale: np.ndarray | None = None  # (vocab,) float32 row scales of an int8 table


@dataclass(eq=False)
class EmbedPositions:
    """Position plus token-type embeddings."""

    name: str
    positions: np.ndarray  # (max_positions, H)
    token_types: np.ndarray  # (type_vocab, H)
    out: Ref


@dataclass(eq=False)
class Linear:
    """out = norm(act(x @ W.T + b) + res); ``weight`` is W as the kernel reads it."""

    name: str
    x: Ref
    b: np.ndarray  # (N,)
    out: Ref
    act: int = 0
    res: Ref | None = None
    norm: int = Norm.NONE
    nw: np.ndarray | None = None
    nb: np.ndarray | None = None
    eps: float = 0.0
    weight: PackedLinear | Int8Linear | None = None  # from the PackedWeights, by op name
    dense: np.ndarray | None = None  # (N, K) float W, only in the graph that mbengine.pack packs from


@dataclass(eq=False)
class FeedForward:
    """A feed-forward pair run as one kernel: ``second(act(first(x)))`` with ``x`` as the residual."""

    name: str
    first: Linear  # x -> intermediate, with the activation
    second: Linear  # intermediate -> out, + residual x, norm


@dataclass(eq=False)
class AddNorm:
    """out = norm(a + r)."""

    name: str
    a: Ref
    r: Ref | None
    out: Ref
    norm: int
    nw: np.ndarray
    nb: np.ndarray
    eps: float


@dataclass
class Attention:
    """Fused multi-head self-attention; ``layer`` indexes the probability output. ``int8``: the scores in
    integers for long sequences where the CPU's int8 kernel makes that pay (kernels.qattention,
    kernels.layout.int8_scores), in an int8 model whose quantization did not keep attention in float32."""

    name: str
    q: Ref
    k: Ref
    v: Ref
    out: Ref
    heads: int
    head_dim: int
    layer: int
    int8: bool = False


@dataclass
class FirstToken:
    """out[b] = x[first token of sequence b]."""

    name: str
    x: Ref
    out: Ref


@dataclass(eq=False)
class Graph:
    ops: list
    buffers: dict[str, Buffer]
    outputs: dict[str, Ref]
    hidden_states: list[Ref] = field(default_factory=list)
    num_layers: int = 0
    heads: int = 1
    head_dim: int = 1


# ------------------------------------------------------------------- builder
def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.flags.writeable:
        a = a.copy()
        a.flags.writeable = False
    return a


class _Builder:
    """Appends ops for one config; notes every plain tensor it reads and the shape it expects."""

    def __init__(
        self, config: MobileBertConfig, tensors: Mapping[str, np.ndarray], keep_hidden_states: bool, packing: bool
    ):
        self.c = config
        self.tensors = tensors
        self.keep_hidden_states = keep_hidden_states
        self.packing = packing
        self.ops: list = []
        self.buffers: dict[str, Buffer] = {}
        self.expected: dict[str, tuple[int, ...]] = {}
        self.eps = float(config.layer_norm_eps)
        # HF builds the embeddings' and each layer output's LayerNorm with torch's default eps;
        # BERT checkpoints run here (converters/bert.py) use their own eps there
        self.default_eps = float(config.extra.get("mbengine_default_layer_norm_eps", TORCH_LAYERNORM_EPS))

    def buf(self, name: str, width: int, rows: str = "tokens") -> str:
        old = self.buffers.get(name)
        if old is None or old.width < width:
            self.buffers[name] = Buffer(name, width, rows)
        return name

    def hidden(self, i: int) -> Ref:
        """The hidden state after layer i (0: the embeddings): two buffers take turns, or one per layer
        when every layer's output is returned."""
        name = f"hidden{i}" if self.keep_hidden_states else f"hidden{i % 2}"
        H = self.c.hidden_size
        return Ref(self.buf(name, H), 0, H)

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        self.expected[name] = shape
        return self.tensors.get(name)

    def norm_args(self, prefix: str, width: int, eps: float) -> dict:
        kind = Norm.NONORM if self.c.normalization_type == "no_norm" else Norm.LAYERNORM
        return dict(
            norm=kind,
            nw=self.tensor(prefix + ".weight", (width,)),
            nb=self.tensor(prefix + ".bias", (width,)),
            eps=float(eps),
        )

    def linear(self, name: str, prefix: str, x: Ref, out: Ref, dense: np.ndarray | None = None, **kw) -> Ref:
        """A Linear op on HF tensors ``prefix.weight`` (packed, by op name) and ``prefix.bias``."""
        bias = kw.pop("bias", prefix + ".bias")
        if self.packing and dense is None:
            dense = self.tensors[prefix + ".weight"]
            if dense.shape != (out.width, x.width):
                raise CheckpointError(
                    f"{prefix}.weight has shape {list(dense.shape)}, expected "
                    f"[{out.width}, {x.width}] (outputs x inputs of this linear)"
                )
        self.ops.append(Linear(name, x, self.tensor(bias, (out.width,)), out, dense=dense, **kw))
        return out


@dataclass(eq=False)
class Wiring:
    """What :func:`wire` made: the graph (linears without weights) and the plain tensors it reads."""

    graph: Graph
    expected: dict[str, tuple[int, ...]]  # plain tensor name -> the shape the graph needs

    def problems(self, tensors: Mapping[str, np.ndarray], row_scales: Mapping[str, np.ndarray]) -> list[str]:
        found = []
        for name, shape in self.expected.items():
            arr = tensors.get(name)
            if arr is None:
                found.append(f"missing tensor {name!r} (expected shape {list(shape)})")
            elif tuple(arr.shape) != shape:
                found.append(f"tensor {name!r} has shape {list(arr.shape)}, expected {list(shape)} for this config")
            elif arr.dtype == np.int8 and name not in row_scales:
                found.append(f"tensor {name!r} is int8 but has no row scales")
            elif arr.dtype not in (np.float32, np.int8):
                found.append(f"tensor {name!r} has dtype {arr.dtype}, expected float32")
        return found


def wire(
    config: MobileBertConfig,
    tensors: Mapping[str, np.ndarray],
    *,
    head: str | None = None,
    pooler: bool = True,
    keep_hidden_states: bool = False,
    fuse: bool = True,
    row_scales: Mapping[str, np.ndarray] | None = None,
    packing: bool = False,
) -> Wiring:
    """The ops of ``config`` (with ``head``, see ``converters.canonical.HEADS``, and the pooler).

    Linears get their bias, norm vectors and (with ``packing``, from the
    (N, K) tensors) ``dense`` weight; their packed ``weight`` is bound by
    :func:`build_graph`. A tensor missing from ``tensors`` leaves None in its
    op (``Wiring.problems`` lists it), so the structure alone can be wired.
    ``keep_hidden_states`` gives every layer its own output buffer so the
    runner can return them all; otherwise two hidden buffers alternate.
    ``fuse`` merges sibling linears (:func:`fuse_sibling_linears`).
    """
    g = _Builder(config, tensors, keep_hidden_states, packing)
    x = _embeddings(g, row_scales or {})
    hidden_states = [x]
    for i in range(config.num_hidden_layers):
        x = _layer(g, i, x)
        hidden_states.append(x)
    outputs = {"last_hidden_state": x}
    if pooler:
        outputs["pooler_output"] = _pooler(g, x)
    if head is not None:
        outputs.update(_head(g, head, x, outputs.get("pooler_output")))
    graph = Graph(
        g.ops,
        g.buffers,
        outputs,
        hidden_states,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.attention_head_size,
    )
    if fuse:
        graph = fuse_sibling_linears(graph)
    return Wiring(graph, g.expected)


def _embeddings(g: _Builder, row_scales: Mapping[str, np.ndarray]) -> Ref:
    """Word embeddings (trigram window optional), + positions and token types, norm."""
    c = g.c
    H, E = c.hidden_size, c.embedding_size
    words_w = E * (3 if c.trigram_input else 1)
    words = Ref(g.buf("words", words_w), 0, words_w)
    table = g.tensor(WORD_EMBEDDINGS, (c.vocab_size, E))
    g.ops.append(EmbedWords("embeddings.words", table, c.trigram_input, words, row_scales.get(WORD_EMBEDDINGS)))
    pos = Ref(g.buf("postype", H), 0, H)
    g.ops.append(
        EmbedPositions(
            "embeddings.positions",
            g.tensor("embeddings.position_embeddings.weight", (c.max_position_embeddings, H)),
            g.tensor("embeddings.token_type_embeddings.weight", (c.type_vocab_size, H)),
            pos,
        )
    )
    x = g.hidden(0)
    norm = g.norm_args("embeddings.LayerNorm", H, g.default_eps)
    if c.trigram_input or E != H:  # [T, 3E] -> [T, H], + positions/types, norm
        g.linear("embeddings.transformation", "embeddings.embedding_transformation", words, x, res=pos, **norm)
    else:
        g.ops.append(AddNorm("embeddings.norm", words, pos, x, **norm))
    return x


def _layer(g: _Builder, i: int, x: Ref) -> Ref:
    """Encoder layer ``i`` on hidden state ``x``; returns its output.

    Buffers: "proj" holds, side by side, everything that reads the layer input
    x (the input bottleneck, the key/query bottleneck, and the value projection
    when it reads x), and "qkv" the query, key and value that read the same
    tensor: adjacent columns with one input are what fuse_sibling_linears
    merges into one wider linear. "inner0"/"inner1" alternate as the
    true_hidden-wide residual stream through the stacked FFNs.
    """
    c, p = g.c, f"encoder.layer.{i}."
    th, I, A, ib = c.true_hidden_size, c.intermediate_size, c.all_head_size, c.intra_bottleneck_size
    act = ACTIVATIONS[c.hidden_act]
    if c.use_bottleneck:
        bn_in = g.linear(
            p + "bottleneck.input",
            p + "bottleneck.input.dense",
            x,
            Ref(g.buf("proj", 2 * ib + A), 0, ib),
            **g.norm_args(p + "bottleneck.input.LayerNorm", ib, g.eps),
        )
        residual = bn_in
        if c.use_bottleneck_attention:
            q_in = k_in = v_in = bn_in
        elif c.key_query_shared_bottleneck:
            kq = g.linear(
                p + "bottleneck.attention",
                p + "bottleneck.attention.dense",
                x,
                Ref("proj", ib, ib),
                **g.norm_args(p + "bottleneck.attention.LayerNorm", ib, g.eps),
            )
            q_in = k_in = kq
            v_in = x
        else:
            q_in = k_in = v_in = x
    else:
        q_in = k_in = v_in = residual = x

    if v_in == q_in:
        qkv = g.buf("qkv", 3 * A)
        q = g.linear(p + "attention.query", p + "attention.self.query", q_in, Ref(qkv, 0, A))
        k = g.linear(p + "attention.key", p + "attention.self.key", k_in, Ref(qkv, A, A))
        v = g.linear(p + "attention.value", p + "attention.self.value", v_in, Ref(qkv, 2 * A, A))
    else:  # v reads the layer input, next to the bottlenecks in "proj"
        v = g.linear(p + "attention.value", p + "attention.self.value", v_in, Ref("proj", 2 * ib, A))
        qkv = g.buf("qkv", 2 * A)
        q = g.linear(p + "attention.query", p + "attention.self.query", q_in, Ref(qkv, 0, A))
        k = g.linear(p + "attention.key", p + "attention.self.key", k_in, Ref(qkv, A, A))
    ctx = Ref(g.buf("context", A), 0, A)
    g.ops.append(Attention(p + "attention", q, k, v, ctx, c.num_attention_heads, c.attention_head_size, i))

    cur = g.linear(
        p + "attention.output",
        p + "attention.output.dense",
        ctx,
        Ref(g.buf("inner0", th), 0, th),
        res=residual,
        **g.norm_args(p + "attention.output.LayerNorm", th, g.eps),
    )
    inter = Ref(g.buf("intermediate", I), 0, I)
    for j in range(c.num_feedforward_networks - 1):
        f = p + f"ffn.{j}."
        g.linear(f + "intermediate", f + "intermediate.dense", cur, inter, act=act)
        nxt = Ref(g.buf(f"inner{(j + 1) % 2}", th), 0, th)
        cur = g.linear(
            f + "output", f + "output.dense", inter, nxt, res=cur, **g.norm_args(f + "output.LayerNorm", th, g.eps)
        )
    g.linear(p + "intermediate", p + "intermediate.dense", cur, inter, act=act)
    if c.use_bottleneck:
        out = g.linear(
            p + "output",
            p + "output.dense",
            inter,
            Ref(g.buf("layer_out", th), 0, th),
            res=cur,
            **g.norm_args(p + "output.LayerNorm", th, g.default_eps),
        )
        return g.linear(
            p + "output.bottleneck",
            p + "output.bottleneck.dense",
            out,
            g.hidden(i + 1),
            res=x,
            **g.norm_args(p + "output.bottleneck.LayerNorm", c.hidden_size, g.eps),
        )
    return g.linear(
        p + "output",
        p + "output.dense",
        inter,
        g.hidden(i + 1),
        res=cur,
        **g.norm_args(p + "output.LayerNorm", th, g.default_eps),
    )


def _pooler(g: _Builder, x: Ref) -> Ref:
    """The first token of each sequence, through dense + tanh when the config has ``classifier_activation``."""
    H = g.c.hidden_size
    first = Ref(g.buf("first_token", H, rows="batch"), 0, H)
    g.ops.append(FirstToken("pooler.first_token", x, first))
    if not g.c.classifier_activation:
        return first
    pooled = Ref(g.buf("pooled", H, rows="batch"), 0, H)
    return g.linear("pooler.dense", "pooler.dense", first, pooled, act=ACTIVATIONS["tanh"])


def _head(g: _Builder, head: str, x: Ref, pooled: Ref | None) -> dict[str, Ref]:
    """Append the ops of a task head; return its named outputs."""
    c = g.c
    H, V = c.hidden_size, c.vocab_size
    out = {}
    if head in ("pretraining", "masked_lm"):
        # transform: dense, activation, LayerNorm (a real LayerNorm even in no_norm models)
        t = Ref(g.buf("mlm_transform", H), 0, H)
        p = "cls.predictions.transform."
        g.linear(
            "cls.predictions.transform",
            p + "dense",
            x,
            t,
            act=ACTIVATIONS[c.hidden_act],
            norm=Norm.LAYERNORM,
            nw=g.tensor(p + "LayerNorm.weight", (H,)),
            nb=g.tensor(p + "LayerNorm.bias", (H,)),
            eps=g.eps,
        )
        # logits = t . [decoder.weight^T ; dense.weight] + bias: one linear of (V, H) weight
        # [decoder.weight | dense.weight^T]
        dense = None
        if g.packing:
            dense = np.empty((V, H), np.float32)
            dense[:, : c.embedding_size] = g.tensors["cls.predictions.decoder.weight"]
            dense[:, c.embedding_size :] = g.tensors["cls.predictions.dense.weight"].T
        logits = Ref(g.buf("mlm_logits", V), 0, V)
        bias = "cls.predictions.bias" if c.tie_word_embeddings else "cls.predictions.decoder.bias"
        g.linear("cls.predictions.decoder", "cls.predictions.decoder", t, logits, dense=dense, bias=bias)
        out["prediction_logits" if head == "pretraining" else "logits"] = logits
    if head in ("pretraining", "next_sentence"):
        nsp = Ref(g.buf("nsp_logits", 2, rows="batch"), 0, 2)
        g.linear("cls.seq_relationship", "cls.seq_relationship", pooled, nsp)
        out["seq_relationship_logits" if head == "pretraining" else "logits"] = nsp
    if head in ("sequence_classification", "multiple_choice"):
        n = c.num_labels if head == "sequence_classification" else 1
        out["logits"] = g.linear("classifier", "classifier", pooled, Ref(g.buf("logits", n, rows="batch"), 0, n))
    if head == "token_classification":
        n = c.num_labels
        out["logits"] = g.linear("classifier", "classifier", x, Ref(g.buf("logits", n), 0, n))
    if head == "question_answering":
        n = c.num_labels
        g.linear("qa_outputs", "qa_outputs", x, Ref(g.buf("qa_logits", n), 0, n))
        out["start_logits"] = Ref("qa_logits", 0, 1)
        out["end_logits"] = Ref("qa_logits", 1, 1)
    return out


# -------------------------------------------------------------------- binding
def build_graph(
    weights: PackedWeights, *, keep_hidden_states: bool = False, fuse_ffn: bool = False, source: str = "weights"
) -> Graph:
    """The graph of ``weights``, every op holding the arrays it reads (nothing is copied but the
    merged biases and norm vectors of fused linears).

    Every tensor and linear that does not fit the config is reported in one
    CheckpointError (``source`` names where the weights came from).
    """
    c = weights.config
    wiring = wire(
        c,
        weights.tensors,
        head=weights.head,
        pooler=weights.pooler,
        keep_hidden_states=keep_hidden_states,
        fuse=weights.fused,
        row_scales=weights.row_scales,
    )
    problems = wiring.problems(weights.tensors, weights.row_scales)
    known = set(model_shapes(c, weights.head, weights.pooler))  # (HF tensors this graph does not read are ignored)
    problems += [
        f"unexpected tensor {n!r} with shape {list(a.shape)}"
        for n, a in sorted(weights.tensors.items())
        if n not in wiring.expected and n not in known
    ]
    ops, used = [], set()
    for op in wiring.graph.ops:
        if isinstance(op, Linear):
            used.add(op.name)
            weight = weights.linears.get(op.name)
            found = _weight_problems(op, weight)
            problems += found
            if not found:
                op = dataclasses.replace(op, weight=_bound(op, weight))
        ops.append(op)
    problems += [f"unexpected linear weight {n!r}" for n in sorted(set(weights.linears) - used)]
    if problems:
        raise CheckpointError(f"{source} does not match its config", problems)
    if int8_attention(weights):
        ops = [dataclasses.replace(op, int8=True) if isinstance(op, Attention) else op for op in ops]
    graph = dataclasses.replace(wiring.graph, ops=ops)
    return fuse_feed_forward(graph) if fuse_ffn else graph


def int8_attention(weights: PackedWeights) -> bool:
    """Whether attention may run its scores in int8 (graph.Attention.int8): in int8 models, unless their
    quantization kept it in float32 (``attention: "float32"`` in its summary; checkpoints quantized before
    the choice existed say nothing and take int8)."""
    return weights.dtype == "int8" and (weights.quantization or {}).get("attention", "int8") == "int8"


def linear_shapes(
    config: MobileBertConfig, head: str | None = None, pooler: bool = True, fused: bool = True
) -> dict[str, tuple[int, int]]:
    """{linear op name: (N, K)} of a model's graph: what its PackedWeights' linears hold."""
    wiring = wire(config, {}, head=head, pooler=pooler, fuse=fused)
    return {op.name: (op.out.width, op.x.width) for op in linear_ops(wiring.graph)}


def _weight_problems(op: Linear, weight) -> list[str]:
    N, K = op.out.width, op.x.width
    if weight is None:
        return [f"missing linear weight {op.name!r} ({K} -> {N})"]
    if isinstance(weight, PackedLinear):
        cols = backend.layout().cols
        expected = (-(-N // cols), K, cols)
        if weight.panels.shape != expected or weight.n != N:
            return [
                f"packed weight of {op.name!r} has shape {list(weight.panels.shape)} for {weight.n} outputs, "
                f"expected {list(expected)} for {N}"
            ]
        return []
    QCOLS = backend.layout().cols
    P = -(-N // QCOLS)
    problems = []
    if weight.panels.dtype != np.int8 or weight.panels.shape != (P, -(-K // 4), 4 * QCOLS):
        problems.append(
            f"int8 weight of {op.name!r} is {weight.panels.dtype} {list(weight.panels.shape)}, "
            f"expected int8 {[P, -(-K // 4), 4 * QCOLS]}"
        )
    if weight.n != N or weight.scale.shape != (P * QCOLS,) or weight.corr.shape != (P * QCOLS,):
        problems.append(f"scales of {op.name!r} have shape [{weight.n}], expected [{N}]")
    if weight.outlier_w.shape != (weight.outliers.shape[0], N):
        problems.append(
            f"outlier weights of {op.name!r} have shape {list(weight.outlier_w.shape)}, expected "
            f"[{weight.outliers.shape[0]}, {N}]"
        )
    o = weight.outliers
    if o.size and (o.min() < 0 or o.max() >= K or len(set(o.tolist())) != o.size):
        problems.append(f"outlier channels of {op.name!r} must be distinct inputs in [0, {K}), got {o.tolist()}")
    return problems


def _bound(op: Linear, weight):
    """``weight`` as ``op``'s kernel takes it: an int8 weight's channel mask cut to the op's input width."""
    if isinstance(weight, Int8Linear) and weight.mask.shape != (op.x.width,):
        weight = dataclasses.replace(weight, mask=k_layout.channel_mask(op.x.width, weight.outliers))
    return weight


def graph_arrays(graph: Graph) -> list[np.ndarray]:
    """Every array the graph's ops hold (tables, biases, norm vectors, the weights' arrays), each once."""
    found: dict[int, np.ndarray] = {}

    def visit(obj) -> None:
        for value in vars(obj).values():  # (the ops and weights are dataclasses without slots)
            if isinstance(value, np.ndarray):
                found.setdefault(id(value), value)
            elif isinstance(value, (Linear, PackedLinear, Int8Linear)):
                visit(value)  # a FeedForward's linears, a linear's weight

    for op in graph.ops:
        visit(op)
    return list(found.values())


def linear_ops(graph: Graph):
    """Every Linear of the graph, including the two inside each FeedForward."""
    for op in graph.ops:
        if isinstance(op, FeedForward):
            yield op.first
            yield op.second
        elif isinstance(op, Linear):
            yield op


# ------------------------------------------------------------------ rewrites
def fuse_feed_forward(graph: Graph) -> Graph:
    """Run each (intermediate, output) linear pair as one FeedForward op.

    Legal when the second reads exactly what the first writes, the first has
    no residual or norm, and the second's residual is the first's input (the
    FFN pattern): the intermediate then never needs its buffer. Float32
    linears only.

    Off by default (``fuse_ffn``): in the full model, where every weight comes
    cold from memory, it measured slower (bench/results/profile.md).
    """
    ops, i = [], 0
    while i < len(graph.ops):
        a = graph.ops[i]
        b = graph.ops[i + 1] if i + 1 < len(graph.ops) else None
        if (
            isinstance(a, Linear)
            and isinstance(b, Linear)
            and isinstance(a.weight, PackedLinear)
            and isinstance(b.weight, PackedLinear)
            and a.res is None
            and a.norm == Norm.NONE
            and b.x == a.out
            and b.res == a.x
            and b.act == 0
            and b.out.buf != a.x.buf
        ):
            ops.append(FeedForward(a.name + "+" + b.name, a, b))
            i += 2
        else:
            ops.append(a)
            i += 1
    return dataclasses.replace(graph, ops=ops)


def _mergeable(a, b) -> bool:
    return (
        isinstance(a, Linear)
        and isinstance(b, Linear)
        and a.x == b.x
        and b.out.follows(a.out)
        and a.res is None
        and b.res is None
        and a.act == b.act
        and a.norm != Norm.LAYERNORM
        and b.norm != Norm.LAYERNORM
    )


def _concat(parts: list) -> np.ndarray | None:
    return None if any(p is None for p in parts) else _readonly(np.concatenate(parts))


def _merge(ops: list) -> Linear:
    first = ops[0]
    kw = {}
    if any(op.norm == Norm.NONORM for op in ops):  # a part without a norm gets the identity NoNorm
        kw = dict(
            norm=Norm.NONORM,
            nw=_concat([op.nw if op.norm == Norm.NONORM else np.ones(op.out.width, np.float32) for op in ops]),
            nb=_concat([op.nb if op.norm == Norm.NONORM else np.zeros(op.out.width, np.float32) for op in ops]),
        )
    dense = None if first.dense is None else np.concatenate([op.dense for op in ops])
    return Linear(
        "+".join(op.name for op in ops),
        first.x,
        _concat([op.b for op in ops]),
        Ref(first.out.buf, first.out.off, sum(op.out.width for op in ops)),
        act=first.act,
        dense=dense,
        **kw,
    )


def fuse_sibling_linears(graph: Graph) -> Graph:
    """Merge consecutive linears that read the same input and write adjacent columns.

    Legal when none has a residual or a LayerNorm (whose statistics span one
    projection's outputs only): bias, activation and NoNorm are per column.
    E.g. the two bottlenecks and the value projection of a no_norm layer
    become one 512 -> 384 linear; query and key one 128 -> 256 linear.
    """
    ops, group = [], []
    for op in graph.ops + [None]:
        if group and op is not None and _mergeable(group[-1], op):
            group.append(op)
            continue
        if group:
            ops.append(_merge(group) if len(group) > 1 else group[0])
        group = [op] if isinstance(op, Linear) else []
        if op is not None and not isinstance(op, Linear):
            ops.append(op)
    return dataclasses.replace(graph, ops=ops)
