"""Memory footprint: where a process's resident memory goes, installed size, which Raspberry Pi fits.

    python -m bench memory [--headroom 300] [--no-ort] [--no-litert] [--tbb-lib DIR]

Every memory figure comes from a fresh child process (:mod:`bench.memory_child`,
run as a script; warm Numba cache: each configuration runs once to fill a
cache directory of its own, then again to be measured). Peak = the child's
VmHWM from /proc/self/status (its ru_maxrss is not used: Linux folds the
parent's RSS at fork into it).

1. Stages: VmRSS / VmHWM (and anonymous vs file-backed RSS) of a process that
   loads the full-size MobileBertModel (engine checkpoint, float32 and int8)
   and runs batch 1 x seq 128 twice, after each step; at the end, its RSS
   split by mapping (/proc/self/smaps): libllvmlite.so, Numba's .so files,
   NumPy/OpenBLAS, the memory-mapped checkpoint, heap + anonymous memory.
2. Detail: the first call taken apart (Numba's runtime initialisation, which
   compiles its NRT helpers with LLVM; Numba's lowering registries; each
   cached kernel specialization as it loads), and variants: threading layer
   (omp, workqueue, tbb if its library loads), SciPy hidden (as in an install
   with only mbengine's dependencies: Numba imports SciPy whenever it is
   installed), Numba's NRT compile skipped (an experiment that patches Numba;
   mbengine does not do this), and a floor without Numba (NumPy, the weights
   touched, an arena-sized buffer). Whether numba.pycc (ahead-of-time) exists
   and could compile parallel kernels is checked, not built.
3. Installed size of the runtime dependencies (from each distribution's
   RECORD, dependency closure from its metadata) against torch and ONNX Runtime.
4. Which Raspberry Pi RAM size fits which model / dtype / batch x seq: the
   measured b1 s128 peak plus what a bigger call adds (``arena_bytes`` and the
   returned outputs, as the model's own memory check counts them), against RAM
   minus an OS headroom (``--headroom``, MiB); one bigger shape per model is
   measured to check the prediction. ONNX Runtime's peak (same child method)
   for comparison unless ``--no-ort``, and LiteRT's (TFLite, XNNPACK) unless
   ``--no-litert``: the same torch MobileBertModel ONNX Runtime gets, converted
   by :mod:`bench.litert` (float32 and dynamic-range int8; once, in a
   TensorFlow venv of its own, cached by the checkpoint's content; skipped with
   the reason recorded if ai-edge-litert is missing or the conversion fails).
   The table uses the peaks on the native
   kernel library (kernels.native: ``mbengine warmup`` builds it for every
   checkpoint first, then each model runs with ``MBENGINE_KERNELS=native``,
   Numba never imported; those runs are in the summary too).

TBB is measured only where Numba can load it: ``--tbb-lib DIR`` puts DIR (holding
libtbb.so.12, e.g. from the ``tbb`` wheel) on LD_LIBRARY_PATH for that variant alone.
Results: bench/results/memory.json and memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from bench import common, litert
from bench.builders import build_hf_model, export_onnx, make_inputs, quantize_int8
from bench.memory_child import CATEGORIES

MIB = 2**20
SHAPES = ((1, 128), (1, 512), (8, 128), (8, 512), (32, 128), (32, 512))
PI_RAM_GB = (1, 2, 4, 8)

# the child: runs one configuration and prints one JSON line (a script: see its docstring)
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "memory_child.py")


def child(spec: dict, env: dict | None = None, cwd: str | None = None, runs: int = 2) -> dict:
    """Run :mod:`bench.memory_child` with ``spec`` ``runs`` times (the first fills the Numba cache); the last result.

    ``peaks_mib`` holds every run's peak, ``first_run_peak_mib`` the first one's.
    """
    full_env = dict(os.environ, **(env or {}))
    results = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, CHILD, json.dumps(spec)], env=full_env, cwd=cwd, capture_output=True, text=True
        )
        if out.returncode != 0:
            lines = out.stderr.strip().splitlines() or ["?"]
            errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
            return {"error": (errors or lines)[-1][:300]}
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    res = results[-1]
    res["peaks_mib"] = [r["steps"][-1]["VmHWM"] for r in results]
    res["first_run_peak_mib"] = res["peaks_mib"][0]
    return res


def _peer_run(res: dict) -> dict:
    """What the JSON keeps of a peer runtime's measurement (ONNX Runtime, LiteRT)."""
    return {"peak_mib": peak(res), **{k: res.get(k) for k in ("peaks_mib", "steps", "error")}}


