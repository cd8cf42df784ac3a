"""The native kernel library against the Numba kernels it was built from: same outputs, same speed?

    python -m bench native [--repeats 30] [--threads 1 2]

Full-size random MobileBertModel (float32 and int8 engine checkpoints), the
native library built by ``mbengine warmup`` (in a child, into a temporary
folder). Then, in this one process, each checkpoint is loaded twice: one
model whose runner is bound to the Numba kernels, one bound to the native
library's (kernels.native; both share the one OpenMP thread pool). For each
shape and thread count: every output compared bit for bit, then the two
models called in alternation (``--repeats`` pairs; the order flips every
pair), medians and their ratio native / Numba. b1 s8 is the shape where a
call is mostly dispatch (~300 ops, each a ctypes call on one side and a
Numba dispatcher call on the other). "b1 s16-128 lengths" is a server's
single texts of 24 different lengths in turn (one timed round = one call of
each): every call is a new shape, whose arena (buffers and the plan bound to
the kernels) is made then, as a runner keeps only its last 4.
Results: bench/results/native.json and native.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from bench import common

SHAPES = ((1, 8, "full"), (1, 128, "full"), (8, 128, "ragged"), (1, 128, "lengths"))
LENGTHS = 24  # distinct lengths of the "lengths" round, drawn from 16..seq (numpy default_rng(0))


def run(args) -> dict:
    import numpy as np

    from bench.bench_memory import build_native
    from bench.builders import make_inputs
    from mbengine import MobileBertModel, backend
    from mbengine import quantize as q8
    from mbengine.cli import random_checkpoint
    from mbengine.converters import engine
    from mbengine.kernels import native

    os.environ.setdefault("MBENGINE_KERNELS", "numba")  # this process: Numba; the native models are bound below
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hf = random_checkpoint(os.path.join(tmp, "hf"))
        paths = {"float32": os.path.join(tmp, "float32"), "int8": os.path.join(tmp, "int8")}
        weights = MobileBertModel.from_pretrained(hf).weights
        engine.write(weights, paths["float32"])
        description, batches = q8.calibration_batches(weights.config, None, None)  # as `mbengine quantize`
        engine.write(q8.quantize(weights, batches, calibration=description)[0], paths["int8"])
        os.environ["MBENGINE_NATIVE_DIR"] = os.path.join(tmp, "native")
        t0 = time.perf_counter()
        build_native(paths, {"MBENGINE_NATIVE_DIR": os.environ["MBENGINE_NATIVE_DIR"]})
        print(f"native library built in {time.perf_counter() - t0:.1f} s (mbengine warmup, both checkpoints)")
        library, why = native.load()
        if library is None:
            raise RuntimeError(why)
        kernels = {"numba": backend.NUMBA, "native": backend.NativeKernels(library)}
        for dtype, path in paths.items():
            for threads in args.threads:
                models = {}
                for name, k in kernels.items():
                    model = models[name] = MobileBertModel.from_pretrained(path, threads=threads)
                    model.runner().kernels = k  # before its first arena: every arena binds to these
                for batch, seq, kind in SHAPES:
                    if kind == "lengths":
                        lengths = np.random.default_rng(0).choice(np.arange(16, seq + 1), LENGTHS, replace=False)
                        feeds = [make_inputs(1, int(n), weights.config.vocab_size) for n in lengths]
                        label = f"b1 s16-{seq} lengths"
                    else:
                        feeds = [make_inputs(batch, seq, weights.config.vocab_size, rows=kind)]
                        label = f"b{batch} s{seq} {kind}"
                    call = {name: (lambda m=m: [m(**feed) for feed in feeds]) for name, m in models.items()}
                    outs = {name: c() for name, c in call.items()}
                    same = all(
                        np.array_equal(getattr(a, f), getattr(b, f))
                        for a, b in zip(outs["native"], outs["numba"])
                        for f in ("last_hidden_state", "pooler_output")
                    )
                    used = {name: m.runner().kernels.name for name, m in models.items()}
                    times = {name: [] for name in call}
                    for i in range(args.repeats):
                        for name in list(call)[:: 1 if i % 2 == 0 else -1]:
                            t = time.perf_counter()
                            call[name]()
                            times[name].append(time.perf_counter() - t)
                    med = {name: statistics.median(t) for name, t in times.items()}
                    row = {
                        "dtype": dtype,
                        "threads": threads,
                        "shape": label,
                        "numba ms": round(med["numba"] * 1e3, 3),
                        "native ms": round(med["native"] * 1e3, 3),
                        "native / numba": round(med["native"] / med["numba"], 3),
                        "bit-identical": same,
                        "kernels": f"{used['numba']} / {used['native']}",
                    }
                    rows.append(row)
                    print(row, flush=True)
    return {"environment": common.environment(), "command": common.command_line(), "date": common.now(), "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--name", default="native")
    parser.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = parser.parse_args(argv)
    data = run(args)
    headers = list(data["rows"][0])
    table = common.markdown_table(headers, [[r[h] for h in headers] for r in data["rows"]])
    common.write_results(
        args.name,
        data,
        table=table,
        title="Native kernel library against the Numba kernels (full-size model, same process, interleaved)",
        notes=[
            "medians over the repeats, the two models called in alternation (order flipped every pair)",
            "bit-identical: last_hidden_state and pooler_output, native against Numba",
        ],
    )
    print(table)
