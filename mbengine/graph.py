"""The graph builder: a MobileBertConfig and its weights become a list of ops, once.

Every config variant (bottleneck on/off, bottleneck attention, shared
key/query bottleneck, the number of stacked FFNs, trigram input, embedding
width, NoNorm/LayerNorm, pooler activation) is decided here, so the runner
has no model-specific branches: it walks the op list and calls kernels.

Activations live in token-major buffers of shape (rows, width), rows being
``batch * seq`` (or ``batch`` for the pooler). An op reads and writes
*column windows* of buffers (:class:`Ref`), which lets sibling projections
write side by side into one buffer and be merged into a single wider linear
(:func:`fuse_sibling_linears`, a rewrite that can be switched off).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .config import MobileBertConfig
from .errors import CheckpointError
from .kernels.linear import NORM_LAYERNORM, NORM_NONE, NORM_NONORM, pack
from .kernels.names import ACTIVATIONS
from .kernels.simd import COLS

TORCH_LAYERNORM_EPS = 1e-5  # HF builds two of MobileBERT's LayerNorms without eps


@dataclass(frozen=True)
class Ref:
    """Columns [off, off + width) of arena buffer ``buf``."""

    buf: str
    off: int
    width: int

    def follows(self, other: "Ref") -> bool:
        return self.buf == other.buf and self.off == other.off + other.width


@dataclass(frozen=True)
class Buffer:
    name: str
    width: int
    rows: str = "tokens"  # "tokens": batch*seq rows; "batch": one row per sequence


# ------------------------------------------------------------------------ ops
@dataclass
class EmbedWords:
    """Word embeddings of the input ids, trigram window optional."""

    name: str
    table: np.ndarray  # (vocab, E), float32, or int8 with a scale per row
    trigram: bool
    out: Ref
    scale: np.ndarray | None = None  # (vocab,) float32 row scales of an int8 table


@dataclass(frozen=True)
class Int8Weight:
    """A linear's weight for :func:`kernels.qlinear.qlinear` (see :mod:`mbengine.quantize`)."""

    wq: np.ndarray  # (P, ceil(K / 4), 4 * COLS) int8 panels (kernels.qlinear.pack)
    scale: np.ndarray  # (P * COLS,) float32 per output channel, zero-padded
    corr: np.ndarray  # (P * COLS,) int32 activation-offset correction
    mask: np.ndarray  # (K,) int32 channel mask: 0 for the outlier channels
    outliers: np.ndarray  # (J,) int64 input channels applied in float32
    outlier_w: np.ndarray  # (J, N) float32: their rows of W.T
    n: int  # output channels (N)


@dataclass
class EmbedPositions:
    """Position plus token-type embeddings."""

    name: str
    positions: np.ndarray  # (max_positions, H)
    token_types: np.ndarray  # (type_vocab, H)
    out: Ref


@dataclass
class Linear:
    """out = norm(act(x @ w.T + b) + res)."""

    name: str
    x: Ref
    w: np.ndarray | None  # (N, K), HF layout (None once only the packed form is kept)
    b: np.ndarray  # (N,)
    out: Ref
    act: int = 0
    res: Ref | None = None
    norm: int = NORM_NONE
    nw: np.ndarray | None = None
    nb: np.ndarray | None = None
    eps: float = 0.0
    wp: np.ndarray | None = None  # the packed weight the kernel reads (kernels.linear.pack)
    q: Int8Weight | None = None  # or, in an int8 model, its int8 form


@dataclass
class FeedForward:
    """A feed-forward pair run as one kernel: ``second(act(first(x)))`` with ``x`` as the residual."""

    name: str
    first: Linear  # x -> intermediate, with the activation
    second: Linear  # intermediate -> out, + residual x, norm


@dataclass
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
    """Fused multi-head self-attention; ``layer`` indexes the probability output."""

    name: str
    q: Ref
    k: Ref
    v: Ref
    out: Ref
    heads: int
    head_dim: int
    layer: int


@dataclass
class FirstToken:
    """out[b] = x[first token of sequence b]."""

    name: str
    x: Ref
    out: Ref


Op = EmbedWords | EmbedPositions | Linear | FeedForward | AddNorm | Attention | FirstToken


