"""The int8 attention prototype against the float32 attention kernel, one layer's worth.

    python -m bench qattention [--seq 128 384] [--threads 1 2] [--repeats 200]

kernels/qattention.py (both products on the int8 linear's tiles, the softmax in float32; not yet
used by the model) and kernels/attention.py run on the same random q, k, v of one sequence with
MobileBERT's 4 heads of 32, timed alternately (one call of each in turn), medians. Each one's
error is against float64 attention: the largest difference over the largest |output|.
Results: bench/results/qattention.json and qattention.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench import common

HEADS, D = 4, 32


def reference(qkv: np.ndarray, scale: float) -> np.ndarray:
    W = HEADS * D
    out = np.zeros((qkv.shape[0], W))
    for h in range(HEADS):
        q, k, v = (qkv[:, i * W + h * D : i * W + (h + 1) * D].astype(np.float64) for i in range(3))
        s = scale * q @ k.T
        p = np.exp(s - s.max(axis=1, keepdims=True))
        out[:, h * D : (h + 1) * D] = (p / p.sum(axis=1, keepdims=True)) @ v
    return out


def run(args) -> dict:
    import numba

    from mbengine.kernels import attention, qattention

    env = common.environment()
    common.print_environment(env)
    W = HEADS * D
    scale = D**-0.5
    rows = []
    for threads in args.threads:
        numba.set_num_threads(threads)
        for seq in args.seq:
            rng = np.random.default_rng(seq)
            qkv = rng.standard_normal((seq, 3 * W)).astype(np.float32)
            mask_add = np.zeros((1, seq), np.float32)
            starts = np.array([0, seq], np.int64)
            probs = np.zeros((1, 1, 1, 1), np.float32)
            kp_shape, sc_shape = attention.scratch_shapes(1, seq, HEADS, D, max(args.threads))
            kp, sc = np.zeros(kp_shape, np.float32), np.zeros(sc_shape, np.float32)
            q_scratch = qattention.scratch(1, seq, HEADS, D, max(args.threads))
            outs = {"float32": np.zeros((seq, W), np.float32), "int8": np.zeros((seq, W), np.float32)}
            calls = {
                "float32": lambda: attention.attention(
                    qkv,
                    0,
                    qkv,
                    W,
                    qkv,
                    2 * W,
                    mask_add,
                    starts,
                    HEADS,
                    D,
                    scale,
                    outs["float32"],
                    0,
                    threads,
                    probs,
                    0,
                    kp,
                    sc,
                ),  # fmt: skip
                "int8": lambda: qattention.qattention(
                    qkv,
                    0,
                    qkv,
                    W,
                    qkv,
                    2 * W,
                    mask_add,
                    starts,
                    HEADS,
                    D,
                    np.float32(scale),
                    outs["int8"],
                    0,
                    *q_scratch.values(),
                ),  # fmt: skip
            }
            samples = {name: [] for name in calls}
            for name, call in calls.items():
                call()  # compiled (or loaded from the cache) before the timing
            for _ in range(args.repeats):
                for name, call in calls.items():
                    t = time.perf_counter()
                    call()
                    samples[name].append(time.perf_counter() - t)
            ref = reference(qkv, scale)
            median = {name: float(np.median(s)) * 1e6 for name, s in samples.items()}
            for name in calls:
                rows.append(
                    {
                        "threads": threads,
                        "seq": seq,
                        "kernel": name,
                        "median us": round(median[name], 1),
                        "min us": round(float(np.min(samples[name])) * 1e6, 1),
                        "time / float32's": round(median[name] / median["float32"], 2),
                        "error vs float64": f"{np.abs(outs[name] - ref).max() / np.abs(ref).max():.1e}",
                    }
                )
                print(rows[-1], flush=True)
    return {"environment": env, "command": common.command_line(), "date": common.now(), "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq", type=int, nargs="+", default=[128, 384])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--name", default="qattention")
    parser.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = parser.parse_args(argv)
    data = run(args)
    rows = data["rows"]
    table = common.markdown_table(list(rows[0]), [list(r.values()) for r in rows])
    common.write_results(
        args.name,
        data,
        table=table,
        title="Int8 attention prototype against the float32 attention kernel",
        notes=[
            "one sequence, 4 heads of 32 (one MobileBERT layer's attention), random q, k, v ~ N(0, 1)",
            "the two kernels called alternately, medians; error: max |out - float64| / max |float64|",
        ],
    )
    print(table)
