"""PackedWeights: what pack() makes from canonical tensors, what the engine format keeps of it, and that
nothing changes it afterwards."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mbengine.config import MobileBertConfig
from mbengine.converters import canonical, engine
from mbengine.graph import build_graph, linear_ops, linear_shapes
from mbengine.kernels.simd import COLS
from mbengine.pack import pack
from mbengine.weights import PackedLinear, PackedWeights

from .strategies import small_configs

SMALL = MobileBertConfig(
    vocab_size=40,
    hidden_size=32,
    embedding_size=16,
    intra_bottleneck_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=32,
)


def tensors_for(config, head=None, pooler=True, seed=0):
    rng = np.random.default_rng(seed)
    shapes = canonical.model_shapes(config, head, pooler)
    return canonical.model_tensors(
        {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items() if k not in canonical.TIED},
        config,
        head,
        pooler,
    )


@given(n=st.integers(1, 3 * COLS + 1), k=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_packed_linear_gives_back_its_weight(n, k, seed):
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    packed = PackedLinear.from_dense(w)
    assert packed.panels.shape == (-(-n // COLS), k, COLS) and (packed.n, packed.k) == (n, k)
    np.testing.assert_array_equal(packed.dense(), w)
    assert not packed.panels.flags.writeable


@given(config=small_configs(), fuse=st.booleans(), head=st.sampled_from([None, *canonical.HEADS]))
def test_pack_makes_what_the_graph_reads(config, fuse, head):
    """One packed linear per op of the graph, with the op's (N, K); the other tensors kept as they were
    (the same arrays, not copies); the (N, K) weights not kept."""
    if head in ("pretraining", "masked_lm") and config.hidden_size < config.embedding_size:
        return  # (the masked-LM head's shapes need hidden >= embedding; its class refuses such configs)
    pooler = canonical.HEAD_USES_POOLER[head]
    tensors = tensors_for(config, head, pooler)
    weights = pack(config, tensors, head=head, pooler=pooler, fuse=fuse)
    shapes = linear_shapes(config, head, pooler, fused=fuse)
    assert {n: (w.n, w.k) for n, w in weights.linears.items()} == shapes
    assert all(weights.tensors[n] is tensors[n] for n in weights.tensors)
    assert not any(a.ndim == 2 and n.endswith(".weight") and "embeddings" not in n for n, a in weights.tensors.items())
    graph = build_graph(weights)
    assert {op.name for op in linear_ops(graph)} == set(weights.linears)
    if not fuse:  # one linear per Hugging Face linear that the graph runs
        assert all("+" not in name for name in weights.linears)


def test_fused_linears_hold_the_concatenated_weights():
    tensors = tensors_for(SMALL)
    weights = pack(SMALL, tensors)
    name = "encoder.layer.0.bottleneck.input+encoder.layer.0.bottleneck.attention+encoder.layer.0.attention.value"
    parts = ["bottleneck.input.dense", "bottleneck.attention.dense", "attention.self.value"]
    want = np.concatenate([tensors[f"encoder.layer.0.{p}.weight"] for p in parts])
    np.testing.assert_array_equal(weights.linears[name].dense(), want)


def test_packed_weights_cannot_be_changed():
    weights = pack(SMALL, tensors_for(SMALL))
    with pytest.raises(TypeError):
        weights.tensors["embeddings.word_embeddings.weight"] = np.zeros(1)
    with pytest.raises(TypeError):
        weights.linears["x"] = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        weights.head = "masked_lm"
    assert not next(iter(weights.linears.values())).panels.flags.writeable


def test_select_drops_the_head_and_pooler():
    weights = pack(SMALL, tensors_for(SMALL, "pretraining"), head="pretraining")
    base = weights.select(None, pooler=False)
    assert base.head is None and not base.pooler
    assert not any(n.startswith(("cls.", "pooler.")) for n in [*base.tensors, *base.linears])
    assert set(base.linears) == set(linear_shapes(SMALL, None, False))
    build_graph(base)  # a complete base model
    with pytest.raises(ValueError, match="not 'masked_lm'"):
        weights.select("masked_lm", pooler=True)


@pytest.mark.parametrize("head", [None, "pretraining", "question_answering"])
def test_engine_format_round_trip(tmp_path, head):
    pooler = canonical.HEAD_USES_POOLER[head]
    weights = pack(SMALL, tensors_for(SMALL, head, pooler), head=head, pooler=pooler)
    back = engine.read(engine.write(weights, tmp_path / "e"))
    assert isinstance(back, PackedWeights) and (back.head, back.pooler, back.dtype) == (head, pooler, "float32")
    assert back.linears.keys() == weights.linears.keys() and back.tensors.keys() == weights.tensors.keys()
    for name, w in weights.linears.items():
        np.testing.assert_array_equal(back.linears[name].panels, w.panels)
        assert back.linears[name].n == w.n
    for name, a in weights.tensors.items():
        np.testing.assert_array_equal(back.tensors[name], a)
