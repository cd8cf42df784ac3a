"""The whole MobileBERT encoder: mbengine against PyTorch eager, ONNX Runtime and OpenVINO (fp32, int8), same run.

    python -m bench model [--seq 128] [--batch 1] [--rows {full,half,ragged}] [--threads 1 2] [--repeats 30]
                          [--systems mbengine,mbengine-int8,torch,ort-fp32,ort-int8,ov-fp32,ov-int8]
                          [--layers 24] [--ov-calibration 128] [--kernels native] [--name model]

A full-size MobileBERT (``transformers.MobileBertConfig()`` defaults, i.e.
google/mobilebert-uncased, with ``classifier_activation=False``) gets random
weights (``torch.manual_seed(0)``) and is saved with ``save_pretrained``;
mbengine loads that directory (``padding="skip"``), the same model is exported
to ONNX (opset 17) and quantized dynamically to int8 (QInt8 weights) for ONNX
Runtime. OpenVINO reads the same ONNX file (ov-fp32: compiled for the CPU
with float32 inference precision, the thread count, the latency hint and one
stream); ov-int8 is NNCF's post-training static quantization of it
(``ModelType.TRANSFORMER``, ``--ov-calibration`` random-id sequences), compiled
the same way. For mbengine-int8 the model is quantized as ``mbengine
quantize`` does (random-id calibration: the directory has no tokenizer) and
written as an int8 engine checkpoint, which each thread count loads. With
``--kernels native`` (the default) ``mbengine warmup`` first builds the native
kernel library for both checkpoints, and mbengine runs on it, as a deployment
does; the notes say which kernels ran.

``--rows``: ``full`` (every row real tokens), ``half`` (the later half of the
rows padded to half length) or ``ragged`` (row lengths uniform between seq/8
and seq, the first row full), right padded
(:func:`bench.builders.make_inputs`). Every system gets the same padded
arrays and mask; mbengine skips the padding, the others compute it.

For each thread count the float32 GEMM peak is measured
(:func:`bench.bench_profile.gemm_peak`; again after that thread count's
timings, keeping the higher), every system is warmed up, its
``last_hidden_state`` at the real positions (mask 1) is checked against
PyTorch's (relative Frobenius error), and then all systems are timed round
robin. "% of fp32 floor": the FLOPs of the real tokens
(:func:`bench.builders.model_flops`) at the GEMM peak, over the median.
Systems that are not installed or fail are skipped with the reason. Results:
bench/results/model.json and model.md (``--name`` changes the name; with two
or more sequence lengths also <name>.png, latency against sequence length).
The model, inputs and ONNX files come from :mod:`bench.builders`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import traceback

from bench import common
from bench.bench_profile import gemm_peak
from bench.builders import (
    ROW_MODES,
    build_hf_model,
    export_onnx,
    make_inputs,
    model_flops,
    plot_latency,
    quantize_engine,
    quantize_int8,
    quantize_openvino,
)

ROWS_NOTE = {
    "full": "every row real tokens, no padding",
    "half": "the later half of the rows (batch // 2) padded to half length (seq // 2 real tokens)",
    "ragged": "row lengths uniform in seq//8..seq (numpy default_rng(0)), the first row full",
}
ALL_SYSTEMS = ("mbengine", "mbengine-int8", "torch", "ort-fp32", "ort-int8", "ov-fp32", "ov-int8")
# what each system imports beyond torch and mbengine: a system whose module is missing is skipped up front
NEEDS = {
    "ort-fp32": ("onnxruntime",),
    "ort-int8": ("onnxruntime",),
    "ov-fp32": ("openvino",),
    "ov-int8": ("openvino", "nncf"),
}
# the OpenVINO CPU properties set (and read back from the compiled model) or only read back
OV_READ_BACK = (
    "INFERENCE_PRECISION_HINT",
    "INFERENCE_NUM_THREADS",
    "PERFORMANCE_HINT",
    "NUM_STREAMS",
    "EXECUTION_MODE_HINT",
    "ENABLE_CPU_PINNING",
)


# --------------------------------------------------------------------------- systems
def ort_session(path: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def ov_compile(path: str, threads: int):
    """(OpenVINO model ``path`` compiled for the CPU: float32, ``threads`` threads, latency hint, one stream;
    the properties read back from the compiled model)."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if "NUM_STREAMS" in core.get_property("CPU", "SUPPORTED_PROPERTIES"):
        config["NUM_STREAMS"] = 1
    compiled = core.compile_model(path, "CPU", config)
    props = {}
    for key in OV_READ_BACK:
        try:
            value = compiled.get_property(key)
        except Exception as e:  # noqa: BLE001
            props[key] = f"unreadable: {common.reason(e)}"
            continue
        # an ov.Type (the precision) reads as f32/bf16; enums and numbers as themselves
        props[key] = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
    return compiled, props


