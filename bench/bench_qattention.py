"""The int8 attention kernel against the float32 one, one layer's worth, and its effect on real weights.

    python -m bench qattention [--seq 128 256 384] [--threads 1 2] [--repeats 200] [--texts 24]

kernels/qattention.py (both products on the int8 linear's tiles, the softmax in float32; an int8
model's attention for sequences of kernels.layout.INT8_ATTENTION_FROM tokens or more), its int8
path forced, and kernels/attention.py run on the same random q, k, v of one sequence with
MobileBERT's 4 heads of 32, timed alternately (one call of each in turn), medians. Each one's
error is against float64 attention: the largest difference over the largest |output|.

Then the whole int8 model with its attention both ways (``--model-rounds``; 0 skips it), and the
real-weight check (``--texts``; 0 skips it): the real all-MiniLM-L6-v2 (12 heads of 32)
quantized once and run with its attention both ways (the same int8 weights), each against the
float32 model on long real texts. Results: bench/results/qattention.json and qattention.md.
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
            q_scratch = qattention.scratch(seq, D, max(args.threads))
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
                    threads,
                    probs,
                    0,
                    kp,
                    sc,
                    0,  # long_from: every sequence in int8
                    *q_scratch,
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
    model = whole_model(args) if args.model_rounds else []
    real = real_weights(args) if args.texts else []
    return {
        "environment": env,
        "command": common.command_line(),
        "date": common.now(),
        "rows": rows,
        "model": model,
        "real": real,
    }


def whole_model(args) -> list[dict]:
    """The full-size model (mbengine.cli.random_checkpoint's seeded weights), quantized to int8 once and run with
    its attention both ways (the same int8 weights, the quantization summary saying int8 or float32), one
    sequence of each ``--seq`` length, the two called alternately: medians of the whole call and of the
    attention ops alone (the runner's per-op timer)."""
    import os
    import tempfile

    import numba

    import mbengine
    from bench.builders import quantize_engine
    from mbengine.cli import random_checkpoint

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        quantize_engine(random_checkpoint(os.path.join(tmp, "mobilebert")), os.path.join(tmp, "int8"))
        for threads in args.threads:
            numba.set_num_threads(threads)
            int8 = mbengine.MobileBertModel.from_pretrained(os.path.join(tmp, "int8"), threads=threads)
            w = int8.weights
            models = {
                "float32": int8.with_weights(w.replace(quantization={**w.quantization, "attention": "float32"})),
                "int8 scores": int8,
            }
            for seq in args.seq:
                ids = np.random.default_rng(seq).integers(1000, 30000, (1, seq))
                for m in models.values():
                    for _ in range(3):
                        m(ids)
                walls = {name: [] for name in models}
                attention = {name: [] for name in models}
                for _ in range(args.model_rounds):
                    for name, m in models.items():
                        ops = {}
                        t = time.perf_counter()
                        m(ids, profile=ops)
                        walls[name].append(time.perf_counter() - t)
                        attention[name].append(sum(s for op, s in ops.items() if op.endswith(".attention")))
                for name in models:
                    out.append(
                        {
                            "threads": threads,
                            "seq": seq,
                            "int8 model's attention": name,
                            "model median ms": round(float(np.median(walls[name])) * 1e3, 2),
                            "attention ops median ms": round(float(np.median(attention[name])) * 1e3, 2),
                        }
                    )
                    print(out[-1], flush=True)
    return out


def real_weights(args) -> list[dict]:
    """The real all-MiniLM-L6-v2, int8 with attention in int8 and in float32, on long real texts (the corpus
    benchmark's paragraphs, joined until a text holds ``--min-tokens``): each text's mean-pooled
    embedding against the float32 model's (cosine), and the last hidden state's largest difference over its
    largest value."""
    import mbengine
    from bench.bench_corpus import build_corpus, minilm_dir
    from mbengine import quantize as q8
    from mbengine.tokenizer import MobileBertTokenizer

    path = minilm_dir()
    tok = MobileBertTokenizer.from_pretrained(path)
    paragraphs, _ = build_corpus(40 * args.texts, seed=0)
    texts, current = [], []
    for p in paragraphs:
        current.append(p)
        if tok(" ".join(current))["input_ids"].shape[-1] >= args.min_tokens:
            texts.append(" ".join(current))
            current = []
            if len(texts) == args.texts:
                break
    fp32 = mbengine.MobileBertModel.from_pretrained(path)
    description, batches = q8.calibration_batches(fp32.config, sample_calibration(paragraphs), tok)
    weights, _ = q8.quantize(fp32.weights, batches, calibration=description)  # (attention: int8)
    float_attention = weights.replace(quantization={**weights.quantization, "attention": "float32"})
    models = {"float32": fp32.with_weights(float_attention), "int8": fp32.with_weights(weights)}
    rows = []
    for text in texts:
        enc = tok(text, truncation=True, max_length=args.max_length)
        inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        ref = fp32(**inputs).last_hidden_state[0].astype(np.float64)
        for attention, model in models.items():
            out = model(**inputs).last_hidden_state[0].astype(np.float64)
            a, b = out.mean(axis=0), ref.mean(axis=0)
            rows.append(
                {
                    "tokens": int(inputs["input_ids"].shape[1]),
                    "int8 model's attention": attention,
                    "cosine vs float32": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
                    "hidden error vs float32": float(np.abs(out - ref).max() / np.abs(ref).max()),
                }
            )
    return rows


def sample_calibration(paragraphs: list[str]) -> list[str]:
    """Calibration text: paragraphs the long texts are not made of (from the end of the shuffled pool)."""
    return paragraphs[-64:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq", type=int, nargs="+", default=[128, 256, 384])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--model-rounds", type=int, default=20, help="rounds of the whole-model A/B (0: none)")
    parser.add_argument("--texts", type=int, default=24, help="long real texts for the real-weight check (0: none)")
    parser.add_argument("--min-tokens", type=int, default=300)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--name", default="qattention")
    parser.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = parser.parse_args(argv)
    data = run(args)
    rows = data["rows"]
    table = common.markdown_table(list(rows[0]), [list(r.values()) for r in rows])
    if data["model"]:
        table += (
            "\n\nThe whole int8 model (full size, seeded random weights, one sequence), its attention in float32 "
            "and with int8 scores, the same weights, called alternately:\n\n"
        )
        table += common.markdown_table(list(data["model"][0]), [list(r.values()) for r in data["model"]])
    if data["real"]:
        summary = []
        for attention in ("float32", "int8"):
            mine = [r for r in data["real"] if r["int8 model's attention"] == attention]
            cos = [r["cosine vs float32"] for r in mine]
            err = [r["hidden error vs float32"] for r in mine]
            summary.append(
                [attention, len(mine), f"{min(r['tokens'] for r in mine)}-{max(r['tokens'] for r in mine)}",
                 f"{min(cos):.5f}", f"{np.median(cos):.5f}", f"{np.median(err):.2e}", f"{max(err):.2e}"]
            )  # fmt: skip
        table += (
            "\n\nReal weights: all-MiniLM-L6-v2 quantized to int8 (attention in float32 / in int8, every text "
            "long enough for int8 attention), against the float32 model, one text per call:\n\n"
        )
        table += common.markdown_table(
            ["int8 model's attention", "texts", "tokens", "min cosine", "median cosine", "median hidden error",
             "max hidden error"],
            summary,
        )  # fmt: skip
    common.write_results(
        args.name,
        data,
        table=table,
        title="Int8 attention against the float32 attention kernel",
        notes=[
            "one sequence, 4 heads of 32 (one MobileBERT layer's attention), random q, k, v ~ N(0, 1)",
            "the two kernels called alternately, medians; error: max |out - float64| / max |float64|",
        ],
    )
    print(table)
