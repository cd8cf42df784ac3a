"""Many calls with varying shapes: memory reaches a plateau and results never drift."""

import numpy as np

from mbengine import MobileBertModel
from mbengine.cli import random_checkpoint
from mbengine.config import MobileBertConfig


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_rss_plateau_and_stable_results(tmp_path):
    config = MobileBertConfig(vocab_size=100, hidden_size=32, embedding_size=16, intra_bottleneck_size=16,
                              num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                              max_position_embeddings=64)
    model = MobileBertModel.from_pretrained(random_checkpoint(str(tmp_path), config, seed=1, std=0.2))
    rng = np.random.default_rng(0)
    probe = rng.integers(0, 100, (2, 13))
    reference = model(probe).last_hidden_state

    def call():
        batch, seq = int(rng.integers(1, 9)), int(rng.integers(1, 65))
        ids = rng.integers(0, 100, (batch, seq))
        mask = (np.arange(seq)[None] < rng.integers(1, seq + 1, (batch, 1))).astype(np.int64)
        model(ids, attention_mask=mask)

    for _ in range(300):  # warm-up: arenas for the shapes seen most, allocator pools
        call()
    start = rss_mib()
    peak = start
    for i in range(2000):
        call()
        if i % 100 == 0:
            peak = max(peak, rss_mib())
            np.testing.assert_array_equal(model(probe).last_hidden_state, reference)
    assert peak - start < 64, f"RSS grew from {start:.0f} to {peak:.0f} MiB after warm-up"
    assert len(model.runner()._arenas) <= model.runner().max_arenas
