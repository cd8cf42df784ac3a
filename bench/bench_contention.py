"""Threads on a busy machine: the full-size model at 1 and 2 threads, idle and next to busy processes.

    python -m bench contention [--busy 0 1 2] [--calls 30] [--layers 24]

An app rarely has the CPU to itself. Each cell is a fresh process (so each
threading configuration starts clean) that loads the same engine checkpoint and
times ``--calls`` calls at batch 1 x seq 128, while ``busy`` other processes spin
a pure-Python loop (one core each). Configurations: Numba's default threading
layer (OpenMP here), OpenMP with ``OMP_WAIT_POLICY=passive`` (idle threads sleep
instead of spinning), and the ``workqueue`` layer. Medians and minimums.
Results: bench/results/contention.json and contention.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from bench import common

CONFIGS = {  # name: extra environment
    "omp (default)": {},
    "omp, OMP_WAIT_POLICY=passive": {"OMP_WAIT_POLICY": "passive"},
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
}

CHILD = r"""
import json, sys, time
import numpy as np
import mbengine, numba
path, threads, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = mbengine.MobileBertModel.from_pretrained(path, threads=threads)
ids = np.random.default_rng(0).integers(1000, 30000, (1, 128))
for _ in range(3):
    model(ids)
times = []
for _ in range(calls):
    t = time.perf_counter()
    model(ids)
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "layer": numba.threading_layer()}))
"""

SPIN = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def measure(path: str, threads: int, calls: int, env_extra: dict) -> dict:
    env = dict(os.environ, **env_extra)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, path, str(threads), str(calls)],
        env=env,
        cwd=common.CHILD_CWD,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = ap.parse_args(argv)
    from mbengine.cli import random_checkpoint
    from mbengine.config import MobileBertConfig
    from mbengine.converters import engine
    from mbengine.modeling import MobileBertModel

    rows = []
    with tempfile.TemporaryDirectory(prefix="mbengine-contention-") as tmp:
        hf = random_checkpoint(os.path.join(tmp, "hf"), MobileBertConfig(num_hidden_layers=args.layers))
        path = os.path.join(tmp, "engine")
        engine.write(MobileBertModel.from_pretrained(hf).weights, path)
        for name, extra in CONFIGS.items():
            measure(path, 1, 1, extra)  # fill the Numba cache for this configuration
        for busy in args.busy:
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
            try:
                for threads in args.threads:
                    for name, extra in CONFIGS.items():
                        r = measure(path, threads, args.calls, extra)
                        st = common.stats(r["times"])
                        rows.append(
                            {
                                "busy processes": busy,
                                "threads": threads,
                                "configuration": name,
                                "layer": r["layer"],
                                "median ms": round(st["median"] * 1e3, 2),
                                "min ms": round(st["min"] * 1e3, 2),
                            }
                        )
                        print(rows[-1], flush=True)
            finally:
                for p in spinners:
                    p.kill()
                    p.wait()
    data = {
        "environment": common.environment(),
        "command": common.command_line(),
        "date": common.now(),
        "rows": rows,
        "calls": args.calls,
        "layers": args.layers,
    }
    common.write_results(
        "contention",
        data,
        title="Threads on a busy machine (b1 s128, float32)",
        notes=[
            f"full-size MobileBERT ({args.layers} layers), random weights, engine checkpoint; "
            f"{args.calls} timed calls per cell, each cell a fresh process; busy processes "
            "spin a pure-Python loop"
        ],
    )
