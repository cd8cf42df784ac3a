"""The runner: executes a graph's ops on a buffer arena reused across calls.

An :class:`Arena` holds every activation buffer for one (batch, seq, rows) shape,
the input arrays the kernels read, and the *plan*: each op bound to its kernel
and its argument tuple, built once. A call then copies the inputs into the
arena and runs ``for kernel, args in plan: kernel(*args)``; nothing is
allocated and nothing model-specific is decided in that loop. The arenas of
one batch size (and thread count, padding choice) are views of one
:class:`Frame`, so a new length reuses its memory and, on the native library,
its bound plan.

Token-major buffers have one row per token: ``batch * seq`` rows when the
padding is computed (its outputs then equal Hugging Face's at every position),
or, run *ragged*, only the real tokens of a right-padded batch, sequence
after sequence (``rows`` of them): every op but attention is per token, and
attention runs each sequence over its own length (``Arena.starts``).
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections import OrderedDict

import numpy as np

from . import backend, plans
from .graph import (
    AddNorm,
    Attention,
    EmbedPositions,
    EmbedWords,
    FeedForward,
    FirstToken,
    Graph,
    Linear,
    Ref,
    graph_arrays,
)
from .kernels import layout as k_layout
from .weights import Int8Linear

MASK_MIN = np.float32(np.finfo(np.float32).min)  # what HF adds for a masked key


def _ro(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# Placeholders for unused kernel arguments, typed like the real ones so every
# call shares one compiled specialisation.
_NO_VECTOR = _ro(np.zeros(1, np.float32))
_NO_MATRIX = np.zeros((1, 1), np.float32)
_NO_PROBS = np.zeros((1, 1, 1, 1), np.float32)
_NO_BYTES = _ro(np.zeros(1, np.uint8))
_NO_SCALES = _ro(np.zeros(0, np.float32))


def _bytes(a: np.ndarray) -> np.ndarray:
    """A C-contiguous array's bytes as a flat uint8 view (what the kernels prefetch)."""
    return a.reshape(-1).view(np.uint8)


def next_weights(graph: Graph) -> dict:
    """{id(linear op): bytes of the next linear's packed weight}: what each linear prefetches (kernels.linear)."""
    linears = [op for op in graph.ops if isinstance(op, Linear)]
    return {id(a): _bytes(b.weight.panels) for a, b in zip(linears, linears[1:])}


_WIDTHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Graph -> (int8 inputs, FFN width, int8 attention)


def _widths(graph: Graph) -> tuple[int, int, bool]:
    """(the most padded inputs of an int8 linear (0 without any), the widest FFN intermediate (>= 1), whether
    its attention may run int8 scores (graph.Attention.int8)): fixed for a graph, so found once (every call
    checks its memory need with them, and a walk over the ~300 ops cost ~0.4 ms of Python per call)."""
    found = _WIDTHS.get(graph)
    if found is None:
        inputs = [
            op.weight.panels.shape[1] * 4
            for op in graph.ops
            if isinstance(op, Linear) and isinstance(op.weight, Int8Linear)
        ]
        ffn = [
            op.first.weight.panels.shape[0] * op.first.weight.panels.shape[2]
            for op in graph.ops
            if isinstance(op, FeedForward)
        ]
        int8_attention = any(isinstance(op, Attention) and op.int8 for op in graph.ops)
        found = _WIDTHS[graph] = (max(inputs, default=0), max(ffn, default=1), int8_attention)
    return found


def _int8_width(graph: Graph) -> int:
    """Bytes per row of the quantized-activation scratch (0 without int8 linears)."""
    return _widths(graph)[0] * backend.layout().qx_bytes


def _ffn_width(graph: Graph) -> int:
    return _widths(graph)[1]


ROOM_POSITIONS, ROOM_ROWS = 32, 64  # a frame's capacity is rounded up to these


