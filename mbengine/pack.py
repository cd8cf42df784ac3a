"""pack(): canonical tensors -> PackedWeights, once.

The graph decides which linears exist and which siblings merge
(:func:`mbengine.graph.wire`); this walks its linears and packs each weight
into the kernel's panels. Every other tensor the graph reads is kept as it
is (memory-mapped arrays stay memory-mapped); the (N, K) weights, once packed,
are not kept.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .config import MobileBertConfig
from .graph import linear_ops, wire
from .weights import PackedLinear, PackedWeights


def pack(
    config: MobileBertConfig,
    tensors: Mapping[str, np.ndarray],
    *,
    head: str | None = None,
    pooler: bool = True,
    fuse: bool = True,
) -> PackedWeights:
    """The PackedWeights of a model with ``head`` (and the pooler or not).

    ``tensors``: canonical, validated tensors (``converters.canonical``).
    ``fuse``: merge sibling linears into wider ones (the default; ``False``
    keeps one packed weight per Hugging Face linear).
    """
    wiring = wire(config, tensors, head=head, pooler=pooler, fuse=fuse, packing=True)
    linears = {}
    for op in linear_ops(wiring.graph):
        linears[op.name] = PackedLinear.from_dense(op.dense)
        op.dense = None  # (this wiring is ours: its merged copies go as soon as they are packed)
    plain = {name: tensors[name] for name in wiring.expected}
    return PackedWeights(config, head, pooler, plain, linears, fused=fuse)