@dataclass
class Graph:
    ops: list
    buffers: dict[str, Buffer]
    outputs: dict[str, Ref]
    hidden_states: list[Ref] = field(default_factory=list)
    num_layers: int = 0
    heads: int = 1
    head_dim: int = 1
    packed_sources: frozenset = frozenset()  # HF weight names that reach the kernels only packed


# ------------------------------------------------------------------- builder
def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.flags.writeable:
        a = a.copy()
        a.flags.writeable = False
    return a


class _Builder:
    def __init__(self, config: MobileBertConfig, weights: dict[str, np.ndarray]):
        self.c = config
        self.w = weights
        self.ops: list = []
        self.buffers: dict[str, Buffer] = {}
        self.consumed: set[str] = set()
        self.cache: dict = {}

    def buf(self, name: str, width: int, rows: str = "tokens") -> str:
        old = self.buffers.get(name)
        if old is None or old.width < width:
            self.buffers[name] = Buffer(name, width, rows)
        return name

    def norm_args(self, prefix: str, eps: float) -> dict:
        kind = NORM_NONORM if self.c.normalization_type == "no_norm" else NORM_LAYERNORM
        return dict(norm=kind, nw=self.w[prefix + ".weight"], nb=self.w[prefix + ".bias"], eps=float(eps))

    def linear(self, name: str, prefix: str, x: Ref, out: Ref, **kw) -> Ref:
        """A Linear op on HF weights ``prefix.weight``/``prefix.bias``.

        The (N, K) weight may be absent when its packed form is already in the
        cache (an engine checkpoint stores only that).
        """
        self.consumed.add(prefix + ".weight")
        w = self.w.get(prefix + ".weight")
        if w is not None and w.shape != (out.width, x.width):
            raise CheckpointError(f"{prefix}.weight has shape {list(w.shape)}, expected [{out.width}, {x.width}] "
                                  f"(outputs x inputs of this linear)")
        self.ops.append(Linear(name, x, w, self.w[prefix + ".bias"], out, **kw))
        return out


