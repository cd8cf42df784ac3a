"""PackedWeights: one model's weights as the kernels read them.

The data flow is one way::

    checkpoint --read--> canonical tensors --pack--> PackedWeights --quantize--> PackedWeights
                                                          |  ^
                                      converters.engine.write  converters.engine.read
                                                          v
                                          build_graph(PackedWeights) --> Runner

A :class:`PackedWeights` is made by :func:`mbengine.pack.pack` (from canonical
tensors), by :func:`mbengine.quantize.quantize` (a new one, the input left as
it was) or by :func:`mbengine.converters.engine.read`; nothing changes it
afterwards. Models hold one and build their graphs from it.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from . import backend
from .config import MobileBertConfig
from .kernels import layout as k_layout

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
# what task heads name their tensors and linear ops with
HEAD_NAMES = ("cls.", "classifier", "qa_outputs")


@dataclass(frozen=True, eq=False)
class PackedLinear:
    """A float32 (N, K) linear weight in the panels :func:`kernels.linear.linear` reads.

    ``panels[p, k, c] = W[p * COLS + c, k]``, shape (ceil(N / COLS), K, COLS),
    the last panel zero-padded.
    """

    panels: np.ndarray
    n: int  # output channels (N)

    @classmethod
    def from_dense(cls, w: np.ndarray) -> PackedLinear:
        return cls(_readonly(k_layout.pack(w, backend.layout().cols)), int(w.shape[0]))

    @property
    def k(self) -> int:
        return int(self.panels.shape[1])

    def dense(self) -> np.ndarray:
        """The (N, K) weight back (a copy)."""
        P, K, C = self.panels.shape
        return np.ascontiguousarray(self.panels.transpose(0, 2, 1).reshape(P * C, K)[: self.n])


@dataclass(frozen=True, eq=False)
class Int8Linear:
    """An int8 linear weight for :func:`kernels.qlinear.qlinear` (see :mod:`mbengine.quantize`).

    ``W[n, k] ~ scale[n] * Wq[n, k]`` for the inlier input channels; the
    ``outliers`` channels keep their float32 rows (``outlier_w``) and are added
    in the kernel's epilogue.
    """

    panels: np.ndarray  # (P, ceil(K / 4), 4 * COLS) int8 (kernels.qlinear.pack)
    scale: np.ndarray  # (P * COLS,) float32 per output channel, zero-padded
    corr: np.ndarray  # (P * COLS,) int32 activation-offset correction
    mask: np.ndarray  # (4 * ceil(K / 4),) int32 channel mask: 0 for the outlier channels
    outliers: np.ndarray  # (J,) int64 input channels applied in float32
    outlier_w: np.ndarray  # (J, N) float32: their rows of W.T
    n: int  # output channels (N)

    @classmethod
    def from_parts(
        cls,
        panels: np.ndarray,
        scale: np.ndarray,
        outliers: np.ndarray,
        outlier_w: np.ndarray,
        column_sums: np.ndarray | None = None,
    ) -> Int8Linear:
        """Assemble the kernel's arguments from the stored parts (panels, (N,) scales, outliers, and
        the panels' :func:`~kernels.layout.column_sums` if stored: else they are summed now).

        Panels packed for another vector width are repacked once for this CPU.
        """
        layout = backend.layout()
        cols = layout.cols
        if panels.shape[2] != 4 * cols:
            panels = k_layout.qpack(k_layout.qunpack(panels, scale.shape[0], panels.shape[1] * 4), cols)
            column_sums = None  # (of the stored panels' columns)
        if scale.shape[0] > panels.shape[0] * cols:
            raise ValueError(f"{scale.shape[0]} scales for {panels.shape[0] * cols} packed columns")
        padded = scale
        if scale.shape[0] < panels.shape[0] * cols or not scale.flags.c_contiguous:
            padded = np.zeros(panels.shape[0] * cols, np.float32)
            padded[: scale.shape[0]] = scale
        mask = k_layout.channel_mask(panels.shape[1] * 4, outliers)
        if not len(outliers):
            outliers, outlier_w = _no_outliers(int(scale.shape[0]))
        return cls(
            _readonly(panels),
            _readonly(padded),
            _readonly(k_layout.correction(panels, layout.offset, column_sums)),
            _readonly(mask),
            _readonly(outliers),
            _readonly(outlier_w),
            int(scale.shape[0]),
        )

    @property
    def stored_scale(self) -> np.ndarray:
        """The (N,) scales, without the padding."""
        return self.scale[: self.n]

    def column_sums(self) -> np.ndarray:
        """The panels' :func:`~kernels.layout.column_sums` (what an engine checkpoint stores)."""
        return k_layout.column_sums(self.panels)


Linear = PackedLinear | Int8Linear


@dataclass(frozen=True, eq=False)
class PackedWeights:
    """Everything a model's graph reads, under the names the graph asks for.

    ``tensors``: the plain tensors under Hugging Face names (no ``mobilebert.``
    prefix): embedding tables, biases, norm weights. ``linears``: every linear
    op's weight by op name; sibling projections merged by the graph
    (:func:`mbengine.graph.fuse_sibling_linears`) are one entry named
    ``"a+b+c"`` when ``fused``. ``row_scales``: the per-row scales of a table
    stored as int8 (the word embeddings of an int8 model). ``quantization``:
    what :func:`mbengine.quantize.quantize` decided, for an int8 model.
    """

    config: MobileBertConfig
    head: str | None
    pooler: bool
    tensors: Mapping[str, np.ndarray]
    linears: Mapping[str, Linear]
    row_scales: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    quantization: dict | None = None
    fused: bool = True

    def __post_init__(self):
        for name in ("tensors", "linears", "row_scales"):  # read-only views: nothing changes a PackedWeights
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def dtype(self) -> str:
        """ "int8" when any linear or table is int8, else "float32"."""
        if self.row_scales or any(isinstance(w, Int8Linear) for w in self.linears.values()):
            return "int8"
        return "float32"

    def replace(self, **changes) -> PackedWeights:
        return dataclasses.replace(self, **changes)

    def select(self, head: str | None, pooler: bool) -> PackedWeights:
        """These weights without their head (``head=None``) and with or without the pooler.

        Only dropping is possible: a pooler these weights lack stays missing
        (the graph then says so).
        """
        if head not in (None, self.head):
            raise ValueError(f"these weights have the {self.head or 'base model'} head, not {head!r}")

        def keep(name: str) -> bool:
            if name.startswith("pooler."):
                return pooler
            return head is not None or not name.startswith(HEAD_NAMES)

        return self.replace(
            head=head,
            pooler=pooler,
            tensors={n: a for n, a in self.tensors.items() if keep(n)},
            linears={n: w for n, w in self.linears.items() if keep(n)},
        )


@functools.lru_cache(maxsize=64)
def _no_outliers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only empty (outliers, outlier_w) for ``n`` outputs, one pair per width: most linears have no
    outliers (fewer distinct arrays to make at load and to bind at the first call)."""
    return _readonly(np.zeros(0, np.int64)), _readonly(np.zeros((0, n), np.float32))


def _readonly(a: np.ndarray) -> np.ndarray:
    if a.flags.writeable:  # (most arrays are views of a read-only map already; setting the flag costs ~1 us)
        a.flags.writeable = False
    return a
