"""Where the time goes: mbengine's per-op profile of the full-size model, against the GEMM peak.

    python -m bench profile [--seq 128] [--batch 1] [--threads 1 2] [--repeats 20] [--dtype float32|int8]

A full-size MobileBERT (google/mobilebert-uncased shapes, seeded random
weights; no torch needed) runs with the runner's per-op timer. Ops are grouped
by kind (the same op of every layer together). For each group: time, share,
GFLOP/s. The reference is the machine's measured float32 GEMM peak (NumPy's
BLAS on a large square matmul, same thread count): the "fp32 floor" is the
model's FLOPs at that peak. The runner's own cost (Python loop plus Numba
dispatch) is measured by running the same plan with a no-op kernel. With
``--dtype int8`` the same weights are quantized first (as ``mbengine
quantize`` does; the floor stays float32's, so int8 can exceed 100%).
Results: bench/results/profile.json and profile.md.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time

import numpy as np

from bench import common


def gemm_peak(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of NumPy's float32 matmul on n x n x n with ``threads`` BLAS threads."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    with threadpool_limits(threads, "blas"):
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def op_flops(op, batch: int, seq: int) -> float:
    from mbengine.graph import Attention, FeedForward, Linear

    if isinstance(op, FeedForward):
        return op_flops(op.first, batch, seq) + op_flops(op.second, batch, seq)
    T = batch * seq
    if isinstance(op, Linear):
        rows = T if not op.name.startswith(("pooler", "cls.seq", "classifier")) else batch
        return 2.0 * rows * op.x.width * op.out.width
    if isinstance(op, Attention):
        return 4.0 * batch * op.heads * seq * seq * op.head_dim
    return 0.0


def group_of(name: str) -> str:
    return re.sub(r"encoder\.layer\.\d+\.", "", name)


def run(args) -> dict:
    import numba

    import mbengine
    from mbengine.cli import random_checkpoint
    from mbengine.graph import FeedForward, Linear

    env = common.environment()
    common.print_environment(env)
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = random_checkpoint(os.path.join(tmp, "mobilebert"))
        if args.dtype == "int8":
            from bench.builders import quantize_engine

            quantize_engine(path, os.path.join(tmp, "int8"))
            path = os.path.join(tmp, "int8")
        for threads in args.threads:
            model = mbengine.MobileBertModel.from_pretrained(path, threads=threads)
            ids = np.random.default_rng(0).integers(1000, 30000, (args.batch, args.seq))
            for _ in range(3):
                model(ids)
            graph = model.runner().graph
            flops = {op.name: op_flops(op, args.batch, args.seq) for op in graph.ops}
            total_flops = sum(flops.values())
            matmul = [op for op in graph.ops if isinstance(op, (Linear, FeedForward))]
            linear_flops = sum(flops[op.name] for op in matmul)
            profiles = []
            walls = []
            for _ in range(args.repeats):
                p = {}
                t = time.perf_counter()
                model(ids, profile=p)
                walls.append(time.perf_counter() - t)
                profiles.append(p)
            per_op = {name: float(np.median([p[name] for p in profiles])) for name in profiles[0]}
            groups: dict[str, list] = {}
            for name, secs in per_op.items():
                g = groups.setdefault(group_of(name), [0.0, 0.0, 0])
                g[0] += secs
                g[1] += flops.get(name, 0.0)
                g[2] += 1
            wall = float(np.median(walls))
            ops_time = sum(per_op.values())
            linear_time = sum(per_op[op.name] for op in matmul)
            overhead = runner_overhead(model, ids, threads)
            peak = gemm_peak(threads)
            for name, (secs, fl, count) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
                rows.append(
                    {
                        "threads": threads,
                        "op": name,
                        "calls": count,
                        "ms": round(secs * 1e3, 3),
                        "share %": round(100 * secs / ops_time, 1),
                        "GFLOP/s": round(fl / secs / 1e9, 1) if fl else None,
                        "% of GEMM peak": round(100 * fl / secs / 1e9 / peak, 1) if fl else None,
                    }
                )
            summary.append(
                {
                    "threads": threads,
                    "dtype": args.dtype,
                    "batch": args.batch,
                    "seq": args.seq,
                    "wall ms": round(wall * 1e3, 2),
                    "ops ms": round(ops_time * 1e3, 2),
                    "runner overhead ms (no-op kernels)": round(overhead * 1e3, 2),
                    "GEMM peak GFLOP/s": round(peak, 1),
                    "model GFLOP": round(total_flops / 1e9, 3),
                    "fp32 floor ms": round(total_flops / peak / 1e6, 2),
                    "% of floor": round(100 * total_flops / peak / 1e9 / wall, 1),
                    "matmul GFLOP/s": round(linear_flops / linear_time / 1e9, 1),
                    "matmul % of GEMM peak": round(100 * linear_flops / linear_time / 1e9 / peak, 1),
                    "numba threading layer": numba.threading_layer(),
                }
            )
            print(summary[-1])
    return {
        "environment": env,
        "command": common.command_line(),
        "date": common.now(),
        "summary": summary,
        "rows": rows,
    }


def runner_overhead(model, ids, threads: int) -> float:
    """Median time of the plan with every kernel replaced by a no-op (same arguments)."""
    from numba import njit

    @njit(cache=False)
    def noop(*args):
        return None

    runner = model.runner()
    arena = runner.arena(ids.shape[0], ids.shape[1], False)

    def py_noop(*args):
        return None

    plan = []
    for _, _, args in arena.plan:
        try:
            noop(*args)  # compiles each signature once
            plan.append((noop, args))
        except Exception:  # a Python-level op (the embedding wrapper): a Python no-op costs what its call costs
            plan.append((py_noop, args))
    samples = []
    for _ in range(50):
        t = time.perf_counter()
        for kernel, args in plan:
            kernel(*args)
        samples.append(time.perf_counter() - t)
    return float(np.median(samples))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtype", choices=("float32", "int8"), default="float32")
    parser.add_argument("--name", default="profile")
    parser.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = parser.parse_args(argv)
    data = run(args)
    summary_table = common.markdown_table(list(data["summary"][0]), [list(s.values()) for s in data["summary"]])
    rows = data["rows"]
    ops_table = common.markdown_table(list(rows[0]), [list(r.values()) for r in rows])
    common.write_results(
        args.name,
        data,
        table=summary_table + "\n\n" + ops_table,
        title="Per-op profile of the full-size model",
        notes=[
            "model: MobileBertConfig() shapes (google/mobilebert-uncased), seeded random weights",
            "GEMM peak: NumPy float32 2048^3 matmul, best of 5, same thread count (threadpoolctl)",
            "ms per op group: median over calls of the runner's per-op timer, summed over layers",
        ],
    )
    print(summary_table)
    print(ops_table)