def build_graph(config: MobileBertConfig, weights: dict[str, np.ndarray], *, head: str | None = None,
                pooler: bool = True, keep_hidden_states: bool = False, fuse: bool = True,
                fuse_ffn: bool = False, cache: dict | None = None) -> Graph:
    """Turn ``config`` and its base-model weights (HF names, no prefix) into ops.

    ``keep_hidden_states`` gives every layer its own output buffer so the
    runner can return them all; otherwise two hidden buffers alternate.
    ``head`` appends a task head (see ``converters.canonical.HEADS``);
    ``pooler`` adds the pooler. ``cache`` keeps merged and packed weights so
    several graphs of one model share them.
    """
    cache = {} if cache is None else cache
    c = config
    g = _Builder(c, weights)
    g.cache = cache
    H, E, th, I, A = c.hidden_size, c.embedding_size, c.true_hidden_size, c.intermediate_size, c.all_head_size
    ib = c.intra_bottleneck_size
    act = ACTIVATIONS[c.hidden_act]
    eps = c.layer_norm_eps
    # HF builds the embeddings' and each layer output's LayerNorm with torch's default eps;
    # BERT checkpoints run here (converters/bert.py) use their own eps there
    default_eps = float(c.extra.get("mbengine_default_layer_norm_eps", TORCH_LAYERNORM_EPS))

    def hidden(i: int) -> Ref:
        name = f"hidden{i}" if keep_hidden_states else f"hidden{i % 2}"
        return Ref(g.buf(name, H), 0, H)

    # embeddings -------------------------------------------------------------
    words_w = E * (3 if c.trigram_input else 1)
    words = Ref(g.buf("words", words_w), 0, words_w)
    table = weights["embeddings.word_embeddings.weight"]
    g.ops.append(EmbedWords("embeddings.words", table, c.trigram_input, words,
                            cache.get(("scale", "embeddings.word_embeddings.weight"))))
    if table.dtype != np.float32 and words.width and g.ops[-1].scale is None:
        raise CheckpointError(f"embeddings.word_embeddings.weight is {table.dtype} but has no row scales")
    pos = Ref(g.buf("postype", H), 0, H)
    g.ops.append(EmbedPositions("embeddings.positions", weights["embeddings.position_embeddings.weight"],
                                weights["embeddings.token_type_embeddings.weight"], pos))
    x = hidden(0)
    emb_norm = g.norm_args("embeddings.LayerNorm", default_eps)
    if c.trigram_input or E != H:
        # [T, 3E] -> [T, H], + positions/types, norm
        g.linear("embeddings.transformation", "embeddings.embedding_transformation", words, x, res=pos, **emb_norm)
    else:
        g.ops.append(AddNorm("embeddings.norm", words, pos, x, **emb_norm))
    hidden_states = [x]

    # layers -------------------------------------------------------------------
    for i in range(c.num_hidden_layers):
        p = f"encoder.layer.{i}."
        # Bottlenecks and projections that read the layer input go side by side
        # into "proj"; q, k (and v when it reads the same tensor) into "qkv".
        if c.use_bottleneck:
            bn_in = g.linear(p + "bottleneck.input", p + "bottleneck.input.dense", x,
                             Ref(g.buf("proj", 2 * ib + A), 0, ib), **g.norm_args(p + "bottleneck.input.LayerNorm", eps))
            residual = bn_in
            if c.use_bottleneck_attention:
                q_in = k_in = v_in = bn_in
            elif c.key_query_shared_bottleneck:
                kq = g.linear(p + "bottleneck.attention", p + "bottleneck.attention.dense", x,
                              Ref("proj", ib, ib), **g.norm_args(p + "bottleneck.attention.LayerNorm", eps))
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

        cur = g.linear(p + "attention.output", p + "attention.output.dense", ctx, Ref(g.buf("inner0", th), 0, th),
                       res=residual, **g.norm_args(p + "attention.output.LayerNorm", eps))
        inter = Ref(g.buf("intermediate", I), 0, I)
        for j in range(c.num_feedforward_networks - 1):
            f = p + f"ffn.{j}."
            g.linear(f + "intermediate", f + "intermediate.dense", cur, inter, act=act)
            nxt = Ref(g.buf(f"inner{(j + 1) % 2}", th), 0, th)
            cur = g.linear(f + "output", f + "output.dense", inter, nxt, res=cur,
                           **g.norm_args(f + "output.LayerNorm", eps))
        g.linear(p + "intermediate", p + "intermediate.dense", cur, inter, act=act)
        out_norm = g.norm_args(p + "output.LayerNorm", default_eps)
        if c.use_bottleneck:
            o = g.linear(p + "output", p + "output.dense", inter, Ref(g.buf("layer_out", th), 0, th),
                         res=cur, **out_norm)
            x = g.linear(p + "output.bottleneck", p + "output.bottleneck.dense", o, hidden(i + 1), res=x,
                         **g.norm_args(p + "output.bottleneck.LayerNorm", eps))
        else:
            x = g.linear(p + "output", p + "output.dense", inter, hidden(i + 1), res=cur, **out_norm)
        hidden_states.append(x)

    outputs = {"last_hidden_state": x}
    # pooler --------------------------------------------------------------------
    if pooler:
        first = Ref(g.buf("first_token", H, rows="batch"), 0, H)
        g.ops.append(FirstToken("pooler.first_token", x, first))
        pooled = first
        if c.classifier_activation:
            pooled = Ref(g.buf("pooled", H, rows="batch"), 0, H)
            g.linear("pooler.dense", "pooler.dense", first, pooled, act=ACTIVATIONS["tanh"])
        outputs["pooler_output"] = pooled
    if head is not None:
        outputs.update(_head(g, head, x, outputs.get("pooler_output"), cache))

    graph = Graph(g.ops, g.buffers, outputs, hidden_states,
                  c.num_hidden_layers, c.num_attention_heads, c.attention_head_size, frozenset(g.consumed))
    if fuse:
        graph = fuse_sibling_linears(graph, cache)
    graph = pack_weights(graph, cache)
    if fuse_ffn:
        graph = fuse_feed_forward(graph)
    return graph


def linear_ops(graph: Graph):
    """Every Linear of the graph, including the two inside each FeedForward."""
    for op in graph.ops:
        if isinstance(op, FeedForward):
            yield op.first
            yield op.second
        elif isinstance(op, Linear):
            yield op