def peak(res: dict) -> float | None:
    return None if "error" in res else res["steps"][-1]["VmHWM"]


def _range(res: dict | None) -> str | None:
    """'min-max' of a result's peaks over its runs ('129.9-145.9'), or the one value."""
    if not res or "error" in res:
        return None
    lo, hi = min(res["peaks_mib"]), max(res["peaks_mib"])
    return f"{lo:.1f}" if hi - lo < 1 else f"{lo:.1f}-{hi:.1f}"


# --------------------------------------------------------------------------- checkpoints
def build_native(paths: dict, env: dict) -> None:
    """``mbengine warmup`` on every checkpoint, in a child: compiles the kernels and builds the native library."""
    for path in paths.values():
        done = subprocess.run(
            [sys.executable, "-c", "from mbengine.cli import main; raise SystemExit(main())", "warmup", path],
            env={**os.environ, **env, "MBENGINE_KERNELS": "numba"},
            cwd=common.CHILD_CWD,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mbengine warmup {path} failed:\n{done.stdout}\n{done.stderr}")


def make_checkpoints(tmp: str) -> dict:
    """Full-size random engine checkpoints: MobileBertModel and ...ForMaskedLM, float32 and int8."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    import mbengine
    from mbengine import quantize as q8
    from mbengine.cli import random_checkpoint
    from mbengine.config import MobileBertConfig
    from mbengine.converters import engine
    from mbengine.converters.canonical import TIED, head_shapes

    hf = random_checkpoint(os.path.join(tmp, "hf-base"))
    hf_mlm = random_checkpoint(os.path.join(tmp, "hf-mlm"))
    tensors = load_file(os.path.join(hf_mlm, "model.safetensors"))
    rng = np.random.default_rng(1)
    for name, shape in head_shapes(MobileBertConfig.from_pretrained(hf_mlm), "masked_lm").items():
        if name not in TIED:
            scale = (
                1.0 + 0.1 * rng.standard_normal(shape)
                if len(shape) == 1 and name.endswith(".weight")
                else 0.02 * rng.standard_normal(shape)
            )
            tensors[name] = np.asarray(scale, np.float32)
    save_file(tensors, os.path.join(hf_mlm, "model.safetensors"), metadata={"format": "pt"})
    paths = {}
    for label, cls, src in (
        ("MobileBertModel", mbengine.MobileBertModel, hf),
        ("MobileBertForMaskedLM", mbengine.MobileBertForMaskedLM, hf_mlm),
    ):
        fp32 = paths[(label, "float32")] = os.path.join(tmp, f"{label}-float32")
        weights = cls.from_pretrained(src).weights
        engine.write(weights, fp32)
        # int8 as `mbengine quantize` does without a tokenizer
        description, batches = q8.calibration_batches(weights.config, None, None)
        int8 = paths[(label, "int8")] = os.path.join(tmp, f"{label}-int8")
        engine.write(q8.quantize(weights, batches, calibration=description)[0], int8)
        print(f"  wrote {label} float32 and int8", flush=True)
    return paths


def call_bytes(path: str, cls_name: str) -> dict:
    """{(batch, seq): bytes a call of that shape allocates}: the arena plus the returned copies of the outputs."""
    import mbengine
    from mbengine.runner import arena_bytes

    model = getattr(mbengine, cls_name).from_pretrained(path)
    graph = model.runner().graph
    out = {}
    for batch, seq in SHAPES:
        need = arena_bytes(graph, batch, seq, False)
        for ref in graph.outputs.values():  # as MobileBertModel._check_memory counts them
            need += 4 * ref.width * (batch * seq if graph.buffers[ref.buf].rows == "tokens" else batch)
        out[(batch, seq)] = need
    return out


# --------------------------------------------------------------------------- ONNX Runtime
def ort_models(tmp: str) -> dict:
    """MobileBertModel exported to ONNX (float32) and ORT's dynamic int8, as bench_model makes them."""
    hf = os.path.join(tmp, "hf-torch")
    model = build_hf_model(24, hf)
    fp32 = os.path.join(tmp, "mobilebert.onnx")
    export_onnx(model, fp32, make_inputs(1, 128, model.config.vocab_size))
    int8 = os.path.join(tmp, "mobilebert-int8.onnx")
    quantize_int8(fp32, int8)
    return {"float32": fp32, "int8": int8}


# --------------------------------------------------------------------------- LiteRT
def litert_models(tmp: str) -> dict:
    """The MobileBertModel :func:`ort_models` exports (the same seed-0 torch weights) as LiteRT float32 and
    dynamic-range int8 .tflite files (:func:`bench.litert.litert_models`: converted once, then cached)."""
    hf = os.path.join(tmp, "hf-torch")
    if not os.path.isfile(os.path.join(hf, "model.safetensors")):  # --no-ort: ort_models did not write it
        build_hf_model(24, hf)
    return litert.litert_models(hf)


def litert_threads() -> int:
    """The interpreter's num_threads: one per usable CPU, as ONNX Runtime's default intra-op pool."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --------------------------------------------------------------------------- ahead-of-time
def aot_check() -> dict:
    """Does numba.pycc exist, and would it compile our parallel kernels in parallel? (Nothing is built.)"""
    import importlib.util
    import inspect
    import warnings

    spec = importlib.util.find_spec("numba.pycc")
    out = {"numba_pycc_present": spec is not None}
    if spec is None:
        return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import numba.pycc.compiler as pc
        from numba.core.compiler import Flags
    out["import_warnings"] = sorted(
        {f"{w.category.__name__}: {str(w.message).splitlines()[0].rstrip('.')}" for w in caught}
    )
    source = inspect.getsource(pc)
    out["pycc_flags_mention_parallel"] = "parallel" in source
    out["default_flags_auto_parallel"] = bool(Flags().auto_parallel.enabled)
    out["conclusion"] = (
        "numba.pycc compiles each export with numba.core.compiler.Flags() defaults, whose "
        "auto_parallel is off and which pycc never sets: prange loops would compile as serial "
        "loops (no threading layer linked into the module)"
        if not out["default_flags_auto_parallel"] and not out["pycc_flags_mention_parallel"]
        else "pycc may set parallel flags: check by hand"
    )
    return out


# --------------------------------------------------------------------------- installed size
def _canon(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed_sizes(stacks: dict[str, list[str]]) -> dict:
    """Bytes on disk (the files each distribution's RECORD lists) of each stack's dependency closure."""
    from importlib import metadata

    from packaging.requirements import Requirement

    def dist_info(name):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None
        size = 0
        for f in dist.files or []:
            p = f.locate()
            if os.path.isfile(p):
                size += os.path.getsize(p)
        reqs = []
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                reqs.append(_canon(req.name))
        return {"version": dist.version, "bytes": size, "requires": reqs}

    cache: dict[str, dict | None] = {}
    out = {}
    for label, roots in stacks.items():
        todo, seen = [_canon(r) for r in roots], []
        while todo:
            name = todo.pop(0)
            if name in seen:
                continue
            seen.append(name)
            if name not in cache:
                cache[name] = dist_info(name)
            if cache[name]:
                todo += cache[name]["requires"]
        dists = {
            n: {"version": cache[n]["version"], "mib": round(cache[n]["bytes"] / MIB, 1)} for n in seen if cache[n]
        }
        out[label] = {
            "roots": roots,
            "total_mib": round(sum(d["mib"] for d in dists.values()), 1),
            "distributions": dists,
            "missing": [n for n in seen if not cache[n]],
        }
    return out


# --------------------------------------------------------------------------- Pi table
def pi_table(peaks: dict, needs: dict, headroom: int) -> list[dict]:
    """Predicted peak (MiB) per model / dtype / shape and the smallest Pi whose RAM minus ``headroom`` holds it."""
    rows = []
    for (label, dtype), base in peaks.items():
        if base is None:
            continue
        need = needs[(label, dtype)]
        for shape in SHAPES:
            mib = base + (need[shape] - need[(1, 128)]) / MIB
            fits = [gb for gb in PI_RAM_GB if mib <= gb * 1024 - headroom]
            rows.append(
                {
                    "model": label,
                    "dtype": dtype,
                    "batch": shape[0],
                    "seq": shape[1],
                    "predicted_peak_mib": round(mib),
                    "smallest_pi_gb": fits[0] if fits else None,
                }
            )
    return rows


# --------------------------------------------------------------------------- run
def run(args) -> dict:
    data = {"command": common.command_line(), "date": common.now(), "headroom_mib": args.headroom}
    with tempfile.TemporaryDirectory() as tmp:
        print("writing checkpoints", flush=True)
        paths = make_checkpoints(tmp)
        cache = {"NUMBA_CACHE_DIR": os.path.join(tmp, "numba-cache")}

        def measure(spec, env=None, runs=2):
            res = child(spec, {**cache, **(env or {})}, cwd=tmp, runs=runs)
            print(
                f"  {spec['mode']} {spec.get('cls', '')} "
                f"{os.path.basename(spec.get('path') or spec.get('onnx') or spec.get('tflite') or '')} "
                f"b{spec.get('batch', 1)} s{spec.get('seq', 128)} {env or ''}: "
                f"{res.get('error') or f'peak {peak(res)} MiB'}",
                flush=True,
            )
            return res

        base = {"cls": "MobileBertModel"}
        print("native kernel library (mbengine warmup on each checkpoint)", flush=True)
        native_env = {"MBENGINE_KERNELS": "native", "MBENGINE_NATIVE_DIR": os.path.join(tmp, "native")}
        build_native(paths, {**cache, "MBENGINE_NATIVE_DIR": native_env["MBENGINE_NATIVE_DIR"]})
        natives = {
            key: measure({"mode": "native", "path": path, "cls": key[0]}, native_env) for key, path in paths.items()
        }
        print("stages and detail", flush=True)
        stages = {
            dtype: measure({"mode": "stages", "path": paths[("MobileBertModel", dtype)], **base})
            for dtype in ("float32", "int8")
        }
        detail = {
            dtype: measure({"mode": "detail", "path": paths[("MobileBertModel", dtype)], **base})
            for dtype in ("float32", "int8")
        }
        print("variants", flush=True)
        needs = {key: call_bytes(path, key[0]) for key, path in paths.items()}
        tbb_env = {"NUMBA_THREADING_LAYER": "tbb"}
        if args.tbb_lib:
            tbb_env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (args.tbb_lib, os.environ.get("LD_LIBRARY_PATH")) if p
            )
        variants = []
        for dtype in ("float32", "int8"):
            spec = {"mode": "stages", "path": paths[("MobileBertModel", dtype)], **base}
            todo = [("default", stages[dtype])]
            if dtype == "float32":
                todo += [
                    ("NUMBA_THREADING_LAYER=omp", measure(spec, {"NUMBA_THREADING_LAYER": "omp"})),
                    ("NUMBA_THREADING_LAYER=workqueue", measure(spec, {"NUMBA_THREADING_LAYER": "workqueue"})),
                    ("NUMBA_THREADING_LAYER=tbb", measure(spec, tbb_env)),
                ]
            todo += [
                ("SciPy hidden (only mbengine's dependencies)", measure({**spec, "hide_scipy": True})),
                (
                    "SciPy hidden + Numba's NRT compile skipped (patched Numba; experiment)",
                    measure({**spec, "hide_scipy": True, "skip_nrt": True}),
                ),
                (
                    "floor without Numba: NumPy + weights read + arena-sized buffer",
                    measure(
                        {
                            "mode": "floor",
                            "path": spec["path"],
                            "arena_bytes": needs[("MobileBertModel", dtype)][(1, 128)],
                        }
                    ),
                ),
            ]
            variants += [{"variant": name, "dtype": dtype, **res} for name, res in todo]
        print("peaks (b1 s128) and checks of the prediction", flush=True)
        peaks, runs, native_peaks = {}, {}, {}
        for (label, dtype), path in paths.items():
            res = (
                stages[dtype] if label == "MobileBertModel" else measure({"mode": "stages", "path": path, "cls": label})
            )
            peaks[(label, dtype)] = peak(res)
            native_peaks[(label, dtype)] = peak(natives[(label, dtype)])
            runs[f"{label} {dtype}"] = {
                "peak_mib": peak(res),
                "native_peak_mib": native_peaks[(label, dtype)],
                "native_numba_loaded": natives[(label, dtype)].get("numba_loaded"),
                "first_run_peak_mib": res.get("first_run_peak_mib"),
                "final_split": res["steps"][-1]["split"] if "steps" in res else None,
                "error": res.get("error"),
            }
        checks = []
        for label in ("MobileBertModel", "MobileBertForMaskedLM"):
            b, s = 8, 512
            res = measure({"mode": "stages", "path": paths[(label, "float32")], "cls": label, "batch": b, "seq": s})
            need = needs[(label, "float32")]
            predicted = peaks[(label, "float32")] + (need[(b, s)] - need[(1, 128)]) / MIB
            checks.append(
                {
                    "model": label,
                    "dtype": "float32",
                    "batch": b,
                    "seq": s,
                    "measured_mib": peak(res),
                    "predicted_mib": round(predicted, 1),
                }
            )
        ort = {}
        if not args.no_ort:
            print("ONNX Runtime (same child method)", flush=True)
            try:
                onnx = ort_models(tmp)
                ort = {dtype: measure({"mode": "ort", "onnx": p}, runs=args.ort_runs) for dtype, p in onnx.items()}
            except Exception as e:  # noqa: BLE001
                ort = {"error": f"{type(e).__name__}: {e}"}
        if args.no_litert or litert.unavailable():
            lite = {"skipped": "--no-litert" if args.no_litert else litert.unavailable()}
        else:
            print("LiteRT (same child method)", flush=True)
            try:
                models = litert_models(tmp)
                lite = {"threads": litert_threads(), "conversion": litert.conversion_info(models)}
                for dtype, p in models.items():
                    lite[dtype] = measure(
                        {"mode": "litert", "tflite": p, "threads": lite["threads"]}, runs=args.litert_runs
                    )
            except Exception as e:  # noqa: BLE001
                lite = {"skipped": common.reason(e), "detail": str(e)[-2000:]}
        summary = []
        for dtype in ("float32", "int8"):
            got = {v["variant"].split(" (")[0].split(":")[0]: peak(v) for v in variants if v["dtype"] == dtype}
            row = {
                "dtype": dtype,
                "mbengine, native library": peak(natives[("MobileBertModel", dtype)]),
                "mbengine on Numba": got["default"],
                "mbengine, SciPy hidden": got["SciPy hidden"],
                "floor without Numba": got["floor without Numba"],
                "ONNX Runtime (min-max over runs)": _range(ort.get(dtype)),
                "LiteRT (min-max over runs)": _range(lite.get(dtype)),
            }
            row["Numba + LLVM (+ SciPy) = mbengine on Numba - floor"] = (
                round(row["mbengine on Numba"] - row["floor without Numba"], 1)
                if row["mbengine on Numba"] is not None and row["floor without Numba"] is not None
                else None
            )
            summary.append(row)
        data.update(
            summary=summary,
            native={f"{k[0]} {k[1]}": v for k, v in natives.items()},
            stages=stages,
            detail=detail,
            variants=variants,
            peaks_b1_s128=runs,
            prediction_checks=checks,
            ort={k: v if k == "error" else _peer_run(v) for k, v in ort.items()},
            litert={k: _peer_run(v) if k in litert.DTYPES else v for k, v in lite.items()},
            call_bytes={f"{k[0]} {k[1]}": {f"{b}x{s}": v for (b, s), v in need.items()} for k, need in needs.items()},
            pi=pi_table({k: native_peaks[k] or peaks[k] for k in peaks}, needs, args.headroom),
            aot=aot_check(),
            environment=common.environment(),
            installed=installed_sizes(
                {
                    "mbengine's runtime dependencies (numpy, numba, safetensors, tokenizers + theirs)": [
                        "numpy",
                        "numba",
                        "safetensors",
                        "tokenizers",
                    ],
                    "of which the inference path (numpy, numba, llvmlite)": ["numba"],
                    "torch (+ its required dependencies)": ["torch"],
                    "onnxruntime (+ its required dependencies)": ["onnxruntime"],
                    "ai-edge-litert (+ its required dependencies)": ["ai-edge-litert"],
                }
            ),
        )
    return data


# --------------------------------------------------------------------------- report
def _split_row(split: dict) -> list:
    return [split.get(c) for c in CATEGORIES]


def _seconds(s: float | None) -> float | None:
    return None if s is None else round(s, 3)


def report(data: dict) -> tuple[str, list[str]]:
    headers = list(data["summary"][0])
    parts = [
        "## Summary: peak RSS (VmHWM) MiB, MobileBertModel, b1 s128\n\n"
        + common.markdown_table(headers, [[r[h] for h in headers] for r in data["summary"]])
        + "\n"
    ]
    for key, res in data.get("native", {}).items():
        if not key.startswith("MobileBertModel ") or "steps" not in res:
            continue
        rows = [
            [st["step"], st["VmRSS"], st["VmHWM"], st["RssAnon"], st["RssFile"], _seconds(st["seconds"])]
            for st in res["steps"]
        ]
        parts.append(
            f"## Stages: {key}, b1 s128, native kernel library (kernels: {res.get('kernels')}; Numba or llvmlite "
            f"modules loaded: {res.get('numba_loaded') or 'none'})\n\n"
            + common.markdown_table(["step", "VmRSS MiB", "VmHWM MiB", "anonymous MiB", "file-backed MiB", "s"], rows)
            + "\n"
        )
    for dtype, res in data["stages"].items():
        if "error" in res:
            parts.append(f"## Stages, MobileBertModel {dtype}\n\nerror: {res['error']}\n")
            continue
        rows = [
            [
                s["step"],
                s["VmRSS"],
                s["VmHWM"],
                s["RssAnon"],
                s["RssFile"],
                None if s["seconds"] is None else round(s["seconds"], 3),
            ]
            for s in res["steps"]
        ]
        parts.append(
            f"## Stages: MobileBertModel {dtype}, b1 s128 (threading layer {res['threading_layer']}, "
            f"{res['numba_threads']} threads)\n\n"
            + common.markdown_table(["step", "VmRSS MiB", "VmHWM MiB", "anonymous MiB", "file-backed MiB", "s"], rows)
            + f"\n\nKernel specializations loaded: {res['specializations']}; arena block "
            f"{res['arena_block_bytes'] / MIB:.1f} MiB allocated.\n"
        )
    split_rows = [
        [f"MobileBertModel {d}", *_split_row(r["steps"][-1]["split"]), r["steps"][-1]["VmRSS"]]
        for d, r in data["stages"].items()
        if "steps" in r
    ]
    parts.append(
        "## RSS by mapping at the end (/proc/self/smaps), MiB\n\n"
        + common.markdown_table(["process", *CATEGORIES, "total"], split_rows)
        + "\n"
    )
    for dtype, res in data["detail"].items():
        if "error" in res:
            continue
        rows, prev = [], None
        for s in res["steps"]:
            delta = (
                {}
                if prev is None
                else {c: round(s["split"].get(c, 0) - prev["split"].get(c, 0), 1) for c in CATEGORIES}
            )
            grew = ", ".join(f"{c.split(' (')[0]} {v:+.1f}" for c, v in delta.items() if abs(v) >= 0.5)
            rows.append(
                [
                    s["step"],
                    s["VmRSS"],
                    None if prev is None else round(s["VmRSS"] - prev["VmRSS"], 1),
                    grew or None,
                    None if s["seconds"] is None else round(s["seconds"], 3),
                ]
            )
            prev = s
        parts.append(
            f"## First call taken apart: MobileBertModel {dtype}\n\n"
            + common.markdown_table(["step", "VmRSS MiB", "delta MiB", "grew (MiB)", "s"], rows)
            + "\n"
        )
    rows = []
    for res in data["variants"]:
        if "error" in res:
            rows.append([res["variant"], res["dtype"], None, None, None, None, None, "not available: " + res["error"]])
            continue
        last = res["steps"][-1]
        sp = last["split"]
        rows.append(
            [
                res["variant"],
                res["dtype"],
                last["VmHWM"],
                last["RssAnon"],
                last["RssFile"],
                sp.get("libllvmlite.so (LLVM)"),
                sp.get("heap + anonymous"),
                res.get("threading_layer"),
            ]
        )
    parts.append(
        "## Variants: MobileBertModel, b1 s128\n\n"
        + common.markdown_table(
            [
                "variant",
                "dtype",
                "peak MiB",
                "anonymous MiB",
                "file-backed MiB",
                "libllvmlite MiB",
                "heap + anon MiB",
                "threading layer / note",
            ],
            rows,
        )
        + "\n"
    )
    rows = [[k, v["peak_mib"], v["first_run_peak_mib"]] for k, v in data["peaks_b1_s128"].items()]
    for dtype, v in data["ort"].items():
        if dtype != "error":
            rows.append([f"ONNX Runtime {dtype} (MobileBertModel; every run: {v['peaks_mib']})", v["peak_mib"], None])
    lite = data.get("litert", {})
    for dtype in litert.DTYPES:
        if dtype in lite:
            v = lite[dtype]
            rows.append(
                [
                    f"LiteRT {dtype} (MobileBertModel, {lite['threads']} threads; every run: {v['peaks_mib']})",
                    v["peak_mib"] if not v.get("error") else f"error: {v['error']}",
                    None,
                ]
            )
    parts.append(
        "## Peak RSS at b1 s128 (VmHWM, warm cache)\n\n"
        + common.markdown_table(["process", "peak MiB", "first run (cache being filled) MiB"], rows)
        + "\n"
    )
    rows = [
        [c["model"], c["dtype"], f"{c['batch']}x{c['seq']}", c["measured_mib"], c["predicted_mib"]]
        for c in data["prediction_checks"]
    ]
    parts.append(
        "## Prediction check (measured peak vs b1 s128 peak + extra call bytes)\n\n"
        + common.markdown_table(["model", "dtype", "b x s", "measured MiB", "predicted MiB"], rows)
        + "\n"
    )
    parts.append(litert_markdown(data.get("litert", {})))
    parts.append(pi_markdown(data))
    rows = []
    for label, st in data["installed"].items():
        top = sorted(st["distributions"].items(), key=lambda kv: -kv[1]["mib"])
        rows.append(
            [
                label,
                st["total_mib"],
                ", ".join(f"{n} {d['mib']:.0f}" for n, d in top[:6])
                + (f" (+{len(top) - 6} more)" if len(top) > 6 else ""),
            ]
        )
    parts.append(
        "## Installed size (files in each distribution's RECORD, dependency closure)\n\n"
        + common.markdown_table(["stack", "MiB", "largest distributions (MiB)"], rows)
        + "\n"
    )
    aot = data["aot"]
    parts.append(
        f"## Ahead-of-time compilation\n\nnumba.pycc present: {aot['numba_pycc_present']}; "
        f"{'; '.join(aot.get('import_warnings', []))}. {aot.get('conclusion', '')}.\n"
    )
    notes = [
        "peak = VmHWM of a fresh child process; warm Numba cache (each configuration ran once before)",
        "file-backed RSS (the checkpoint, .so code) is clean page cache: shared between processes and "
        "reclaimable under memory pressure; anonymous RSS is not",
    ]
    if "skipped" in data.get("litert", {}):
        notes.append(f"LiteRT skipped: {data['litert']['skipped']}")
    return "\n".join(parts), notes


def litert_markdown(lite: dict) -> str:
    """LiteRT's stages (one child per dtype) and how its models were made, or why it was skipped."""
    if "skipped" in lite:
        return f"## LiteRT\n\nskipped: {lite['skipped']}\n"
    conv = lite.get("conversion", {})
    made, check = conv.get("convert", {}), conv.get("check", {})
    errs = check.get("rel_err", {})
    out = [
        "## LiteRT (TFLite, XNNPACK delegate), MobileBertModel b1 s128\n",
        f"Converted from the torch checkpoint ONNX Runtime gets (bench.litert; TensorFlow "
        f"{made.get('versions', {}).get('tensorflow')}, transformers {made.get('versions', {}).get('transformers')}, "
        f"inputs int32 1x128); last_hidden_state relative error vs torch: "
        + (", ".join(f"{d} {e['full']:.2g}" for d, e in errs.items()) or check.get("skipped", "not checked"))
        + f". Interpreter num_threads {lite.get('threads')}.\n",
    ]
    for dtype in litert.DTYPES:
        res = lite.get(dtype)
        if not res:
            continue
        if res.get("error"):
            out.append(f"{dtype}: error: {res['error']}\n")
            continue
        rows = [
            [st["step"], st["VmRSS"], st["VmHWM"], st["RssAnon"], st["RssFile"], _seconds(st["seconds"])]
            for st in res["steps"]
        ]
        out.append(
            f"### LiteRT {dtype}\n\n"
            + common.markdown_table(["step", "VmRSS MiB", "VmHWM MiB", "anonymous MiB", "file-backed MiB", "s"], rows)
            + "\n"
        )
    return "\n".join(out)


def pi_markdown(data: dict) -> str:
    rows = {}
    for r in data["pi"]:
        key = (r["model"], r["dtype"])
        gb = f"{r['smallest_pi_gb']} GB" if r["smallest_pi_gb"] else f"> {PI_RAM_GB[-1]} GB"
        rows.setdefault(key, []).append(f"{r['predicted_peak_mib']} ({gb})")
    table = common.markdown_table(
        ["model", "dtype", *(f"{b}x{s}" for b, s in SHAPES)], [[m, d, *cells] for (m, d), cells in rows.items()]
    )
    budgets = ", ".join(f"{gb} GB: {gb * 1024 - data['headroom_mib']} MiB" for gb in PI_RAM_GB)
    return (
        f"## Raspberry Pi: predicted peak MiB (smallest Pi RAM that fits, assuming {data['headroom_mib']} MiB "
        f"for the OS)\n\nBudget = RAM - headroom ({budgets}). Predicted = measured b1 s128 peak + (arena and "
        f"returned outputs at the shape - at 1x128).\n\n" + table + "\n"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--headroom",
        type=int,
        default=300,
        help="MiB of RAM assumed taken by the OS (Raspberry Pi OS Lite: kernel, firmware, services)",
    )
    parser.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime comparison (needs torch)")
    parser.add_argument("--ort-runs", type=int, default=4, help="fresh ONNX Runtime processes per dtype")
    parser.add_argument(
        "--no-litert",
        action="store_true",
        help="skip the LiteRT comparison (its first run converts the model in a TensorFlow venv: minutes)",
    )
    parser.add_argument("--litert-runs", type=int, default=4, help="fresh LiteRT processes per dtype")
    parser.add_argument("--tbb-lib", help="directory holding libtbb.so.12, for the TBB variant only")
    parser.add_argument("--name", default="memory")
    parser.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    args = parser.parse_args(argv)
    data = run(args)
    table, notes = report(data)
    common.write_results(
        args.name, data, table=table, title="Memory: RSS breakdown, installed size, Raspberry Pi fit", notes=notes
    )
    print(table)
