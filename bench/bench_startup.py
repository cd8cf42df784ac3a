"""Start-up cost and footprint: import time, cold compile, warm first call, native library, peak RSS.

    python -m bench startup [--repeats 3] [--edge-repeats 9] [--no-ort] [--no-litert]

Every measurement runs in a fresh Python process (the parent only writes a
full-size random MobileBERT, as a Hugging Face checkpoint and as an engine
checkpoint). Cold = an empty Numba cache directory (every kernel compiles);
warm = the same directory again; native = the native kernel library
``mbengine warmup`` builds (kernels.native: no Numba in the process). ONNX
Runtime (the same model exported, float32 and its dynamic int8) is measured
the same way, from process start to first answer, and so is LiteRT (TFLite,
XNNPACK delegate; the same torch model converted by :mod:`bench.litert` to
float32 and dynamic-range int8 .tflite, once, then cached; ``--no-litert``
skips it, and it is skipped with the reason recorded if ai-edge-litert is not
installed or the conversion fails). The native, ONNX Runtime and LiteRT rows
run round-robin (one process of each in turn, ``--edge-repeats`` times,
after one untimed round that fills the page cache and keeps mbengine's plans:
its native rows are reported apart, as a model's first process), and
the comparison table gives, per precision and thread count, each system's
median first answer and the native library's against the faster peer's (a
ratio of medians from the same interleaved runs). Peak RSS is the child's own high-water mark
(VmHWM in /proc/self/status), as in bench_int8. The child's ``ru_maxrss`` is
kept in the JSON only: Linux folds the parent's RSS at fork into it, and this
parent holds a loaded model, so it overstates the child's peak.
Results: bench/results/startup.json and startup.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench import common

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
result = {}
if sys.argv[1] == "ort":
    import numpy as np
    import onnxruntime as ort
    result["import_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = int(sys.argv[3])
    sess = ort.InferenceSession(sys.argv[2], sess_options=so, providers=["CPUExecutionProvider"])
    t2 = time.perf_counter()
    ids = np.random.default_rng(0).integers(1000, 30000, (1, 128))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feed = {i.name: feed[i.name] for i in sess.get_inputs()}
    sess.run(None, feed)
    result["first_answer_epoch"] = time.time()
    t3 = time.perf_counter()
    sess.run(None, feed)
    t4 = time.perf_counter()
elif sys.argv[1] == "litert":
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    result["import_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    interpreter = Interpreter(model_path=sys.argv[2], num_threads=int(sys.argv[3]))  # XNNPACK by default
    interpreter.allocate_tensors()
    t2 = time.perf_counter()
    ids = np.random.default_rng(0).integers(1000, 30000, (1, 128))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    out = interpreter.get_output_details()[0]["index"]
    def call():
        for d in interpreter.get_input_details():  # names as the converter's signature, prefixed by TFLite
            (name,) = [n for n in feed if n in d["name"]]
            interpreter.set_tensor(d["index"], feed[name].astype(d["dtype"]))
        interpreter.invoke()
        return interpreter.get_tensor(out)
    call()
    result["first_answer_epoch"] = time.time()
    t3 = time.perf_counter()
    call()
    t4 = time.perf_counter()
else:
    import mbengine
    result["import_s"] = time.perf_counter() - t0
    if sys.argv[1] != "import":
        import numpy as np
        t1 = time.perf_counter()
        model = mbengine.MobileBertModel.from_pretrained(sys.argv[1], threads=int(sys.argv[2]))
        t2 = time.perf_counter()
        ids = np.random.default_rng(0).integers(1000, 30000, (1, 128))
        model(ids)
        result["first_answer_epoch"] = time.time()
        t3 = time.perf_counter()
        model(ids)
        t4 = time.perf_counter()
        from mbengine import backend
        result["kernels"] = backend.get().name
result["numba_loaded"] = any(m.split(".")[0] in ("numba", "llvmlite") for m in sys.modules)
if sys.argv[1] != "import":
    result.update(load_s=t2 - t1, first_call_s=t3 - t2, second_call_s=t4 - t3, load_and_first_s=t3 - t1)
with open("/proc/self/status") as f:
    result["peak_rss_mib"] = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
result["ru_maxrss_mib_overstated"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def child(args: list[str], env: dict) -> dict:
    """One fresh process; ``process_to_answer_s``: from just before it is started to its first answer."""
    # bytecode is written and reused, as in any pip-installed package (PYTHONDONTWRITEBYTECODE would
    # make every child compile mbengine's modules from source again: ~70 ms)
    full_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        env={**full_env, **env},
        cwd=common.CHILD_CWD,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "first_answer_epoch" in result:
        result["process_to_answer_s"] = result.pop("first_answer_epoch") - started
    return result


def _row(label: str, r: dict, keys=("load_s", "first_call_s", "second_call_s"), runs=None) -> dict:
    """One table row from the run ``r``; with ``runs`` (all repeats), also their median first answer."""
    row = {
        "measurement": label,
        "process start to first answer s": round(r["process_to_answer_s"], 3),
        "seconds": round(r["load_and_first_s"], 3),
        "peak RSS MiB": round(r["peak_rss_mib"]),
        "ru_maxrss MiB (overstated)": round(r["ru_maxrss_mib_overstated"]),
        "Numba loaded": r["numba_loaded"],
    }
    row.update({k.replace("_s", " s").replace("_", " "): round(r[k], 3) for k in keys})
    if runs is not None:
        row["median first answer s"] = round(statistics.median(x["process_to_answer_s"] for x in runs), 3)
        row["runs"] = len(runs)
    print(row, flush=True)
    return row


def run(args) -> dict:
    from bench import litert
    from bench.bench_memory import build_native, litert_models, ort_models
    from mbengine import quantize as q8
    from mbengine.cli import random_checkpoint
    from mbengine.converters import engine
    from mbengine.modeling import MobileBertModel

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = random_checkpoint(os.path.join(tmp, "hf"))
        engine.write(MobileBertModel.from_pretrained(hf_dir).weights, os.path.join(tmp, "engine"))
        numba_env = {"MBENGINE_KERNELS": "numba"}
        imports = [child(["import"], {**numba_env, "NUMBA_CACHE_DIR": os.path.join(tmp, "c-import")})]
        imports += [child(["import"], {**numba_env, "NUMBA_CACHE_DIR": os.path.join(tmp, "c-import")})]
        rows.append(
            {
                "measurement": "import mbengine",
                "seconds": round(min(r["import_s"] for r in imports), 3),
                "peak RSS MiB": round(imports[-1]["peak_rss_mib"]),
                "Numba loaded": imports[-1]["numba_loaded"],
            }
        )
        for label, path in (("HF checkpoint", hf_dir), ("engine checkpoint", os.path.join(tmp, "engine"))):
            for threads in (1, 2):
                env = {**numba_env, "NUMBA_CACHE_DIR": os.path.join(tmp, f"cache-{label[:2]}-{threads}")}
                cold = child([path, str(threads)], env)
                warm = _best(args, [path, str(threads)], env)
                rows.append(_row(f"{label}, {threads} thread(s), Numba: cold cache, load + first call", cold, ()))
                rows.append(_row(f"{label}, {threads} thread(s), Numba: warm cache, load + first call", warm))
        # the native kernel library, built by `mbengine warmup` (kernels.native); Numba never imported
        engines = {"float32": os.path.join(tmp, "engine"), "int8": os.path.join(tmp, "engine-int8")}
        weights = MobileBertModel.from_pretrained(hf_dir).weights
        description, batches = q8.calibration_batches(weights.config, None, None)  # as `mbengine quantize`
        engine.write(q8.quantize(weights, batches, calibration=description)[0], engines["int8"])
        native_dir = os.path.join(tmp, "native")
        build_native(engines, {"NUMBA_CACHE_DIR": os.path.join(tmp, "cache-native"), "MBENGINE_NATIVE_DIR": native_dir})
        native_env = {"MBENGINE_KERNELS": "native", "MBENGINE_NATIVE_DIR": native_dir}
        # the edge comparison: each (system, precision, threads) is a contender, and the contenders run
        # round-robin, one fresh process each in turn, --edge-repeats times: drift hits every system alike
        # (row label, child argv, child env, system, precision, threads)
        contenders = [
            (f"engine checkpoint {d}, {t} thread(s), native library", [p, str(t)], native_env, "mbengine native", d, t)
            for d, p in engines.items()
            for t in (1, 2)
        ]
        if not args.no_ort:
            contenders += [
                (f"ONNX Runtime {d}, {t} thread(s): session + first call", ["ort", p, str(t)], {}, "ONNX Runtime", d, t)
                for d, p in ort_models(tmp).items()
                for t in (1, 2)
            ]
        skipped, conversion = {}, None
        if args.no_litert or litert.unavailable():
            skipped["LiteRT"] = "--no-litert" if args.no_litert else litert.unavailable()
        else:
            try:
                models = litert_models(tmp)  # (the torch checkpoint ort_models wrote, or a new one)
                conversion = litert.conversion_info(models)
                label = "LiteRT {}, {} thread(s): interpreter + tensors + first call"
                contenders += [
                    (label.format(d, t), ["litert", p, str(t)], {}, "LiteRT", d, t)
                    for d, p in models.items()
                    for t in (1, 2)
                ]
            except Exception as e:  # noqa: BLE001
                skipped["LiteRT"] = common.reason(e)
        # one untimed round first, every system alike: its files in the page cache, and mbengine's plans
        # kept (mbengine.plans: the first process on a model binds its plan, later ones read it). That
        # first process is a row of its own.
        for label, argv, env, system, *_ in contenders:
            first = child(argv, env)
            if system == "mbengine native":
                rows.append(
                    _row(label.replace("native library", "native library, first process (keeps its plan)"), first)
                )
        runs = {label: [] for label, *_ in contenders}
        for _ in range(args.edge_repeats):
            for label, argv, env, *_ in contenders:
                runs[label].append(child(argv, env))
        for label, *_ in contenders:
            rows.append(_row(label, _earliest(runs[label]), runs=runs[label]))
        edge = _edge_table(contenders, runs)
    return {
        "environment": common.environment(),
        "command": common.command_line(),
        "date": common.now(),
        "rows": rows,
        "edge": edge,
        "skipped": skipped,
        "litert_conversion": conversion,
    }


def _edge_table(contenders: list, runs: dict) -> list[dict]:
    """Per (precision, threads): each system's median first answer, and mbengine's over the faster peer's."""
    medians = {}
    for label, _, _, system, dtype, threads in contenders:
        medians.setdefault((dtype, threads), {})[system] = statistics.median(
            r["process_to_answer_s"] for r in runs[label]
        )
    table = []
    for (dtype, threads), m in medians.items():
        peers = {k: v for k, v in m.items() if k != "mbengine native"}
        row = {"precision": dtype, "threads": threads, **{f"{k} s": round(v, 3) for k, v in m.items()}}
        if peers and "mbengine native" in m:
            best = min(peers, key=peers.get)
            row["faster peer"] = best
            row["native / faster peer"] = round(m["mbengine native"] / peers[best], 2)
        table.append(row)
    return table


