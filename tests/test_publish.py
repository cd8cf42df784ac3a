"""Writing an engine checkpoint is never half-done (converters/publish.py).

* the destination is always the old version or the new one: a child process
  rewrites it in a loop, alternating two models, and is killed with SIGKILL
  at fixed points in time; after every kill the destination loads and is one
  of the two, and the next write leaves no staging directory behind;
* a live writer's staging directory is never removed by another process;
* permissions follow the umask; the same model gives byte-identical files.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import mbengine
from mbengine.cli import random_checkpoint
from mbengine.config import MobileBertConfig
from mbengine.converters import engine, publish

SMALL = dict(
    vocab_size=120,
    hidden_size=32,
    embedding_size=16,
    intra_bottleneck_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=32,
)
KEY = "embeddings.word_embeddings.weight"


def staging_leftovers(parent) -> list[str]:
    return sorted(n for n in os.listdir(parent) if n.startswith(publish.PREFIX))


def test_exchange_swaps_two_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "which").write_text("a")
    (b / "which").write_text("b")
    if not publish.exchange(str(a), str(b)):
        pytest.skip("this OS or filesystem has no atomic exchange (the two-rename fallback is used)")
    assert (a / "which").read_text() == "b" and (b / "which").read_text() == "a"


def test_rewrite_replaces_and_cleans(tmp_path):
    model = mbengine.MobileBertModel.from_pretrained(random_checkpoint(str(tmp_path / "hf"), MobileBertConfig(**SMALL)))
    dst = tmp_path / "out"
    engine.write(model.weights, dst)
    with pytest.raises(FileExistsError):
        engine.write(model.weights, dst)
    engine.write(model.weights, dst, force=True)
    assert staging_leftovers(tmp_path) == []
    assert sorted(os.listdir(dst)) == ["config.json", "model.safetensors"]


def test_same_model_gives_the_same_bytes(tmp_path):
    model = mbengine.MobileBertModel.from_pretrained(random_checkpoint(str(tmp_path / "hf"), MobileBertConfig(**SMALL)))
    engine.write(model.weights, tmp_path / "one")
    engine.write(model.weights, tmp_path / "two")
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


UMASK_SCRIPT = textwrap.dedent("""
    import os, stat, sys
    os.umask(0o027)
    import mbengine
    from mbengine.converters import engine
    model = mbengine.MobileBertModel.from_pretrained(sys.argv[1])
    engine.write(model.weights, sys.argv[2])
    print(oct(stat.S_IMODE(os.stat(sys.argv[2]).st_mode)),
          oct(stat.S_IMODE(os.stat(os.path.join(sys.argv[2], "model.safetensors")).st_mode)))
""")


def test_permissions_follow_the_umask(tmp_path):
    src = random_checkpoint(str(tmp_path / "hf"), MobileBertConfig(**SMALL))
    proc = subprocess.run(
        [sys.executable, "-c", UMASK_SCRIPT, src, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0o750", "0o640"]


HOLDER = textwrap.dedent("""
    import sys, time
    from mbengine.converters import publish
    with publish.Staging(sys.argv[1]) as tmp:
        print(tmp, flush=True)
        time.sleep(60)
""")


def test_a_live_writers_staging_survives_cleaning(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "dst")], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        staging = holder.stdout.readline().strip()
        assert os.path.isdir(staging)
        assert publish.clean(str(tmp_path)) == [] and os.path.isdir(staging)
    finally:
        holder.kill()
        holder.wait()
    assert publish.clean(str(tmp_path)) == [staging]  # its writer is dead now
    assert staging_leftovers(tmp_path) == []


WRITER = textwrap.dedent("""
    import sys
    import mbengine
    from mbengine.converters import engine
    models = [mbengine.MobileBertModel.from_pretrained(p) for p in sys.argv[2:4]]
    for m in models:
        m.runner()  # pack now, so the loop below only writes
    print("ready", flush=True)
    i = 0
    while True:
        engine.write(models[i % 2].weights, sys.argv[1], force=True)
        i += 1
""")
KILL_AFTER = [0.0, 0.013, 0.029, 0.041, 0.057, 0.083, 0.11, 0.17, 0.23, 0.31]  # seconds after "ready"


def test_killed_writer_never_leaves_a_half_written_checkpoint(tmp_path):
    srcs = [random_checkpoint(str(tmp_path / f"hf{s}"), MobileBertConfig(**SMALL), seed=s) for s in (0, 1)]
    tables = [mbengine.MobileBertModel.from_pretrained(p).weights.tensors[KEY] for p in srcs]
    dst = tmp_path / "out"
    engine.write(mbengine.MobileBertModel.from_pretrained(srcs[0]).weights, dst)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "nbc"))
    left = 0  # kills that left a staging directory (the next write must remove it)
    for delay in KILL_AFTER:
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(dst), *srcs], stdout=subprocess.PIPE, text=True, cwd=tmp_path, env=env
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        loaded = mbengine.MobileBertModel.from_pretrained(dst)  # old or new, whole
        assert any(np.array_equal(loaded.weights.tensors[KEY], t) for t in tables), f"killed after {delay} s: mixed"
        assert sorted(os.listdir(dst)) == ["config.json", "model.safetensors"]
        left += bool(staging_leftovers(tmp_path))
        engine.write(loaded.weights, tmp_path / "next", force=True)  # the next write beside it removes what the dead
        assert staging_leftovers(tmp_path) == [], f"killed after {delay} s: {staging_leftovers(tmp_path)}"  # left
    assert left >= 1, "no kill landed inside a write: the test checked nothing"
