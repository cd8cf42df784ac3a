"""Soak: tens of thousands of calls with varying shapes in one process; RSS over time.

    python bench/bench_soak.py [--calls 20000]

A small random MobileBERT (no torch needed) runs batches of 1..8 x 1..64 tokens
with random right padding, then ``--fixed-calls`` more at one shape (4 x 32).
RSS (from /proc/self/statm) is sampled every 1000 calls. The runner keeps at
most 4 arenas (one per recent (batch, seq) shape), so random shapes rebuild an
arena's plan on nearly every call, and a repeating shape never does.
Results: bench/results/soak.json and soak.md.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from bench import common  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--fixed-calls", type=int, default=10000)
    args = ap.parse_args(argv)
    from mbengine import MobileBertModel
    from mbengine.cli import random_checkpoint
    from mbengine.config import MobileBertConfig

    config = MobileBertConfig(vocab_size=1000, hidden_size=64, embedding_size=32, intra_bottleneck_size=32,
                              num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                              max_position_embeddings=64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = MobileBertModel.from_pretrained(random_checkpoint(tmp, config, seed=0, std=0.2))
        rng = np.random.default_rng(0)
        probe = rng.integers(0, 1000, (2, 20))
        reference = model(probe).last_hidden_state
        t0 = time.perf_counter()
        tokens = 0
        for i in range(1, args.calls + args.fixed_calls + 1):
            fixed = i > args.calls
            batch, seq = (4, 32) if fixed else (int(rng.integers(1, 9)), int(rng.integers(1, 65)))
            mask = (np.arange(seq)[None] < rng.integers(1, seq + 1, (batch, 1))).astype(np.int64)
            model(rng.integers(0, 1000, (batch, seq)), attention_mask=mask)
            tokens += batch * seq
            if i % args.every == 0:
                same = bool(np.array_equal(model(probe).last_hidden_state, reference))
                rows.append({"calls": i, "shapes": "4 x 32" if fixed else "random", "RSS MiB": round(rss_mib(), 1),
                             "seconds": round(time.perf_counter() - t0, 1),
                             "calls/s": round(i / (time.perf_counter() - t0)), "probe identical": same})
                print(rows[-1], flush=True)
    data = {"environment": common.environment(), "command": common.command_line(), "date": common.now(),
            "rows": rows, "tokens": tokens}
    common.write_results("soak", data, title="Soak: RSS over many calls of varying shape",
                         notes=["model: 4-layer MobileBERT, hidden 64, random weights; batch 1..8 x seq 1..64, "
                                "random right padding; then one shape, 4 x 32"])


if __name__ == "__main__":
    main()