def use_native(checkpoints: dict, directory: str) -> str:
    """Build the native kernel library for ``checkpoints`` (``mbengine warmup``, each in a child) in
    ``directory`` and make this process's mbengine models run on it, as a deployment does; returns what
    happened. The kernels chosen so far (Numba, for the int8 calibration) are forgotten: the models
    made next choose again. A failed build leaves them on Numba, and the results say so."""
    from bench.bench_memory import build_native
    from mbengine import backend

    env = {"MBENGINE_NATIVE_DIR": directory}
    t0 = time.perf_counter()
    try:
        build_native({k: v for k, v in checkpoints.items() if v}, env)
    except RuntimeError as e:
        print(f"native kernel library not built: {common.reason(e)}; mbengine runs on Numba", flush=True)
        return f"failed: {common.reason(e)}"
    os.environ.update(env, MBENGINE_KERNELS="native")
    backend.reset()
    took = time.perf_counter() - t0
    print(f"native kernel library built in {took:.1f} s ({directory})", flush=True)
    return f"built in {took:.1f} s"


def missing_module(name: str) -> str | None:
    """Why ``name``'s extra modules (NEEDS) cannot be imported, or None when they can."""
    import importlib

    for module in NEEDS.get(name, ()):
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001
            return f"{module} not installed or broken ({common.reason(e)})"
    return None


def make_callables(names, threads, hf_model, ckpt_dir, onnx_paths, skipped, info):
    """{system: zero-argument callable(inputs) -> last_hidden_state numpy} for one thread count.

    OpenVINO's compiled properties go to ``info["openvino_compiled"]``.
    """
    import torch

    made = {}
    for name in names:
        try:
            if name in ("mbengine", "mbengine-int8"):
                import mbengine

                path = ckpt_dir if name == "mbengine" else onnx_paths.get(name)
                if path is None:
                    raise RuntimeError(onnx_paths.get(name + ":error", "no int8 checkpoint"))
                m = mbengine.MobileBertModel.from_pretrained(path, threads=threads, padding="skip")
                made[name] = lambda inp, m=m: (
                    m(
                        inp["input_ids"], attention_mask=inp["attention_mask"], token_type_ids=inp["token_type_ids"]
                    ).last_hidden_state
                )
                made[name].model = m  # (which kernels ran: read after the warm-up calls)
            elif name == "torch":

                def run_torch(inp, model=hf_model, n=threads):
                    torch.set_num_threads(n)
                    with torch.inference_mode():
                        out = model(
                            input_ids=torch.from_numpy(inp["input_ids"]),
                            attention_mask=torch.from_numpy(inp["attention_mask"]),
                            token_type_ids=torch.from_numpy(inp["token_type_ids"]),
                        )
                    return out.last_hidden_state.numpy()

                made[name] = run_torch
            elif name in ("ort-fp32", "ort-int8"):
                path = onnx_paths.get(name)
                if path is None:
                    raise RuntimeError(onnx_paths.get(name + ":error", "no ONNX model"))
                sess = ort_session(path, threads)
                feed_names = [i.name for i in sess.get_inputs()]
                made[name] = lambda inp, s=sess, f=feed_names: s.run(["last_hidden_state"], {k: inp[k] for k in f})[0]
            elif name in ("ov-fp32", "ov-int8"):
                path = onnx_paths.get(name)
                if path is None:
                    raise RuntimeError(onnx_paths.get(name + ":error", "no OpenVINO model"))
                compiled, props = ov_compile(path, threads)
                info.setdefault("openvino_compiled", {})[f"{name}, {threads} thr"] = props
                request = compiled.create_infer_request()
                feed_names = [i.get_any_name() for i in compiled.inputs]
                output = compiled.output("last_hidden_state")
                made[name] = lambda inp, r=request, f=feed_names, o=output: r.infer(
                    {k: inp[k] for k in f}, share_inputs=True
                )[o]
            else:
                raise ValueError(f"unknown system {name!r} (known: {', '.join(ALL_SYSTEMS)})")
        except Exception as e:  # noqa: BLE001
            skipped.setdefault(name, common.reason(e))
            print(f"  skipping {name} (threads {threads}): {skipped[name]}", flush=True)
    return made


