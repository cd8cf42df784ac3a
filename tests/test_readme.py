"""Every code snippet in README.md runs, verbatim but for the checkpoint paths it names.

Python blocks run with ``path/to/checkpoint`` (and ``path/to/int8-checkpoint``) replaced; shell lines run in
bash, in a scratch directory with HOME and XDG_CACHE_HOME pointing into it,
with CHECKPOINT, HF_DIR, ENGINE_DIR, INT8_DIR and HF_CHECKPOINT replaced by
checkpoints built here (CHECKPOINT: one with the head its command needs). The
install lines are what .ci/run itself does and are skipped by name (SKIP);
anything else that is not run fails the test, so a new snippet cannot go
untested.
"""

import os
import re
import subprocess
import sys

import pytest

from mbengine import cli
from mbengine.config import MobileBertConfig

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
SKIP = {  # install steps: .ci/run performs them (and this test runs inside what they installed)
    "pip install . && mbengine demo": "mbengine demo",  # the demo half runs
    'pip install ".[test]" && pytest': None,
    "python3 -m venv ~/mbengine && . ~/mbengine/bin/activate": None,
    "pip install /path/to/mbengine": None,
    "sudo apt install gcc": None,  # a C compiler for the native kernel library: CI's machine has one
}
CONFIG = dict(
    hidden_size=64,
    embedding_size=32,
    intra_bottleneck_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=48,
    max_position_embeddings=512,
)
HEAD_OF = {
    "fill-mask": "masked_lm",
    "token-classification": "token_classification",
    "feature-extraction": "masked_lm",
    "question-answering": "question_answering",
}


def blocks() -> list[tuple[str, str]]:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def checkpoint(root, head: str) -> str:
    """A small random checkpoint (base model with pooler, plus ``head``) with the full 30522-token vocab size."""
    path = os.path.join(root, head)
    if os.path.isdir(path):
        return path
    config = MobileBertConfig(
        **CONFIG, extra={"id2label": {"0": "O", "1": "B-X", "2": "I-X"}} if head == "token_classification" else {}
    )
    config.extra["architectures"] = [
        {
            "masked_lm": "MobileBertForMaskedLM",
            "token_classification": "MobileBertForTokenClassification",
            "question_answering": "MobileBertForQuestionAnswering",
        }[head]
    ]
    cli.random_checkpoint(path, config, head=head, pooler=True)
    with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(cli.demo_vocabulary(config.vocab_size)) + "\n")
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    (root / "texts.txt").write_text("alice lives in paris .\n" + "word " * 300 + "\n")
    return root


def test_python_snippets(scratch):
    ran = 0
    for lang, code in blocks():
        if lang != "python":
            continue
        code = code.replace("path/to/int8-checkpoint", str(scratch / "python-int8"))
        code = code.replace("path/to/checkpoint", checkpoint(scratch, "masked_lm"))
        exec(compile(code, "README.md", "exec"), {})
        ran += 1
    assert ran >= 1


def shell_lines():
    for lang, code in blocks():
        if lang != "bash":
            continue
        for line in code.splitlines():
            if line.strip():
                yield line


@pytest.mark.parametrize("line", list(shell_lines()))
def test_shell_snippets(scratch, line):
    command = line.split("  #")[0].strip()
    if command in SKIP:
        command = SKIP[command]
        if command is None:
            return  # an install step (module doc)
    env = dict(
        os.environ,
        HOME=str(scratch),
        XDG_CACHE_HOME=str(scratch / "cache"),
        NUMBA_NUM_THREADS="4",
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    words = command.split()
    task = words[1] if len(words) > 1 else ""
    subs = {
        "CHECKPOINT": checkpoint(scratch, HEAD_OF.get(task, "masked_lm")),
        "HF_CHECKPOINT": checkpoint(scratch, "masked_lm"),
        "HF_DIR": checkpoint(scratch, "masked_lm"),
        "ENGINE_DIR": str(scratch / "engine"),
        "INT8_DIR": str(scratch / "int8"),
    }
    for name, value in subs.items():
        command = re.sub(rf"\b{name}\b", value, command)
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", command],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{line}\n$ {command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
