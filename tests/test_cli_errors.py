"""Every command-line error is one line, ``mbengine: error: ...``, with the documented exit status.

Status 2 for a bad command line (argparse's own errors included), 1 for what
the command could not do with what it was given. A table walks the error paths
one by one; a Hypothesis test then mutates argument lists built from the same
pieces and checks that whatever happens, no traceback escapes and an error is
one line in that format.
"""

import io
import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbengine import cli
from mbengine.config import MobileBertConfig

SMALL = dict(
    vocab_size=300,
    hidden_size=32,
    embedding_size=16,
    intra_bottleneck_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=32,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    mlm, _ = cli.demo_checkpoint(str(root / "mlm"), MobileBertConfig(**SMALL))
    # a masked-LM checkpoint whose config names no architecture, with a pooler that has weights
    noarch, _ = cli.demo_checkpoint(str(root / "noarch"), MobileBertConfig(**SMALL, classifier_activation=True))
    config = json.loads((root / "noarch" / "config.json").read_text())
    del config["architectures"]
    (root / "noarch" / "config.json").write_text(json.dumps(config))
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.txt").write_bytes(b"\n  \n")
    (root / "latin1.txt").write_bytes(b"a [MASK] word\nun caf\xe9 [MASK]\n")
    (root / "long.txt").write_text("word " * 20000 + "[MASK]\n")
    return {
        "MLM": mlm,
        "NOARCH": noarch,
        "CONFIG": os.path.join(mlm, "config.json"),
        "EMPTY": str(root / "empty.txt"),
        "BLANK": str(root / "blank.txt"),
        "LATIN1": str(root / "latin1.txt"),
        "LONG": str(root / "long.txt"),
        "DIR": str(root),
        "MISSING": str(root / "no-such-thing"),
        "OUT": str(root / "out"),
    }


# (argv with placeholders, exit status, a piece of the message)
CASES = [
    (["fill-mask", "MLM", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["fill-mask"], 2, "the following arguments are required: model"),
    (["fill-mask", "MLM", "--top-k", "three"], 2, "argument --top-k: invalid int value: 'three'"),
    (["no-such-command"], 2, "invalid choice: 'no-such-command'"),
    (["info", "CONFIG"], 2, "is a file; this needs a checkpoint directory: did you mean its folder"),
    (["fill-mask", "CONFIG", "a [MASK]"], 2, "is a file; this needs a checkpoint directory"),
    (["run", "MLM", "--ids", "abc"], 2, "--ids must be integers separated by spaces or commas, got 'abc'"),
    (["run", "MLM", "--ids", " "], 2, "--ids is empty"),
    (["fill-mask", "MLM", "a [MASK]", "--max-length", "8"], 2, "--max-length applies only with --truncation"),
    (["fill-mask", "MLM", "--file", "DIR"], 2, "is a directory; give a text file"),
    (["question-answering", "MLM", "--question", "q", "--context", "c", "stray"], 2, "unrecognized arguments"),
    (["demo", "--seq", "0"], 2, "--seq must be in [3, 512], got 0"),
    (["fill-mask", "MISSING", "a [MASK]"], 1, "no-such-thing"),
    (["fill-mask", "MLM", "--file", "MISSING"], 1, "No such file or directory"),
    (["fill-mask", "MLM", "--file", "EMPTY"], 1, "has no text"),
    (["fill-mask", "MLM", "--file", "BLANK"], 1, "has no text"),
    (["fill-mask", "MLM", "--file", "LATIN1"], 1, "line 2 is not UTF-8 text"),
    (["fill-mask", "MLM", "--file", "LONG"], 1, "pass --truncation to cut it"),
    (["fill-mask", "MLM", "no mask here"], 1, "[MASK]"),
    (["text-classification", "MLM", "hello"], 1, "has a masked-LM head; MobileBertForSequenceClassification needs"),
    (["question-answering", "MLM", "--question", "q", "--context", "c"], 1, "needs the question answering head"),
    (["convert", "MLM", "MLM"], 1, "exists; pass --force to replace it"),
]


def run(argv, files, capsys, monkeypatch, stdin=b""):
    argv = [files.get(a, a) for a in argv]
    monkeypatch.chdir(files["DIR"])  # (what a mutated convert writes lands there)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    try:
        status = cli.main(argv)
    except SystemExit as e:  # argparse exits itself
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


PROGRESS = re.compile(r"^\[ *\d+\.\d s\] |^\r?\d+/\d+ texts")  # convert's steps, a long run's count


def assert_one_line_error(status, err):
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("mbengine: error: "), err
    assert err.strip().splitlines()[-1] == lines[0]  # the error comes last
    assert len(lines[0]) <= cli.MAX_ERROR + 60, len(lines[0])  # user text quoted in it is cut


@pytest.mark.parametrize("argv, status, piece", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_error_paths(files, capsys, monkeypatch, argv, status, piece):
    got, out, err = run(argv, files, capsys, monkeypatch)
    assert got == status, (got, err)
    assert_one_line_error(got, err)
    assert piece in err, err


def test_convert_reads_the_head_from_the_tensors(files, capsys, monkeypatch, tmp_path):
    """A config.json without "architectures": the tensor names say masked LM (not the base model, whose
    pooler this checkpoint lacks)."""
    status, out, err = run(["convert", "NOARCH", str(tmp_path / "engine")], files, capsys, monkeypatch)
    assert status == 0, err
    assert "wrote MobileBertForMaskedLM" in out
    meta = json.loads((tmp_path / "engine" / "config.json").read_text())["mbengine"]
    assert (meta["head"], meta["pooler"]) == ("masked_lm", False)


def test_empty_stdin_is_an_error(files, capsys, monkeypatch):
    status, _, err = run(["fill-mask", "MLM"], files, capsys, monkeypatch, stdin=b"\n\n")
    assert status == 1 and "stdin has no text" in err
    status, _, err = run(["fill-mask", "MLM"], files, capsys, monkeypatch, stdin=b"ok [MASK]\n\xff\n")
    assert status == 1 and "stdin: line 2 is not UTF-8 text" in err


def test_long_message_is_cut():
    """Whatever a message quotes, the CLI's line stays short (the last line of defence)."""
    line = cli.cli_message(ValueError("y" * 5000))
    assert len(line) <= cli.MAX_ERROR + 60 and "[cut: the message is 5000 characters]" in line


def test_long_quoted_text_is_cut(files, capsys, monkeypatch):
    long = "x" * 100000  # no [MASK] in it: the error quotes the text
    status, _, err = run(["fill-mask", "MLM", long], files, capsys, monkeypatch)
    assert status == 1
    assert_one_line_error(status, err)
    assert "(100000 characters)" in err and long not in err  # its first characters and its length


PIECES = st.sampled_from(
    [
        "NOARCH",
        "fill-mask",
        "text-classification",
        "question-answering",
        "feature-extraction",
        "info",
        "run",
        "convert",
        "next-sentence",
        "multiple-choice",
        "MLM",
        "CONFIG",
        "EMPTY",
        "LATIN1",
        "DIR",
        "MISSING",
        "--file",
        "--top-k",
        "--ids",
        "--question",
        "--context",
        "--truncation",
        "--max-length",
        "--json",
        "--threads",
        "--prompt",
        "--choice",
        "0",
        "-1",
        "1",
        "abc",
        "a [MASK]",
        "[MASK]",
        "",
        "--",
        "-",
        "--force",
        "--dtype",
        "int8",
        "--help",
    ]
)


@given(argv=st.lists(PIECES, min_size=0, max_size=7))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutated_command_lines(files, capsys, monkeypatch, argv):
    status, out, err = run(argv, files, capsys, monkeypatch)
    assert "Traceback" not in err and "Traceback" not in out
    if status not in (0, None):
        assert status in (cli.EXIT_ERROR, cli.EXIT_USAGE), status
        assert_one_line_error(status, err)