def run(args) -> dict:
    import torch

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in ALL_SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; known: {', '.join(ALL_SYSTEMS)}")
    skipped: dict[str, str] = {}
    info: dict = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="mbengine-bench-") as tmp:
        ckpt = os.path.join(tmp, "hf")
        t0 = time.perf_counter()
        hf_model = build_hf_model(args.layers, ckpt)
        info["hf_model_build_s"] = time.perf_counter() - t0
        info["attn_implementation"] = getattr(hf_model.config, "_attn_implementation", None)
        info["parameters"] = sum(p.numel() for p in hf_model.parameters())
        print(
            f"HF MobileBertModel: {args.layers} layers, {info['parameters'] / 1e6:.1f} M parameters, "
            f"attention {info['attn_implementation']}",
            flush=True,
        )
        vocab = hf_model.config.vocab_size

        onnx_paths: dict[str, str] = {}  # (and the int8 engine checkpoint's)
        if "mbengine-int8" in systems:
            try:
                t0 = time.perf_counter()
                q = os.path.join(tmp, "engine-int8")
                info["mbengine_int8"] = quantize_engine(ckpt, q)
                info["mbengine_int8_quantize_s"] = time.perf_counter() - t0
                info["mbengine_int8_mb"] = os.path.getsize(os.path.join(q, "model.safetensors")) / 2**20
                onnx_paths["mbengine-int8"] = q
                print(
                    f"mbengine int8: {info['mbengine_int8_mb']:.1f} MiB, quantized in "
                    f"{info['mbengine_int8_quantize_s']:.1f} s",
                    flush=True,
                )
            except Exception as e:  # noqa: BLE001
                onnx_paths["mbengine-int8:error"] = f"quantization failed: {common.reason(e)}"
                if args.verbose:
                    traceback.print_exc()
        if args.kernels == "native" and any(s.startswith("mbengine") for s in systems):
            info["native_build"] = use_native(
                {"float32": ckpt, "int8": onnx_paths.get("mbengine-int8")}, os.path.join(tmp, "native")
            )
        elif args.kernels == "numba":  # (else a native library that `mbengine warmup` built earlier would run)
            from mbengine import backend

            os.environ["MBENGINE_KERNELS"] = "numba"
            backend.reset()
        for name in systems:
            why = missing_module(name)
            if why:
                onnx_paths[f"{name}:error"] = why
        onnx_systems = [s for s in systems if s in NEEDS and f"{s}:error" not in onnx_paths]
        if onnx_systems:
            try:
                fp32 = os.path.join(tmp, "model.onnx")
                t0 = time.perf_counter()
                example = make_inputs(2, 16, vocab, rows="half")  # padding in the example keeps the mask path
                info["onnx_exporter"] = export_onnx(hf_model, fp32, example)
                info["onnx_export_s"] = time.perf_counter() - t0
                info["onnx_fp32_mb"] = os.path.getsize(fp32) / 2**20
                print(f"ONNX export: {info['onnx_exporter']}, {info['onnx_fp32_mb']:.1f} MiB", flush=True)
            except Exception as e:  # noqa: BLE001
                fp32 = None
                for s in onnx_systems:
                    onnx_paths[f"{s}:error"] = common.reason(e)
                if args.verbose:
                    traceback.print_exc()
            if fp32 is not None:
                for s in ("ort-fp32", "ov-fp32"):
                    if s in onnx_systems:
                        onnx_paths[s] = fp32
            if fp32 is not None and "ort-int8" in onnx_systems:
                try:
                    int8 = os.path.join(tmp, "model.int8.onnx")
                    quantize_int8(fp32, int8)
                    onnx_paths["ort-int8"] = int8
                    info["onnx_int8_mb"] = os.path.getsize(int8) / 2**20
                    print(f"ONNX int8 (dynamic, QInt8 weights): {info['onnx_int8_mb']:.1f} MiB", flush=True)
                except Exception as e:  # noqa: BLE001
                    onnx_paths["ort-int8:error"] = f"quantization failed: {common.reason(e)}"
            if any(s.startswith("ov-") for s in onnx_systems):
                import openvino

                info["openvino_version"] = openvino.__version__
            if fp32 is not None and "ov-int8" in onnx_systems:
                import nncf

                info["nncf_version"] = nncf.__version__
                try:
                    xml = os.path.join(tmp, "ov-int8", "model.xml")
                    t0 = time.perf_counter()
                    info["ov_int8_calibration"] = quantize_openvino(fp32, xml, vocab, samples=args.ov_calibration)
                    info["ov_int8_quantize_s"] = time.perf_counter() - t0
                    info["ov_int8_mb"] = os.path.getsize(xml[: -len(".xml")] + ".bin") / 2**20
                    onnx_paths["ov-int8"] = xml
                    print(
                        f"OpenVINO int8 (NNCF static, {info['ov_int8_calibration']}): {info['ov_int8_mb']:.1f} MiB, "
                        f"quantized in {info['ov_int8_quantize_s']:.1f} s",
                        flush=True,
                    )
                except Exception as e:  # noqa: BLE001
                    onnx_paths["ov-int8:error"] = f"quantization failed: {common.reason(e)}"
                    if args.verbose:
                        traceback.print_exc()

        for n in args.threads:
            if args.wait_quiet > 0:
                common.wait_until_quiet(args.wait_quiet)
            try:
                peak = gemm_peak(n)
                print(f"threads {n}: float32 GEMM peak {peak:.1f} GFLOP/s (NumPy, 2048^3)", flush=True)
            except Exception as e:  # noqa: BLE001
                peak = None
                print(f"threads {n}: no GEMM peak ({common.reason(e)}): no % of fp32 floor", flush=True)
            info.setdefault("gemm_peak_gflops", {})[str(n)] = peak
            fns_by_input = make_callables(systems, n, hf_model, ckpt, onnx_paths, skipped, info)
            for batch in args.batch:
                for seq in args.seq:
                    inp = make_inputs(batch, seq, vocab, rows=args.rows)
                    real = inp["attention_mask"] == 1  # only these positions are compared
                    lengths = real.sum(axis=1)
                    flops = model_flops(hf_model.config, lengths)
                    floor_s = flops / (peak * 1e9) if peak else None
                    torch.set_num_threads(n)
                    with torch.inference_mode():
                        ref = hf_model(**{k: torch.from_numpy(v) for k, v in inp.items()}).last_hidden_state.numpy()
                    ok = {}
                    errs = {}
                    for name, f in fns_by_input.items():
                        try:
                            for _ in range(args.warmup):
                                out = f(inp)
                            errs[name] = common.rel_err(out[real], ref[real])
                            if hasattr(f, "model"):
                                kernels = f.model.runner().kernels.name
                                info.setdefault("mbengine_kernels", {})[f"{name}, {n} thr"] = kernels
                            ok[name] = lambda f=f, inp=inp: f(inp)
                        except Exception as e:  # noqa: BLE001
                            skipped.setdefault(name, common.reason(e))
                            print(f"  skipping {name} (threads {n}, b{batch} s{seq}): {common.reason(e)}", flush=True)
                            if args.verbose:
                                traceback.print_exc()
                    if not ok:
                        continue
                    times, load, attempts = common.time_when_quiet(
                        ok, args.repeats, retries=args.retries, wait=args.wait_quiet, warmup=1, gap=args.gap
                    )
                    base = common.median(times["mbengine"]) if "mbengine" in times else None
                    for name, t in times.items():
                        st = common.stats(t)
                        rows.append(
                            {
                                "system": name,
                                "threads": n,
                                "batch": batch,
                                "seq": seq,
                                "rows": args.rows,
                                "real_tokens": int(lengths.sum()),
                                "lengths": lengths.tolist(),
                                "median_ms": st["median"] * 1e3,
                                "min_ms": st["min"] * 1e3,
                                "mean_ms": st["mean"] * 1e3,
                                "stdev_ms": st["stdev"] * 1e3,
                                "n": st["n"],
                                "ratio_to_mbengine": st["median"] / base if base else None,
                                "rel_err_vs_torch": errs[name],
                                "model_gflop": flops / 1e9,
                                "gemm_peak_gflops": peak,
                                "fp32_floor_ms": floor_s * 1e3 if floor_s else None,
                                "fraction_of_fp32_floor": floor_s / st["median"] if floor_s else None,
                                "other_cpu": load["other_cpu"],
                                "steal": load.get("steal"),
                                "attempts": attempts,
                                "samples_ms": [x * 1e3 for x in t],
                            }
                        )
                        r = rows[-1]
                        ratio = "–" if r["ratio_to_mbengine"] is None else f"{r['ratio_to_mbengine']:.2f}"
                        floor = _percent(r["fraction_of_fp32_floor"])
                        print(
                            f"threads {n} b{batch} s{seq} {args.rows} ({r['real_tokens']} tokens)  {name:<13} "
                            f"median {r['median_ms']:8.2f} ms  min {r['min_ms']:8.2f} ms  x mbengine {ratio}  "
                            f"{floor}% of fp32 floor  rel err {r['rel_err_vs_torch']:.1e}",
                            flush=True,
                        )
                    if load["other_cpu"] is not None:
                        print(f"  (other processes used {100 * load['other_cpu']:.0f}% of the CPUs meanwhile)")
            del fns_by_input
            _remeasure_peak(rows, n, info)
    return {"rows": rows, "skipped": skipped, "info": info}