def _best(args, argv: list[str], env: dict) -> dict:
    """The repeat with the earliest first answer."""
    return _earliest([child(argv, env) for _ in range(args.repeats)])


def _earliest(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["process_to_answer_s"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per Numba warm-cache row")
    parser.add_argument(
        "--edge-repeats",
        type=int,
        default=9,
        help="fresh processes per native / ONNX Runtime / LiteRT row (run round-robin across them)",
    )
    parser.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime (needs torch to export the model)")
    parser.add_argument(
        "--no-litert",
        action="store_true",
        help="skip LiteRT (its first run converts the model in a TensorFlow venv of its own: minutes)",
    )
    parser.add_argument("--name", default="startup")
    parser.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = parser.parse_args(argv)
    data = run(args)
    headers = [
        "measurement",
        "process start to first answer s",
        "median first answer s",
        "seconds",
        "peak RSS MiB",
        "Numba loaded",
        "load s",
        "first call s",
        "second call s",
    ]
    table = common.markdown_table(headers, [[r.get(h) for h in headers] for r in data["rows"]])
    if data["edge"]:
        edge_headers = list(dict.fromkeys(k for r in data["edge"] for k in r))
        table += "\n\nMedian process start to first answer, same interleaved runs:\n\n" + common.markdown_table(
            edge_headers, [[r.get(h, "–") for h in edge_headers] for r in data["edge"]]
        )
    common.write_results(
        args.name,
        data,
        table=table,
        title="Start-up time and peak RSS (full-size model, b1 s128)",
        notes=[
            "each number from a fresh process; warm cache: the earliest first answer of --repeats runs; native, "
            "ONNX Runtime and LiteRT: --edge-repeats runs of each, taken round-robin (one process of each row in "
            "turn), the row's figures from its earliest first answer, with the median first answer of all its runs; "
            "before them, one untimed round of every row (page cache filled, mbengine's plans kept: mbengine.plans), "
            "whose native processes are the 'first process' rows",
            "process start to first answer: from just before the parent starts the child to the child's first "
            "output (interpreter start, imports, load, first call); seconds: load + first call only",
            "peak RSS = the child's VmHWM (its ru_maxrss, in the JSON, is overstated: "
            "Linux folds the parent's RSS at fork into it)",
            "LiteRT: the torch model ONNX Runtime gets, converted to .tflite (bench.litert), inputs int32 1x128; "
            "load s = interpreter created + tensors allocated",
            *(f"skipped {system}: {why}" for system, why in data["skipped"].items()),
        ],
    )
    print(table)
