"""One model shared by several threads gives each caller exactly its sequential result."""

import threading

import numpy as np

from mbengine import MobileBertModel
from mbengine.cli import random_checkpoint
from mbengine.config import MobileBertConfig


def test_threads_share_a_model_and_get_sequential_results(tmp_path):
    config = MobileBertConfig(
        vocab_size=80,
        hidden_size=32,
        embedding_size=16,
        intra_bottleneck_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=40,
    )
    model = MobileBertModel.from_pretrained(random_checkpoint(str(tmp_path), config, seed=2, std=0.2))
    rng = np.random.default_rng(0)
    jobs = []
    for _ in range(480):  # 8 threads x 60 calls
        batch, seq = int(rng.integers(1, 6)), int(rng.integers(1, 40))
        ids = rng.integers(0, 80, (batch, seq))
        mask = (np.arange(seq)[None] < rng.integers(1, seq + 1, (batch, 1))).astype(np.int64)
        jobs.append((ids, mask))
    expected = [model(ids, attention_mask=mask).last_hidden_state for ids, mask in jobs]
    results = [None] * len(jobs)
    errors = []

    def worker(start):  # each thread takes every 8th job, all threads at once
        try:
            for i in range(start, len(jobs), 8):
                ids, mask = jobs[i]
                results[i] = model(ids, attention_mask=mask).last_hidden_state
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for i, (got, want) in enumerate(zip(results, expected)):
        np.testing.assert_array_equal(got, want, err_msg=f"job {i}")