def _remeasure_peak(rows: list[dict], n: int, info: dict) -> None:
    """Measure the GEMM peak for ``n`` threads again after its timings and keep the higher of the two
    for that thread count's floor fractions: one short measurement taken while the machine stalled
    once gave 2 threads the 1-thread peak, and floor fractions above 100%."""
    before = info["gemm_peak_gflops"].get(str(n))
    try:
        after = gemm_peak(n)
    except Exception:  # noqa: BLE001 (the first measurement stands)
        return
    info.setdefault("gemm_peak_measurements", {})[str(n)] = [before, after]
    if before is not None and after <= before:
        return
    print(f"threads {n}: float32 GEMM peak measured again: {after:.1f} GFLOP/s (kept for the floor)", flush=True)
    info["gemm_peak_gflops"][str(n)] = after
    for r in rows:
        if r["threads"] == n:
            floor_s = r["model_gflop"] / after
            r.update(
                gemm_peak_gflops=after,
                fp32_floor_ms=floor_s * 1e3,
                fraction_of_fp32_floor=floor_s / (r["median_ms"] / 1e3),
            )


def worst_load(rows) -> dict:
    """The timed case during which other processes used the most CPU."""
    fr = [r["other_cpu"] for r in rows if r.get("other_cpu") is not None]
    ncpu = os.cpu_count() or 1
    return {"other_cpu": max(fr), "other_cpus_equiv": max(fr) * ncpu} if fr else {}


