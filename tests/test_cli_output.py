"""Without --json, pipeline results print as aligned tables (mbengine.cli.table)."""

from mbengine import cli


def test_table_aligns_columns_and_formats_numbers():
    rows = [{"label": "positive", "score": 0.98765}, {"label": "neg", "score": 0.0123}]
    lines = cli.table(rows).splitlines()
    assert lines[0].split() == ["label", "score"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["positive", "0.9877"] and lines[3].split() == ["neg", "0.0123"]
    assert len({line.index(line.split()[-1]) + len(line.split()[-1]) for line in lines[2:]}) == 1  # right-aligned


def test_table_cuts_long_cells_and_fills_missing_keys():
    rows = [{"text": "w" * 500}, {"text": "short", "extra": 3}]
    lines = cli.table(rows).splitlines()
    assert lines[0].split() == ["text", "extra"]
    assert max(len(line) for line in lines) < cli.TABLE_CELL + 20 and "..." in lines[2]


def test_fill_mask_prints_a_table(tmp_path, capsys):
    from mbengine.config import MobileBertConfig

    small = MobileBertConfig(
        vocab_size=300,
        hidden_size=32,
        embedding_size=16,
        intra_bottleneck_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
    )
    path, _ = cli.demo_checkpoint(str(tmp_path / "mlm"), small)
    assert cli.main(["fill-mask", path, "a [MASK] b", "--top-k", "2", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# a [MASK] b"
    assert lines[1].split() == ["score", "token", "token_str", "sequence"] and len(lines) == 5


def test_warmup_loads_the_checkpoints_own_class(tmp_path, capsys):
    """A masked-LM checkpoint (no pooler) warms up as MobileBertForMaskedLM, with no --no-pooler needed
    (the README's Raspberry Pi steps convert then warm up exactly so)."""
    from mbengine.config import MobileBertConfig

    small = MobileBertConfig(
        vocab_size=300,
        hidden_size=32,
        embedding_size=16,
        intra_bottleneck_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
    )
    path, _ = cli.demo_checkpoint(str(tmp_path / "mlm"), small)
    assert cli.main(["warmup", path, "--threads", "1"]) == 0
    assert "(MobileBertForMaskedLM) ready" in capsys.readouterr().out