def fuse_feed_forward(graph: Graph) -> Graph:
    """Run each (intermediate, output) linear pair as one FeedForward op.

    Legal when the second reads exactly what the first writes, the first has
    no residual or norm, and the second's residual is the first's input (the
    FFN pattern): the intermediate then never needs its buffer.

    Off by default, by measurement: with weights in cache the fused pair is
    20% faster on 2 threads (134 vs 168 us, 128 x 128 x 512), but in the
    full model, where every weight comes cold from memory, its row-block
    order streams each weight once per thread instead of once per call, and
    the pair got slower (b1 s128: 6.9 vs 6.3 ms per 24 pairs on 1 thread,
    4.5 vs 4.1 on 2).
    """
    ops, i = [], 0
    while i < len(graph.ops):
        a = graph.ops[i]
        b = graph.ops[i + 1] if i + 1 < len(graph.ops) else None
        if (isinstance(a, Linear) and isinstance(b, Linear) and a.q is None and b.q is None
                and a.res is None and a.norm == NORM_NONE
                and b.x == a.out and b.res == a.x and b.act == 0 and b.out.buf != a.x.buf):
            ops.append(FeedForward(a.name + "+" + b.name, a, b))
            i += 2
        else:
            ops.append(a)
            i += 1
    return dataclasses.replace(graph, ops=ops)