def _percent(fraction) -> str:
    return "–" if fraction is None else f"{100 * fraction:.1f}"


def table(rows) -> str:
    headers = [
        "system",
        "threads",
        "batch",
        "seq",
        "rows",
        "real tokens",
        "median ms",
        "min ms",
        "median / mbengine median",
        "% of fp32 floor",
        "rel err vs torch (real tokens)",
        "other load %",
    ]
    out = []
    for r in rows:
        out.append(
            [
                r["system"],
                r["threads"],
                r["batch"],
                r["seq"],
                r.get("rows", "full"),
                r.get("real_tokens", r["batch"] * r["seq"]),
                f"{r['median_ms']:.2f}",
                f"{r['min_ms']:.2f}",
                "–" if r["ratio_to_mbengine"] is None else f"{r['ratio_to_mbengine']:.2f}",
                _percent(r.get("fraction_of_fp32_floor")),
                f"{r['rel_err_vs_torch']:.1e}",
                "–" if r["other_cpu"] is None else f"{100 * r['other_cpu']:.0f}",
            ]
        )
    return common.markdown_table(headers, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, nargs="+", default=[128])
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument(
        "--rows",
        choices=ROW_MODES,
        default="full",
        help="full: every row real tokens; half: the later half of the rows padded to half length; ragged: row "
        "lengths uniform in seq/8..seq (seeded), the first row full (default full)",
    )
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=30, help="timed rounds (one call of each system per round)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per system before the check")
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS), help=f"comma-separated subset of {ALL_SYSTEMS}")
    ap.add_argument("--layers", type=int, default=24, help="num_hidden_layers (24 = full size)")
    ap.add_argument(
        "--ov-calibration",
        type=int,
        default=128,
        metavar="N",
        help="ov-int8: NNCF calibration sequences (random ids, up to 128 tokens, batch 1; ~100 s for the "
        "full-size model on 2 cores; default 128)",
    )
    ap.add_argument(
        "--gap",
        type=float,
        default=0.05,
        help="seconds of pause (busy-wait on the main thread) after each system's call, so its thread "
        "pool stops spinning before the next system runs (ONNX Runtime's workers spin ~30 ms "
        "after a run, OpenVINO's may too; default 0.05)",
    )
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        metavar="S",
        help="before each thread count, wait up to S seconds for other processes to go idle (0: don't)",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=2,
        help="time again (up to this many times) if other processes were busy meanwhile",
    )
    ap.add_argument(
        "--kernels",
        choices=("native", "numba"),
        default="native",
        help="native (default): build the native kernel library for the two checkpoints first (mbengine "
        "warmup), as a deployment runs; numba: run the kernels on Numba",
    )
    ap.add_argument("--name", default="model", help="results file name: bench/results/<name>.{json,md}")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of skipped systems")
    ap.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = ap.parse_args(argv)

    env = common.environment()
    common.print_environment(env)
    git = env.get("git")  # the sources that ran: taken before the run (others may edit them meanwhile)
    mon = common.LoadMonitor().start()
    data = run(args)
    load = mon.stop()
    warning = common.load_warning(worst_load(data["rows"]))
    env = common.environment()  # after the run: numba's threading layer and every BLAS are loaded now
    env["git"] = git
    data = {
        "benchmark": "model",
        "date": common.now(),
        "command": common.command_line(),
        "environment": env,
        "settings": vars(args),
        "load": load,
        **data,
    }
    md = table(data["rows"])
    info = data["info"]
    notes = [
        f"model: HF MobileBertModel, MobileBertConfig() defaults (google/mobilebert-uncased), "
        f"classifier_activation=False, {args.layers} layers, random weights (torch.manual_seed(0))",
        f"inputs: random ids, rows {args.rows}: {ROWS_NOTE[args.rows]}; token types 0|1 halves of each row's "
        "real tokens; padding: id 0, mask 0, right side; every system gets the same padded arrays",
        "output compared: last_hidden_state at the real positions only (attention_mask == 1; mbengine returns "
        "zeros at padding); rel err = Frobenius norm of the difference / norm of torch's",
        f"systems timed round robin (order rotating), {args.repeats} rounds, {args.gap * 1e3:g} ms pause "
        "(busy-wait) after each call; ratio = system median / mbengine median (>1: mbengine faster)",
        "% of fp32 floor = (FLOPs of the real tokens, bench.builders.model_flops: every linear 2*tokens*in*out plus "
        "attention 4*L^2*all_head_size (128) per row and layer) / (float32 GEMM peak: NumPy 2048^3 matmul with "
        "n BLAS threads, best of 5, measured once per thread count: "
        + ", ".join(
            f"{k} thr {v:.1f} GFLOP/s" if v else f"{k} thr –" for k, v in info.get("gemm_peak_gflops", {}).items()
        )
        + ") / median; padding counts as no work, so the systems that compute it are charged for it",
        "torch: eager, torch.set_num_threads(n), inference_mode; ORT: intra_op_num_threads=n, ORT_ENABLE_ALL; "
        'mbengine: from_pretrained(dir, threads=n, padding="skip") (computes the real tokens only)',
    ]
    if info.get("mbengine_kernels"):
        ran = ", ".join(f"{k}: {v}" for k, v in info["mbengine_kernels"].items())
        built = f" (native library {info['native_build']}, mbengine warmup)" if info.get("native_build") else ""
        notes.append(f"mbengine kernels (--kernels {args.kernels}){built}: {ran}")
    if info.get("onnx_exporter"):
        notes.append(f"ONNX: exporter {info['onnx_exporter']}, opset 17; ORT int8: quantize_dynamic QInt8 weights")
    if info.get("openvino_version"):
        compiled = info.get("openvino_compiled", {})
        read_back = "; ".join(
            f"{k}: " + ", ".join(f"{p}={v}" for p, v in props.items()) for k, props in compiled.items()
        )
        notes.append(
            f"OpenVINO {info['openvino_version']}: read_model of the same ONNX file, compile_model CPU with "
            "INFERENCE_PRECISION_HINT=f32, INFERENCE_NUM_THREADS=n, PERFORMANCE_HINT=LATENCY, NUM_STREAMS=1; "
            f"read back from the compiled models: {read_back or '–'}"
        )
    if info.get("ov_int8_calibration"):
        notes.append(
            f"ov-int8: NNCF {info.get('nncf_version')} nncf.quantize (static post-training int8, "
            f"model_type=TRANSFORMER, other settings default), calibration {info['ov_int8_calibration']}; "
            f"quantized in {info['ov_int8_quantize_s']:.0f} s, IR weights {info['ov_int8_mb']:.1f} MiB"
        )
    jpath = common.publish(args.name, data, md, "Whole-model benchmark", notes, warning)
    plot_latency(data["rows"], os.path.join(os.path.dirname(jpath), f"{args.name}.png"))