def _room(seq: int, rows: int | None) -> tuple[int, int | None]:
    """The capacity of a frame holding ``seq`` positions and ``rows`` token rows."""
    return -(-seq // ROOM_POSITIONS) * ROOM_POSITIONS, None if rows is None else -(-rows // ROOM_ROWS) * ROOM_ROWS


def arena_bytes(graph: Graph, batch: int, seq: int, want_probs: bool, rows: int | None = None) -> int:
    """Bytes an :class:`Arena` for this shape allocates (activations, inputs, scratch), in the frame a
    runner makes for it (its capacity rounded up, see :func:`_room`)."""
    seq, rows = _room(seq, rows)
    T = batch * seq if rows is None else rows
    total = sum((T if b.rows == "tokens" else batch) * b.width for b in graph.buffers.values()) * 4
    total += 5 * batch * seq * 8  # inputs and the additive mask
    layout = backend.layout()
    total += 4 * _max_threads() * layout.rows * _ffn_width(graph)
    total += T * (_int8_width(graph) + 4)
    scratch = k_layout.attention_scratch(layout, batch, seq, graph.heads, graph.head_dim, _max_threads())
    total += 4 * sum(int(np.prod(s)) for s in scratch)
    if _int8_attention(graph):
        qb, qf = k_layout.qattention_scratch(layout, seq, graph.head_dim, _max_threads())
        total += int(np.prod(qb)) * np.dtype(layout.qx_dtype).itemsize + 4 * int(np.prod(qf))
    if want_probs:
        total += 4 * graph.num_layers * batch * graph.heads * seq * seq
    return total


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _int8_attention(graph: Graph) -> bool:
    """Whether the graph's attention runs on kernels.qattention (kernels.layout.int8_scores; every attention op
    of a graph has the same flag and head width)."""
    return _widths(graph)[2] and k_layout.int8_scores(backend.layout(), graph.head_dim)


def _shapes(graph: Graph, batch: int, seq: int, rows: int | None, want_probs: bool) -> dict:
    """{dtype: {name: shape}}: every array an arena of this shape holds, by the dtype of its block."""
    layout = backend.layout()
    T = batch * seq if rows is None else rows
    kp, sc = k_layout.attention_scratch(layout, batch, seq, graph.heads, graph.head_dim, _max_threads())
    # int8 attention (kernels.qattention): a row of bytes and one of floats per thread, carved by the kernel
    qb, qf = k_layout.qattention_scratch(layout, seq, graph.head_dim, _max_threads())
    if not _int8_attention(graph):
        qb, qf = (1, 1), (1, 1)
    floats = {name: (T if b.rows == "tokens" else batch, b.width) for name, b in graph.buffers.items()}
    floats.update(
        {
            "mask_add": (batch, seq),
            # attention scratch: packed keys per (batch, head), one score block per thread
            "kp": kp,
            "scores": sc,
            # fused feed-forward pairs: one block of intermediate rows per thread
            "ffn_scratch": (_max_threads(), layout.rows, _ffn_width(graph)),
            "qscale": (T,),  # int8 linears: the scale of each quantized row
            "qatt_floats": qf,
        }
    )
    if want_probs:  # one array per layer, so each layer's starts where it starts at every shape
        floats.update({f"probs{i}": (batch, graph.heads, seq, seq) for i in range(graph.num_layers)})
    ints = {k: (batch, seq) for k in ("ids", "mask", "types", "positions")}
    ints["starts"] = (batch + 1,)
    return {
        np.dtype(np.float32): floats,
        # int8 linears: each row of activations, quantized (one byte per input)
        np.dtype(layout.qx_dtype): {"qx": (T, max(_int8_width(graph), 4 * layout.qx_bytes)), "qatt_bytes": qb},
        np.dtype(np.int64): ints,
    }


class Frame:
    """What the arenas of one (batch, want_probs, threads, ragged) family share.

    Room for up to ``seq`` positions and ``rows`` token rows (None: ``batch * seq``):
    each of an arena's arrays is the leading part of the frame's array of that name,
    so it starts at the same address at every shape, and only its dimensions change.
    On a native library the family then shares one bound plan, whose argument block
    :meth:`Arena.activate` gives the calling arena's dimensions (``dims``). A new
    length of a single text, or a ragged batch's new token count, costs a few views
    and no binding.
    """

    def __init__(self, graph: Graph, batch: int, seq: int, rows: int | None, want_probs: bool, carve):
        self.seq, self.rows = seq, rows
        self.flat = {}  # name -> the capacity array, flat
        for dtype, shapes in _shapes(graph, batch, seq, rows, want_probs).items():
            self.flat.update((name, v.reshape(-1)) for name, v in carve(dtype, shapes).items())
        # read by the embedding op at call time; an array, so the plan need not refer to the arena
        # (a plan holding its arena would be a reference cycle, freed only by the cyclic collector)
        self.trigram_mask_aware = np.ones(1, np.int64)
        self.kernels = self.plan = self.dims = None  # the shared native plan, once bound
        self.current = None  # the dims the shared plan is set to (the last arena's, see Arena.activate)

    def roots(self) -> list:
        """[(array, address, bytes)] of the memory the frame's arrays are views of: each block from its
        first aligned element (where the carving starts, :func:`_views`), then the trigram flag (see
        mbengine.plans)."""
        blocks = {id(v.base): v.base for v in self.flat.values() if v.base is not None}
        found = []
        for block in blocks.values():
            start = _aligned_start(block) * block.itemsize
            found.append((block, block.ctypes.data + start, block.nbytes - start))
        flag = self.trigram_mask_aware
        return found + [(flag, flag.ctypes.data, flag.nbytes)]

    def fits(self, seq: int, rows: int | None) -> bool:
        return seq <= self.seq and (rows is None or rows <= self.rows)

    def views(self, shapes: dict) -> dict:
        """{name: array of its shape} for an arena: the leading part of each capacity array."""
        flat = self.flat
        return {
            name: flat[name][: int(np.prod(shape))].reshape(shape)
            for by_dtype in shapes.values()
            for name, shape in by_dtype.items()
        }


class Arena:
    """Buffers and the bound plan for one (batch, seq, want_probs) shape."""

    def __init__(
        self,
        graph: Graph,
        batch: int,
        seq: int,
        want_probs: bool,
        frame: Frame | None = None,
        threads: int = 1,
        next_weight: dict | None = None,
        rows: int | None = None,
        kernels=None,
        lasting: tuple[dict, frozenset] | None = None,
        images=None,
    ):
        """``frame``: the family's (default: one of this arena's own, in fresh memory). ``lasting``: (memo,
        ids) that the runner's arenas share when bound to a native library (see :meth:`Runner.__init__`).
        ``images``: the runner's kept plans (:class:`mbengine.plans.Store`), on a native library."""
        self.batch, self.seq = batch, seq
        self.ragged = rows is not None  # token rows: the real tokens only (module doc)
        self.threads = threads  # what the kernels split work for (a plan is bound for one thread count)
        self.frame = frame = frame or Frame(graph, batch, seq, rows, want_probs, _carve)
        # Every array is a view of the frame's, which are views of one block per dtype that the
        # runner shares between its arenas (see Runner.carve): no allocation per shape.
        own = frame.views(_shapes(graph, batch, seq, rows, want_probs))
        self.bufs = {name: own[name] for name in graph.buffers}
        self.mask_add, self.kp, self.scores, self.ffn_scratch, self.qscale, self.qx = (
            own[k] for k in ("mask_add", "kp", "scores", "ffn_scratch", "qscale", "qx")
        )
        self.qatt_bytes, self.qatt_floats = own["qatt_bytes"], own["qatt_floats"]
        self.probs = [own[f"probs{i}"] for i in range(graph.num_layers)] if want_probs else None
        self.input_ids, self.attention_mask, self.token_type_ids, self.position_ids = (
            own[k] for k in ("ids", "mask", "types", "positions")
        )
        self.starts = own["starts"]  # sequence b's token rows: [starts[b], starts[b + 1]) (set per call)
        self.trigram_mask_aware = frame.trigram_mask_aware
        self._next_weight = next_weight if next_weight is not None else next_weights(graph)
        self._graph = graph
        self._dims = np.array([n for a in own.values() for n in a.shape], np.int64)  # as Frame.dims takes it
        if frame.plan is not None:  # the family's native plan: this arena sets its dims (activate)
            self.kernels, self.plan = frame.kernels, frame.plan
            return
        # each op bound to the code that runs it: a Numba dispatcher and the arguments, or a native
        # function and its C arguments (which point into arrays the frame and the graph hold)
        kernels = kernels or backend.get()
        native = images is not None and isinstance(kernels, backend.NativeKernels)
        # (on a native library, the family's plan as an earlier process bound it, if it was kept)
        shape = (batch, want_probs, threads, self.ragged, frame.seq, frame.rows, _max_threads())
        roots = frame.roots() if native else None
        found = images.bind(kernels.library, shape, roots) if native else None
        if found is not None:
            self.kernels, (bound, dims) = kernels, found
            dims.set(self._dims)  # (its words hold the dims of the arena that was bound, maybe another)
        else:
            record = {} if native else None
            self.kernels, bound, dims = backend.bind_plan(
                self.calls, kernels, *(lasting or (None, frozenset())), resizable=list(own.values()), record=record
            )
            if native and self.kernels is kernels:
                images.save(kernels.library, shape, roots, record)
        self.plan = [(op.name, *b) for op, b in zip(graph.ops, bound)]
        if dims is not None:
            frame.kernels, frame.plan, frame.dims, frame.current = self.kernels, self.plan, dims, self._dims

    @functools.cached_property
    def calls(self) -> list:
        """(kernel name, arguments) of each op: what the plan is bound from (made when first asked: an
        arena that shares its frame's native plan needs them only if ``mbengine warmup`` asks)."""
        return [self._bind(op) for op in self._graph.ops]

    def activate(self) -> None:
        """Point the family's shared native plan at this arena's shape (before running it)."""
        frame = self.frame
        if frame.current is not self._dims and frame.dims is not None:
            frame.dims.set(self._dims)
            frame.current = self._dims

    def view(self, ref: Ref) -> np.ndarray:
        return self.bufs[ref.buf][:, ref.off : ref.off + ref.width]

    def _bind(self, op):
        B = self.bufs
        if isinstance(op, Linear):
            res, res_off = (B[op.res.buf], op.res.off) if op.res is not None else (_NO_MATRIX, -1)
            nw = op.nw if op.nw is not None else _NO_VECTOR
            nb = op.nb if op.nb is not None else _NO_VECTOR
            q = op.weight
            if isinstance(q, Int8Linear):
                return "qlinear.qlinear", (
                    B[op.x.buf],
                    op.x.off,
                    q.mask,
                    self.qx,
                    self.qscale,
                    q.panels,
                    q.scale,
                    q.corr,
                    q.outliers,
                    q.outlier_w,
                    op.b,
                    int(op.act),
                    res,
                    res_off,
                    int(op.norm),
                    nw,
                    nb,
                    float(op.eps),
                    B[op.out.buf],
                    op.out.off,
                    self.threads,
                    self._next_weight.get(id(op), _NO_BYTES),
                )
            return "linear.linear", (
                B[op.x.buf],
                op.x.off,
                q.panels,
                op.b,
                int(op.act),
                res,
                res_off,
                int(op.norm),
                nw,
                nb,
                float(op.eps),
                B[op.out.buf],
                op.out.off,
                self.threads,
                self._next_weight.get(id(op), _NO_BYTES),
            )
        if isinstance(op, FeedForward):
            a, b = op.first, op.second
            nw = b.nw if b.nw is not None else _NO_VECTOR
            nb = b.nb if b.nb is not None else _NO_VECTOR
            return "linear.ffn", (
                B[a.x.buf],
                a.x.off,
                a.weight.panels,
                a.b,
                int(a.act),
                b.weight.panels,
                b.b,
                int(b.norm),
                nw,
                nb,
                float(b.eps),
                B[b.out.buf],
                b.out.off,
                self.ffn_scratch,
            )
        if isinstance(op, Attention):
            want = self.probs is not None
            probs = self.probs[op.layer] if want else _NO_PROBS
            scale = np.float32(op.head_dim**-0.5)
            args = (
                B[op.q.buf],
                op.q.off,
                B[op.k.buf],
                op.k.off,
                B[op.v.buf],
                op.v.off,
                self.mask_add,
                self.starts,
                op.heads,
                op.head_dim,
                scale,
                B[op.out.buf],
                op.out.off,
                self.threads,
                probs,
                int(want),
                self.kp,
                self.scores,
            )
            if _int8_attention(self._graph):  # the same arguments, then its threshold and scratch
                return "qattention.qattention", (*args, k_layout.INT8_ATTENTION_FROM, self.qatt_bytes, self.qatt_floats)
            return "attention.attention", args
        if isinstance(op, EmbedWords):
            if op.out.off != 0 or op.out.width != self.bufs[op.out.buf].shape[1]:
                raise RuntimeError(
                    f"graph error: the word embedding writes columns {op.out.off}.."
                    f"{op.out.off + op.out.width} of a {self.bufs[op.out.buf].shape[1]}-wide buffer; "
                    "its kernel writes whole rows"
                )
            scale = op.scale if op.scale is not None else _NO_SCALES
            return "embeddings.embed_words", (
                self.input_ids,
                self.attention_mask,
                op.table,
                scale,
                int(op.trigram),
                self.trigram_mask_aware,
                self.starts,
                B[op.out.buf],
            )
        if isinstance(op, EmbedPositions):
            if op.out.off != 0:
                raise RuntimeError(
                    f"graph error: the position embedding writes at column {op.out.off}; its kernel "
                    "writes from column 0"
                )
            return "embeddings.embed_positions", (
                self.position_ids,
                self.token_type_ids,
                op.positions,
                op.token_types,
                self.starts,
                B[op.out.buf],
            )
        if isinstance(op, AddNorm):
            r, r_off = (B[op.r.buf], op.r.off) if op.r is not None else (_NO_MATRIX, -1)
            return "norms.add_norm", (
                B[op.a.buf],
                op.a.off,
                r,
                r_off,
                op.out.width,
                int(op.norm),
                op.nw,
                op.nb,
                float(op.eps),
                B[op.out.buf],
                op.out.off,
            )
        if isinstance(op, FirstToken):
            return "embeddings.gather_rows", (B[op.x.buf], op.x.off, op.x.width, self.starts, B[op.out.buf])
        raise TypeError(f"no kernel for op {op!r}")  # pragma: no cover

    def set_inputs(
        self,
        input_ids,
        attention_mask,
        token_type_ids,
        position_ids,
        trigram_mask_aware: bool,
        lengths: np.ndarray | None = None,
    ):
        """Copy a call's inputs in; a ragged arena also takes each sequence's length (its real tokens)."""
        # (every call: arenas of one runner share memory, see Runner.carve)
        self.starts[0] = 0
        if self.ragged:
            np.cumsum(lengths, out=self.starts[1:])
        else:
            np.multiply(np.arange(1, self.batch + 1), self.seq, out=self.starts[1:])
        self.input_ids[...] = input_ids
        self.attention_mask[...] = attention_mask
        self.token_type_ids[...] = token_type_ids
        self.position_ids[...] = position_ids
        # additive mask: 0 for visible keys, float32 min for padding
        np.multiply(self.attention_mask == 0, MASK_MIN, out=self.mask_add)
        self.trigram_mask_aware[0] = int(trigram_mask_aware)


def _layout(dtype, shapes: dict) -> tuple[dict, int]:
    """Element offsets of each shape in one block (64-byte aligned) and the block's size."""
    align = 64 // np.dtype(dtype).itemsize
    offsets, total = {}, 0
    for name, shape in shapes.items():
        offsets[name] = total
        total += -(-int(np.prod(shape)) // align) * align
    return offsets, total + align


def _aligned_start(block: np.ndarray) -> int:
    """The index of ``block``'s first 64-byte-aligned element."""
    return (-block.ctypes.data // block.itemsize) % (64 // block.itemsize)


def _views(block: np.ndarray, shapes: dict, offsets: dict) -> dict:
    start = _aligned_start(block)
    return {
        name: block[start + offsets[name] : start + offsets[name] + int(np.prod(shape))].reshape(shape)
        for name, shape in shapes.items()
    }


def _carve(dtype, shapes: dict) -> dict:
    """Zeroed arrays of the given shapes, views of one fresh allocation."""
    offsets, total = _layout(dtype, shapes)
    return _views(np.zeros(total, dtype), shapes, offsets)


def _max_threads() -> int:
    return backend.get().max_threads


def ragged_lengths(attention_mask) -> np.ndarray | None:
    """Each sequence's length if the batch is right-padded (every row ones, then zeros, at least one
    one) and has padding to skip; else None (the batch runs padded)."""
    mask = np.asarray(attention_mask)
    lengths = mask.sum(axis=1)
    if lengths.min() < 1 or lengths.min() == mask.shape[1]:
        return None
    if not (mask == (np.arange(mask.shape[1]) < lengths[:, None])).all():
        return None
    return lengths.astype(np.int64)


_PROCESS_LOCK = threading.RLock()


def _launch_lock(own, kernels):
    """The lock a call must hold: the runner's own, or one for the whole process.

    Numba's ``workqueue`` threading layer (the fallback when neither OpenMP nor
    TBB is available) must not be entered from two threads at once, so with it
    every model in the process takes turns. Until the first parallel kernel has
    run the layer is unknown, and the process lock is used.
    """
    layer = kernels.threading_layer()
    return _PROCESS_LOCK if layer in (None, "workqueue") else own


class Runner:
    """Runs one graph; keeps a few arenas (least recently used dropped).

    Calls on one runner are serialised (its arenas are shared scratch); the
    weights are never copied per call or per thread.
    """

    def __init__(self, graph: Graph, max_arenas: int = 4, recipe: str | None = None):
        """``recipe``: what built ``graph`` (config, head, options), the same in any process for the
        same model: with one, plans bound on a native library are kept on disk (:mod:`mbengine.plans`)."""
        self.graph = graph
        self.max_arenas = max_arenas
        self._arenas: OrderedDict = OrderedDict()
        self._frames: OrderedDict = OrderedDict()  # (batch, want_probs, threads, ragged) -> Frame
        self._next_weight = next_weights(graph)  # the same for every arena: made once
        # How the arrays every plan passes besides its arena's (the graph's, the prefetch views, the
        # placeholders) cross to C, kept from one arena to the next: a new shape (each new length of a
        # single text, each ragged batch's token count) binds its buffers only. They live as long as
        # this runner, so their ids stay theirs.
        constants = (_NO_VECTOR, _NO_MATRIX, _NO_PROBS, _NO_BYTES, _NO_SCALES)
        kept = [*graph_arrays(graph), *self._next_weight.values(), *constants]
        self._lasting = ({}, frozenset(map(id, kept)))
        self._images = plans.Store(kept, recipe) if recipe is not None else None
        self._blocks: dict[str, np.ndarray] = {}
        self._lock = threading.RLock()
        self.kernels = None  # backend.NUMBA or the native library's: settled by the first arena

    @property
    def arenas(self) -> tuple:
        """The (batch, seq, want_probs, threads, rows) shapes whose arenas are kept, least recently used first."""
        return tuple(self._arenas)

    @property
    def block_bytes(self) -> int:
        """Bytes of the blocks this runner's arenas are carved from."""
        return sum(b.nbytes for b in self._blocks.values())

    def arena(
        self, batch: int, seq: int, want_probs: bool, threads: int | None = None, rows: int | None = None
    ) -> Arena:
        """The arena for this shape (``rows``: a ragged batch's real tokens; None: every position)."""
        if threads is None:
            threads = (self.kernels or backend.get()).get_num_threads()
        key = (batch, seq, want_probs, threads, rows)
        arena = self._arenas.get(key)
        if arena is None:
            arena = Arena(
                self.graph,
                batch,
                seq,
                want_probs,
                frame=self._frame(batch, seq, want_probs, threads, rows),
                threads=threads,
                next_weight=self._next_weight,
                rows=rows,
                kernels=self.kernels,
                lasting=self._lasting,
                images=self._images,
            )
            self.kernels = arena.kernels  # every arena of a runner runs on the same kernels
            self._arenas[key] = arena
            while len(self._arenas) > self.max_arenas:
                self._arenas.popitem(last=False)
        self._arenas.move_to_end(key)
        return arena

    def _frame(self, batch: int, seq: int, want_probs: bool, threads: int, rows: int | None) -> Frame:
        """The frame of this shape's family, made (or replaced by a larger one: its arenas keep the old
        one) when the shape does not fit. Capacity is rounded up (:func:`_room`), so a stream of
        ever-new lengths makes few frames: at most 16 up to 512 positions."""
        key = (batch, want_probs, threads, rows is not None)
        frame = self._frames.get(key)
        if frame is None or not frame.fits(seq, rows):
            old_seq, old_rows = (0, 0) if frame is None else (frame.seq, frame.rows or 0)
            cap_seq, cap_rows = _room(max(seq, old_seq), None if rows is None else max(rows, old_rows))
            frame = Frame(self.graph, batch, cap_seq, cap_rows, want_probs, self.carve)
            self._frames[key] = frame  # (after the carve, which may have dropped every frame)
            while len(self._frames) > self.max_arenas:
                self._frames.popitem(last=False)
        self._frames.move_to_end(key)
        return frame

    def carve(self, dtype, shapes: dict) -> dict:
        """Views for an arena, in this runner's shared block of ``dtype`` (grown when too small).

        Arenas of one runner never run at the same time (the runner's lock) and no
        buffer carries anything from one call to the next, so they can share
        memory: the process keeps one block per runner, sized by the largest
        shape seen, instead of allocating and freeing buffers as shapes change.
        When the block must grow, the arenas built on the old one are dropped.
        """
        offsets, total = _layout(dtype, shapes)
        key = np.dtype(dtype).str
        block = self._blocks.get(key)
        if block is None or block.size < total:
            if block is not None:  # the old block stays alive while its arenas and frames are
                self._arenas.clear()
                self._frames.clear()
            block = self._blocks[key] = np.zeros(max(total, 0 if block is None else block.size * 3 // 2), dtype)
        return _views(block, shapes, offsets)

    def run(
        self,
        input_ids,
        attention_mask,
        token_type_ids,
        position_ids,
        *,
        want_probs=False,
        trigram_mask_aware=True,
        profile: dict | None = None,
        collect=None,
        observe=None,
        ragged=False,
    ):
        """Run the graph; ``collect(arena)`` copies outputs out while the lock is held.

        With ``profile`` (a dict), the wall time of each op is added under its name.
        ``observe(op, arena)``, when given, is called after each op (calibration).
        ``ragged``: run only the real tokens (module doc) when the batch is right-padded
        and no attention probabilities are wanted; ``arena.ragged`` tells which ran.
        """
        batch, seq = input_ids.shape
        lengths = ragged_lengths(attention_mask) if ragged and not want_probs else None
        rows = None if lengths is None else int(lengths.sum())
        with _launch_lock(self._lock, self.kernels or backend.get()), self._lock:
            arena = self.arena(batch, seq, want_probs, rows=rows)
            arena.activate()
            arena.set_inputs(input_ids, attention_mask, token_type_ids, position_ids, trigram_mask_aware, lengths)
            if observe is not None:
                for (_, kernel, args), op in zip(arena.plan, self.graph.ops):
                    kernel(*args)
                    observe(op, arena)
            elif profile is None:
                for _, kernel, args in arena.plan:
                    kernel(*args)
            else:
                for name, kernel, args in arena.plan:
                    t0 = time.perf_counter()
                    kernel(*args)
                    profile[name] = profile.get(name, 0.0) + time.perf_counter() - t0
            return collect(arena)
