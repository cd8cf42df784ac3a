"""Scale-out on Dask: a LocalCluster of processes, results in input order, a killed worker loses nothing."""

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

import mbengine
from mbengine.cli import random_checkpoint
from mbengine.config import MobileBertConfig

from .helpers import real_vocab_dir

distributed = pytest.importorskip("distributed", reason="Dask is an optional extra (pip install 'dask[distributed]')")

TEXTS = [f"text number {i} says {' '.join(['word'] * (i % 17))} and ends." for i in range(240)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    config = MobileBertConfig(
        vocab_size=30522,
        hidden_size=32,
        embedding_size=16,
        intra_bottleneck_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=64,
    )
    random_checkpoint(str(d), config, seed=0, std=0.2)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(real_vocab_dir(), name), d / name)
    return str(d)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_results_in_input_order(client, checkpoint):
    from mbengine.distributed import map_pipeline

    expected = mbengine.pipeline("feature-extraction", model=checkpoint)(TEXTS, pooling="mean")
    got = map_pipeline(client, "feature-extraction", checkpoint, TEXTS, chunk_size=16, pooling="mean")
    assert len(got) == len(TEXTS)
    np.testing.assert_allclose(np.stack(got), expected, rtol=1e-5, atol=1e-6)
    budget = map_pipeline(
        client, "feature-extraction", checkpoint, TEXTS, chunk_size=16, batch_tokens=40, pooling="mean"
    )
    np.testing.assert_allclose(np.stack(budget), expected, rtol=1e-5, atol=1e-6)


def test_killed_worker_loses_and_duplicates_nothing(client, checkpoint):
    from mbengine.distributed import map_pipeline

    expected = mbengine.pipeline("feature-extraction", model=checkpoint)(TEXTS, pooling="cls")
    result = {}

    def job():
        result["value"] = map_pipeline(client, "feature-extraction", checkpoint, TEXTS * 8, chunk_size=2, pooling="cls")

    pids = client.run(os.getpid)
    worker = threading.Thread(target=job)
    worker.start()
    time.sleep(1.0)  # the job is running: kill one worker process (its nanny starts a new one)
    assert worker.is_alive(), "the job finished before the kill: make it longer"
    os.kill(pids[sorted(pids)[0]], signal.SIGKILL)
    worker.join(timeout=120)
    assert not worker.is_alive()
    got = np.stack(result["value"])
    assert got.shape == (len(TEXTS) * 8, 32)
    np.testing.assert_allclose(got, np.concatenate([expected] * 8), rtol=1e-5, atol=1e-6)
    assert client.run(os.getpid).keys() != pids.keys()  # a worker really died and was replaced
