"""``mbengine demo``: text through tokenizer, model and pipeline offline, with options checked."""

import os

import pytest

from mbengine import cli
from mbengine.kernels.qsimd import VARIANT
from mbengine.tokenizer import SPECIAL_TOKENS


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo") / "mobilebert")


def test_demo_runs_text_end_to_end(demo_dir, capsys):
    assert cli.main(["demo", "--dir", demo_dir, "--repeats", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM weights" in out and "meaningless" in out
    assert "wrote" in out  # the first run writes the checkpoint
    task = next(line for line in out.splitlines() if line.startswith("task"))
    assert "fill-mask" in task and "[CLS]" in task and "[MASK]" in task and "[SEP]" in task
    assert "answer" in out and "median" in out
    assert "threads      1 " in out and f"int8 kernel on this CPU: {VARIANT}" in out
    with open(os.path.join(demo_dir, "vocab.txt"), encoding="utf-8") as f:
        vocab = f.read().splitlines()
    assert len(vocab) == 30522 and set(SPECIAL_TOKENS) <= set(vocab)
    assert cli.main(["demo", "--dir", demo_dir, "--repeats", "1", "--text", "a [MASK] day."]) == 0
    out = capsys.readouterr().out
    assert "wrote" not in out and "'a [MASK] day.'" in out  # written once, reused


def test_demo_on_given_weights(demo_dir, capsys):
    cli.main(["demo", "--dir", demo_dir, "--repeats", "1"])  # (makes sure the checkpoint exists)
    capsys.readouterr()
    assert cli.main(["demo", "--model", demo_dir, "--repeats", "1", "--seq", "16"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM" not in out and "fill-mask" in out and "batch 1 x seq 16" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seq", "0"], "--seq must be in [3, 512], got 0"),
        (["--seq", "513"], "--seq must be in [3, 512], got 513"),
        (["--batch", "0"], "--batch must be in [1, 256], got 0"),
        (["--repeats", "0"], "--repeats must be in [1, 100000], got 0"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (
            ["--model", "no/such/dir"],
            "--model no/such/dir: not a checkpoint directory (give a local directory with "
            "config.json and the weights, or a Hugging Face Hub model id)",
        ),
    ],
)
def test_demo_options_are_checked(tmp_path, capsys, argv, message):
    assert cli.main(["demo", "--dir", str(tmp_path / "never"), *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mbengine: error: ") and message in lines[0], captured.err
    assert not (tmp_path / "never").exists()  # checked before anything is written


def test_demo_default_directory_is_a_user_cache(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.demo_dir() == str(tmp_path / "mbengine" / "demo-mobilebert")
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    assert str(tmp_path / "mbengine" / "demo-mobilebert") in "".join(capsys.readouterr().out.split())  # (wrapped)
