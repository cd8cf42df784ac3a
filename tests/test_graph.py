"""The graph builder's structure per config variant, the fusion rewrite, the runner's profile and arenas."""

import numpy as np
import pytest

from mbengine import MobileBertModel
from mbengine.cli import random_checkpoint
from mbengine.config import MobileBertConfig
from mbengine.graph import (
    AddNorm,
    Attention,
    EmbedPositions,
    EmbedWords,
    FeedForward,
    Linear,
    build_graph,
    graph_arrays,
    linear_ops,
)
from mbengine.kernels.names import Norm
from mbengine.pack import pack

SMALL = dict(
    vocab_size=40,
    hidden_size=32,
    embedding_size=16,
    intra_bottleneck_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=32,
)


def weights_for(config):
    from mbengine.converters.canonical import expected_shapes

    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in expected_shapes(config).items()}


def linears(graph):
    return list(linear_ops(graph))


def graph_of(config, fuse=True, **options):
    return build_graph(pack(config, weights_for(config), fuse=fuse), **options)


def test_default_variant_fuses_bottlenecks_with_value_and_query_with_key():
    config = MobileBertConfig(**SMALL)
    graph = graph_of(config)
    names = [op.name for op in linears(graph)]
    layer0 = [n for n in names if n.startswith("encoder.layer.0.")]
    assert layer0[0] == (
        "encoder.layer.0.bottleneck.input+encoder.layer.0.bottleneck.attention+encoder.layer.0.attention.value"
    )
    assert layer0[1] == "encoder.layer.0.attention.query+encoder.layer.0.attention.key"
    fused = next(op for op in linears(graph) if op.name == layer0[0])
    assert (fused.weight.n, fused.weight.k) == (16 + 16 + 16, 32) and fused.norm == Norm.NONORM
    # value has no norm: the merged NoNorm is the identity on its columns
    np.testing.assert_array_equal(fused.nw[32:], 1.0)
    np.testing.assert_array_equal(fused.nb[32:], 0.0)


def test_layer_norm_blocks_fusion_of_normalised_projections():
    config = MobileBertConfig(**SMALL, normalization_type="layer_norm")
    graph = graph_of(config)
    first = [op for op in linears(graph) if op.name.startswith("encoder.layer.0.")][:3]
    assert [op.name.rsplit(".", 2)[-2:] for op in first][:2] == [["bottleneck", "input"], ["bottleneck", "attention"]]
    assert first[0].norm == Norm.LAYERNORM


@pytest.mark.parametrize(
    "changes, qkv_merged",
    [
        (dict(use_bottleneck=False), True),  # q, k, v all read the hidden state
        (dict(use_bottleneck_attention=True), True),  # all read the input bottleneck
        (dict(key_query_shared_bottleneck=False, intra_bottleneck_size=32), True),
        (dict(), False),  # v reads the hidden state, q/k the shared bottleneck
    ],
)
def test_attention_inputs_per_variant(changes, qkv_merged):
    config = MobileBertConfig(**{**SMALL, **changes})
    graph = graph_of(config)
    names = [op.name for op in linears(graph)]
    merged = "encoder.layer.0.attention.query+encoder.layer.0.attention.key+encoder.layer.0.attention.value"
    assert (merged in names) == qkv_merged
    att = [op for op in graph.ops if isinstance(op, Attention)]
    assert len(att) == config.num_hidden_layers


@pytest.mark.parametrize("nffn", [1, 2, 4])
def test_ffn_count(nffn):
    config = MobileBertConfig(**SMALL, num_feedforward_networks=nffn)
    graph = graph_of(config, fuse=False)
    inter = [op for op in linears(graph) if op.name.endswith("intermediate")]
    assert len(inter) == nffn * config.num_hidden_layers


def test_graph_arrays_lists_every_array_the_ops_hold_once():
    """What a runner keeps bound to C across arenas: every array of every op, by op type."""
    graph = graph_of(MobileBertConfig(**SMALL), fuse_ffn=True)
    assert any(isinstance(op, FeedForward) for op in graph.ops)

    def of_linear(op):
        return [op.b, op.nw, op.nb, op.weight.panels]

    expected = []
    for op in graph.ops:
        if isinstance(op, Linear):
            expected += of_linear(op)
        elif isinstance(op, FeedForward):
            expected += of_linear(op.first) + of_linear(op.second)
        elif isinstance(op, EmbedWords):
            expected += [op.table, op.scale]
        elif isinstance(op, EmbedPositions):
            expected += [op.positions, op.token_types]
        elif isinstance(op, AddNorm):
            expected += [op.nw, op.nb]
    expected = {id(a) for a in expected if a is not None}
    found = graph_arrays(graph)
    assert len({id(a) for a in found}) == len(found) and {id(a) for a in found} == expected


def test_unfused_graph_has_one_linear_per_hf_linear():
    config = MobileBertConfig(**SMALL)
    graph = graph_of(config, fuse=False)
    hf_linears = [
        k
        for k in weights_for(config)
        if k.endswith(".weight") and weights_for(config)[k].ndim == 2 and "embeddings." not in k
    ]
    assert len(linears(graph)) == len(hf_linears) + 1  # + the embedding transformation