def pack_weights(graph: Graph, cache: dict) -> Graph:
    """Give every linear its packed weight (packed once, kept in ``cache`` under ("packed", op name)).

    A linear whose int8 weight is in the cache (("int8", op name)) gets that instead.
    """
    ops = []
    for op in graph.ops:
        if isinstance(op, Linear) and op.q is None and ("int8", op.name) in cache:
            op = dataclasses.replace(op, q=_checked_int8(op, cache[("int8", op.name)]))
        elif isinstance(op, Linear) and op.wp is None:
            key = ("packed", op.name)
            if key not in cache:
                if op.w is None:
                    raise CheckpointError(f"no weight for {op.name!r}: neither the (N, K) tensor nor its packed form")
                cache[key] = pack(op.w)
            wp = cache[key]
            if wp.ndim == 3 and wp.shape[2] != COLS and wp.shape[1] == op.x.width:
                # packed for another vector width: repack once for this CPU
                from .converters.engine import unpack

                wp = cache[key] = pack(unpack(wp, op.out.width))
            expected = (-(-op.out.width // COLS), op.x.width, COLS)
            if wp.shape != expected:
                raise CheckpointError(f"packed weight of {op.name!r} has shape {list(wp.shape)}, "
                                      f"expected {list(expected)}")
            op = dataclasses.replace(op, wp=wp)
        ops.append(op)
    return dataclasses.replace(graph, ops=ops)


def _checked_int8(op: Linear, q: Int8Weight) -> Int8Weight:
    from .kernels.qlinear import COLS as QCOLS
    from .kernels.qlinear import channel_mask

    N, K = op.out.width, op.x.width
    P = -(-N // QCOLS)
    problems = []
    if q.wq.dtype != np.int8 or q.wq.shape != (P, -(-K // 4), 4 * QCOLS):
        problems.append(f"int8 weight is {q.wq.dtype} {list(q.wq.shape)}, expected int8 {[P, -(-K // 4), 4 * QCOLS]}")
    if q.n != N or q.scale.shape != (P * QCOLS,) or q.corr.shape != (P * QCOLS,):
        problems.append(f"scales have shape [{q.n}], expected [{N}]")
    if q.outlier_w.shape != (q.outliers.shape[0], N):
        problems.append(f"outlier weights have shape {list(q.outlier_w.shape)}, expected [{q.outliers.shape[0]}, {N}]")
    if q.outliers.size and (q.outliers.min() < 0 or q.outliers.max() >= K
                            or np.unique(q.outliers).size != q.outliers.size):
        problems.append(f"outlier channels must be distinct inputs in [0, {K}), got {q.outliers.tolist()}")
    if problems:
        raise CheckpointError(f"int8 weight of {op.name!r} does not match the op ({K} -> {N})", problems)
    if q.mask.shape != (K,):  # stored weights cover the padded input width: cut the mask to the op's
        q = dataclasses.replace(q, mask=channel_mask(K, q.outliers))
    return q


def _head(g: _Builder, head: str, x: Ref, pooled: Ref | None, cache: dict) -> dict[str, Ref]:
    """Append the ops of a task head; return its named outputs."""
    c, w = g.c, g.w
    H, V = c.hidden_size, c.vocab_size
    out = {}
    if head in ("pretraining", "masked_lm"):
        # transform: dense, activation, LayerNorm (a real LayerNorm even in no_norm models)
        t = Ref(g.buf("mlm_transform", H), 0, H)
        p = "cls.predictions.transform."
        g.linear("cls.predictions.transform", p + "dense", x, t, act=ACTIVATIONS[c.hidden_act],
                 norm=NORM_LAYERNORM, nw=w[p + "LayerNorm.weight"], nb=w[p + "LayerNorm.bias"],
                 eps=float(c.layer_norm_eps))
        # logits = t . [decoder.weight^T ; dense.weight] + bias, i.e. a (V, H) weight
        # [decoder.weight | dense.weight^T], packed straight from the two parts
        g.consumed.add("cls.predictions.dense.weight")
        key = ("packed", "cls.predictions.decoder")
        if key not in cache and ("int8", "cls.predictions.decoder") not in cache:
            weight = np.empty((V, H), np.float32)
            weight[:, :c.embedding_size] = w["cls.predictions.decoder.weight"]
            weight[:, c.embedding_size:] = w["cls.predictions.dense.weight"].T
            cache[key] = pack(weight)
            del weight
        logits = Ref(g.buf("mlm_logits", V), 0, V)
        bias = w["cls.predictions.bias" if c.tie_word_embeddings else "cls.predictions.decoder.bias"]
        g.ops.append(Linear("cls.predictions.decoder", t, None, bias, logits))  # packed weight: from the cache
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


# ------------------------------------------------------------------ rewrites
def _mergeable(a, b) -> bool:
    return (
        isinstance(a, Linear) and isinstance(b, Linear)
        and a.x == b.x and b.out.follows(a.out)
        and a.res is None and b.res is None and a.act == b.act
        and a.norm != NORM_LAYERNORM and b.norm != NORM_LAYERNORM
    )


def _norm_vectors(op: Linear) -> tuple[np.ndarray, np.ndarray]:
    n = op.out.width
    if op.norm == NORM_NONORM:
        return op.nw, op.nb
    return np.ones(n, np.float32), np.zeros(n, np.float32)


def _merge(ops: list, cache: dict) -> Linear:
    first = ops[0]
    name = "+".join(op.name for op in ops)
    kw = {}
    if any(op.norm == NORM_NONORM for op in ops):
        pairs = [_norm_vectors(op) for op in ops]
        kw = dict(norm=NORM_NONORM, nw=_readonly(np.concatenate([p[0] for p in pairs])),
                  nb=_readonly(np.concatenate([p[1] for p in pairs])))
    # the big weight is only concatenated when its packed form is not there yet
    w = None if ("packed", name) in cache or ("int8", name) in cache else np.concatenate([op.w for op in ops])
    return Linear(name, first.x, w, _readonly(np.concatenate([op.b for op in ops])),
                  Ref(first.out.buf, first.out.off, sum(op.out.width for op in ops)), act=first.act, **kw)


def fuse_sibling_linears(graph: Graph, cache: dict | None = None) -> Graph:
    """Merge consecutive linears that read the same input and write adjacent columns.

    Legal when none has a residual or a LayerNorm (whose statistics span one
    projection's outputs only): bias, activation and NoNorm are per column.
    E.g. the two bottlenecks and the value projection of a no_norm layer
    become one 512 -> 384 linear; query and key one 128 -> 256 linear.
    """
    cache = {} if cache is None else cache
    ops, group = [], []
    for op in graph.ops + [None]:
        if group and op is not None and _mergeable(group[-1], op):
            group.append(op)
            continue
        if group:
            ops.append(_merge(group, cache) if len(group) > 1 else group[0])
        group = [op] if isinstance(op, Linear) else []
        if op is not None and not isinstance(op, Linear):
            ops.append(op)
    return dataclasses.replace(graph, ops=ops)