def test_profile_names_every_op_and_arenas_are_reused(tmp_path):
    config = MobileBertConfig(**SMALL)
    model = MobileBertModel.from_pretrained(random_checkpoint(str(tmp_path), config))
    ids = np.ones((2, 5), np.int64)
    profile = {}
    model(ids, profile=profile)
    graph = model.runner().graph
    assert set(profile) == {op.name for op in graph.ops}
    assert all(t >= 0 for t in profile.values())
    runner = model.runner()
    arena = runner.arena(2, 5, False)
    model(ids)
    assert runner.arena(2, 5, False) is arena  # same buffers, no reallocation
    for shape in [(1, 3), (1, 4), (1, 6), (1, 7), (1, 8)]:
        model(np.ones(shape, np.int64))
    assert len(runner.arenas) <= runner.max_arenas


def test_arenas_of_one_family_share_a_frame_and_stay_correct_as_it_grows(tmp_path):
    """Arenas of one (batch, want_probs, threads, ragged) family are the leading parts of one frame's
    arrays (the same addresses at every shape, what lets a native plan be shared); a shape that does not
    fit makes a larger frame, and the arenas of the old one keep giving the same outputs."""
    from mbengine.runner import ROOM_POSITIONS

    config = MobileBertConfig(**{**SMALL, "max_position_embeddings": 2 * ROOM_POSITIONS})
    path = random_checkpoint(str(tmp_path), config, std=0.2)
    model = MobileBertModel.from_pretrained(path)
    runner = model.runner()
    ids = np.random.default_rng(1).integers(0, 40, (1, 2 * ROOM_POSITIONS))
    fresh = {n: MobileBertModel.from_pretrained(path)(ids[:, :n]).last_hidden_state for n in (3, 9, 40)}
    model(ids[:, :3])
    model(ids[:, :9])
    small, other = runner.arena(1, 3, False), runner.arena(1, 9, False)
    assert small.frame is other.frame and small.frame.seq == ROOM_POSITIONS
    for name, buf in small.bufs.items():
        rows = 3 if runner.graph.buffers[name].rows == "tokens" else 1
        assert buf.ctypes.data == other.bufs[name].ctypes.data and buf.shape[0] == rows
    for name in ("qx", "kp", "mask_add", "input_ids", "starts"):
        assert getattr(small, name).ctypes.data == getattr(other, name).ctypes.data
    assert runner.arena(2, 5, False).frame is not small.frame  # another batch: another family
    model(ids[:, :40])  # 40 positions: a larger frame for the family
    assert runner.arena(1, 40, False).frame is not small.frame and runner.arena(1, 40, False).frame.seq >= 40
    for n in (9, 40, 3, 40, 9):  # each shape again, in turn: the arenas of both frames
        np.testing.assert_array_equal(model(ids[:, :n]).last_hidden_state, fresh[n])


@pytest.mark.parametrize("nffn, use_bottleneck", [(1, True), (4, True), (2, False)])
def test_feed_forward_fusion(tmp_path, nffn, use_bottleneck):
    """Every FFN pair becomes one FeedForward op; outputs equal the unfused graph's."""
    config = MobileBertConfig(**{**SMALL, "num_feedforward_networks": nffn, "use_bottleneck": use_bottleneck})
    fused = graph_of(config, fuse_ffn=True)
    plain = graph_of(config)
    assert sum(isinstance(op, FeedForward) for op in fused.ops) == nffn * config.num_hidden_layers
    assert not any(isinstance(op, FeedForward) for op in plain.ops)
    assert all(isinstance(op, Linear) for op in linear_ops(fused))
    path = random_checkpoint(str(tmp_path), config, std=0.3)
    ids = np.random.default_rng(4).integers(0, 40, (3, 11))
    b = MobileBertModel.from_pretrained(path)(ids).last_hidden_state
    model = MobileBertModel.from_pretrained(path, fuse_ffn=True)
    a = model(ids).last_hidden_state
    assert any(isinstance(op, FeedForward) for op in model.runner().graph.ops)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max())


@pytest.mark.parametrize("trigram_padding", ["mask", "hf"])
def test_skipped_padding_gives_the_same_real_positions(tmp_path, trigram_padding):
    """padding="skip" runs only the real tokens of a right-padded batch: the same values at the real
    positions as computing the padding, and as each sequence run alone; zeros at the padding."""
    from mbengine import MobileBertForMaskedLM

    config = MobileBertConfig(**SMALL)
    path = random_checkpoint(str(tmp_path), config, head="masked_lm", std=0.2)
    ids = np.random.default_rng(0).integers(0, 40, (3, 11))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 2:] = 0
    skip = MobileBertForMaskedLM.from_pretrained(path, padding="skip", trigram_padding=trigram_padding)
    full = MobileBertForMaskedLM.from_pretrained(path, padding="compute", trigram_padding=trigram_padding)
    a, b = skip(ids, mask, output_hidden_states=True), full(ids, mask, output_hidden_states=True)
    real = mask.astype(bool)
    np.testing.assert_allclose(a.logits[real], b.logits[real], rtol=1e-5, atol=1e-5 * np.abs(b.logits).max())
    for x, y in zip(a.hidden_states, b.hidden_states):
        np.testing.assert_allclose(x[real], y[real], rtol=1e-5, atol=1e-5 * np.abs(y).max())
    assert not a.logits[~real].any()
    if trigram_padding == "mask":
        for r in range(3):
            alone = full(ids[r : r + 1, : mask[r].sum()]).logits[0]
            np.testing.assert_allclose(a.logits[r, : mask[r].sum()], alone, rtol=1e-5, atol=1e-5 * np.abs(alone).max())
    assert skip.runner(True).arenas[-1][-1] == int(mask.sum())  # the arena held only the real tokens
