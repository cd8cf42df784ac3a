"""LiteRT (TFLite) as a peer in the edge benchmarks: the same MobileBertModel, converted once and cached.

    litert_models(hf_dir) -> {"float32": path, "int8": path}

The benchmarks give ONNX Runtime a random-weight Hugging Face MobileBertModel
(:func:`bench.builders.build_hf_model`, torch, seed 0); :func:`litert_models`
turns that same checkpoint into ``.tflite`` files, float32 and dynamic-range
int8 (TFLite's ``Optimize.DEFAULT`` without a representative dataset: int8
weights, float activations), inputs ``input_ids``, ``attention_mask``,
``token_type_ids`` of shape (1, 128) int32, output ``last_hidden_state``.

Why a second virtual environment: the only converter from a Hugging Face
MobileBERT to TFLite that needs no hand-written graph is TensorFlow's, through
transformers 4.x's TFMobileBertModel (transformers 5, which the project uses,
dropped the TensorFlow classes). TensorFlow must not become a dependency of
mbengine, its tests or its benchmark extra, so :func:`tf_python` creates a
venv of its own on first use (:data:`TF_REQUIREMENTS`, pinned) and
bench/litert_convert.py runs there as a script. Only ``ai-edge-litert`` (the
runtime, in the ``bench`` extra) is needed to run the converted models.

Cache: ``$MBENGINE_BENCH_CACHE/litert`` (default ``~/.cache/mbengine-bench/litert``),
one directory per sha256 of the checkpoint's config.json and model.safetensors,
the converter script and the pins, so a benchmark converts once and a changed
model or converter converts again. Each directory also holds convert.json
(versions, seconds) and check.json: the converted models' ``last_hidden_state``
against the torch model's (relative error, see :func:`check`), computed once
after the conversion. ``MBENGINE_BENCH_TF_VENV`` names an existing venv to use
instead of creating one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from bench import common

# the TensorFlow side, pinned: TF 2.21 + tf-keras 2.21 + transformers 4.57 resolve together on Python 3.11
# (transformers 4.57 is the last line with TFMobileBertModel; it needs Keras 2, i.e. tf-keras, not Keras 3)
TF_REQUIREMENTS = ("tensorflow-cpu==2.21.*", "tf-keras==2.21.*", "transformers==4.57.*", "safetensors>=0.4")
CONVERTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "litert_convert.py")
DTYPES = ("float32", "int8")
BATCH, SEQ = 1, 128
NAMES = ("input_ids", "attention_mask", "token_type_ids")
# last_hidden_state's relative error against torch past which a conversion is wrong, not just rounded
# (measured: float32 3e-7, the same graph in float32; int8 9e-3, the weights' rounding)
TOLERANCE = {"float32": 1e-4, "int8": 5e-2}


class LiteRTError(RuntimeError):
    """The TF venv could not be made, or the conversion or its check failed; the message says which and why."""


def cache_root() -> str:
    base = os.environ.get("MBENGINE_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mbengine-bench"
    )
    return os.path.join(base, "litert")


def unavailable() -> str | None:
    """Why LiteRT cannot run in this environment (ai-edge-litert not installed), or None."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError as e:
        return f"ai-edge-litert is not installed ({common.reason(e)}; pip install -e '.[bench]')"
    return None


# --------------------------------------------------------------------------- the TensorFlow venv
def tf_python(cache: str | None = None, log=print) -> str:
    """The python of a venv holding :data:`TF_REQUIREMENTS`, created (pip install, a few minutes) on first use."""
    explicit = os.environ.get("MBENGINE_BENCH_TF_VENV")
    venv = explicit or os.path.join(cache or cache_root(), "tfvenv")
    python = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, "mbengine-requirements.txt")
    wanted = "\n".join(TF_REQUIREMENTS) + "\n"
    if explicit:
        if not os.path.isfile(python):
            raise LiteRTError(f"MBENGINE_BENCH_TF_VENV={explicit} has no bin/python")
        return python
    if os.path.isfile(marker):
        with open(marker) as f:
            if f.read() == wanted:  # (a venv whose install was cut short has no marker: pip runs again)
                return python
    t0 = time.perf_counter()
    log(f"  creating the TensorFlow venv for the LiteRT conversion (once): {venv}", flush=True)
    if not os.path.isfile(python):
        _run([sys.executable, "-m", "venv", venv], "python -m venv", os.path.join(os.path.dirname(venv), "venv.log"))
    # the new venv's own "python -m pip": installs into it whatever PATH or VIRTUAL_ENV this process has
    _run([python, "-m", "pip", "install", *TF_REQUIREMENTS], "pip install " + " ".join(TF_REQUIREMENTS), venv + ".log")
    with open(marker, "w") as f:
        f.write(wanted)
    log(f"  TensorFlow venv ready in {time.perf_counter() - t0:.0f} s", flush=True)
    return python


def _run(cmd: list[str], what: str, logfile: str, timeout: float = 3600) -> None:
    """Run ``cmd`` with its output in ``logfile``; a LiteRTError with the log's last lines if it fails."""
    os.makedirs(os.path.dirname(logfile), exist_ok=True)
    with open(logfile, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if done.returncode != 0:
        with open(logfile) as f:
            tail = "".join(line for line in f.readlines()[-15:] if not line.startswith("WARNING: Location"))
        raise LiteRTError(f"{what} failed (exit {done.returncode}; log: {logfile}):\n{tail}")


# --------------------------------------------------------------------------- conversion + cache
def checkpoint_key(hf_dir: str) -> str:
    """sha256 (16 hex digits) of what the .tflite files depend on: the checkpoint, the converter, the pins."""
    h = hashlib.sha256()
    for path in (os.path.join(hf_dir, "config.json"), os.path.join(hf_dir, "model.safetensors"), CONVERTER):
        if not os.path.isfile(path):
            raise LiteRTError(f"{path} not found (a saved Hugging Face MobileBertModel in safetensors is needed)")
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                h.update(block)
    h.update(f"{TF_REQUIREMENTS} {BATCH}x{SEQ}".encode())
    return h.hexdigest()[:16]


def litert_models(hf_dir: str, cache: str | None = None, log=print) -> dict[str, str]:
    """``hf_dir`` (a saved HF MobileBertModel) as LiteRT models: {"float32": path, "int8": path}.

    Converted once per checkpoint content into ``cache`` (default :func:`cache_root`); the first time
    also creates the TensorFlow venv and checks the results against the torch model (:func:`check`).
    Raises LiteRTError if any of that fails.
    """
    cache = cache or cache_root()
    key_dir = os.path.join(cache, checkpoint_key(hf_dir))
    paths = {d: os.path.join(key_dir, f"mobilebert-{d}.tflite") for d in DTYPES}
    if all(os.path.isfile(p) for p in paths.values()) and os.path.isfile(os.path.join(key_dir, "check.json")):
        with open(os.path.join(key_dir, "check.json")) as f:
            if "rel_err" in json.load(f):
                return paths
        _write_check(hf_dir, paths, key_dir, None)  # converted where the runtime was missing: check now
        return paths
    python = tf_python(cache, log)
    part = f"{key_dir}.part-{os.getpid()}"  # renamed to key_dir once converted and checked: no half-written cache
    shutil.rmtree(part, ignore_errors=True)
    log(f"  converting {hf_dir} to LiteRT (float32, dynamic-range int8) in {key_dir}", flush=True)
    t0 = time.perf_counter()
    try:
        _run(
            [python, CONVERTER, hf_dir, part, "--batch", str(BATCH), "--seq", str(SEQ)],
            "the LiteRT conversion",
            os.path.join(cache, f"convert-{os.path.basename(key_dir)}.log"),
        )
        seconds = time.perf_counter() - t0
        result = _write_check(
            hf_dir, {d: os.path.join(part, os.path.basename(p)) for d, p in paths.items()}, part, round(seconds, 1)
        )
        shutil.rmtree(key_dir, ignore_errors=True)
        os.replace(part, key_dir)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    log(
        f"  LiteRT models ready in {seconds:.0f} s; last_hidden_state relative error vs torch: "
        + (
            ", ".join(f"{d} {result['rel_err'][d]['full']:.2e}" for d in DTYPES)
            if "rel_err" in result
            else result.get("skipped", "?")
        ),
        flush=True,
    )
    return paths


def _write_check(hf_dir: str, paths: dict[str, str], key_dir: str, seconds: float | None) -> dict:
    """:func:`check`, written to key_dir/check.json; a LiteRTError if an error is past :data:`TOLERANCE`."""
    result = check(hf_dir, paths)
    if seconds is not None:
        result["conversion_process_s"] = seconds
    with open(os.path.join(key_dir, "check.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    bad = {
        d: errs
        for d, errs in result.get("rel_err", {}).items()
        if any(e > TOLERANCE[d] or e != e for e in errs.values())  # (e != e: NaN)
    }
    if bad:
        raise LiteRTError(
            f"the converted models do not match the torch model: relative errors {bad}, "
            f"tolerances {TOLERANCE} (see {key_dir}/check.json)"
        )
    return result


def conversion_info(paths: dict[str, str]) -> dict:
    """convert.json and check.json of the models :func:`litert_models` returned (versions, seconds, errors)."""
    key_dir = os.path.dirname(next(iter(paths.values())))
    out = {"cache_dir": key_dir}
    for name in ("convert", "check"):
        path = os.path.join(key_dir, f"{name}.json")
        if os.path.isfile(path):
            with open(path) as f:
                out[name] = json.load(f)
    return out


# --------------------------------------------------------------------------- running + checking
def feed_for(interpreter, inputs: dict[str, np.ndarray]) -> list[tuple[int, np.ndarray]]:
    """(tensor index, array) per input of ``interpreter``, matched by name (TFLite prefixes the signature's
    names, e.g. ``serving_default_input_ids:0``) and cast to the input's dtype."""
    out, missing = [], []
    for d in interpreter.get_input_details():
        hits = [n for n in inputs if n in d["name"]]
        if len(hits) != 1:
            missing.append(d["name"])
            continue
        out.append((d["index"], np.ascontiguousarray(inputs[hits[0]], dtype=d["dtype"])))
    if missing:
        raise LiteRTError(f"model inputs {missing} match none (or several) of {sorted(inputs)}")
    return out


def run_tflite(path: str, inputs: dict[str, np.ndarray], threads: int = 1) -> np.ndarray:
    """One call of the .tflite model at ``path`` (XNNPACK, ``threads``): its last_hidden_state."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    for index, array in feed_for(interpreter, inputs):
        interpreter.set_tensor(index, array)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def check(hf_dir: str, paths: dict[str, str]) -> dict:
    """The converted models against the torch model (transformers, this venv): relative error of
    last_hidden_state (||x - ref|| / ||ref||, float64), on a full row of random ids and on one whose
    last 32 tokens are padding (so the attention mask's path is checked too)."""
    reason = unavailable()
    if reason:
        return {"skipped": reason}
    import torch
    import transformers

    from bench.builders import make_inputs

    model = transformers.MobileBertModel.from_pretrained(hf_dir).eval()
    full = make_inputs(BATCH, SEQ, model.config.vocab_size, seed=1)
    padded = {k: v.copy() for k, v in full.items()}
    padded["input_ids"][:, -32:] = 0
    padded["attention_mask"][:, -32:] = 0
    padded["token_type_ids"][:, -32:] = 0
    out = {"inputs": {"full": "1x128, every token real", "padded": "1x128, last 32 tokens padding"}, "rel_err": {}}
    for name, inputs in (("full", full), ("padded", padded)):
        with torch.no_grad():
            ref = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state.numpy()
        out.setdefault("torch_abs_max", {})[name] = float(np.abs(ref).max())
        for dtype, path in paths.items():
            got = run_tflite(path, inputs)
            if got.shape != ref.shape:
                raise LiteRTError(f"{path}: output shape {got.shape}, torch gives {ref.shape}")
            # padded positions: the TF model masks with -10000, torch with the dtype's minimum; compare real tokens
            real = inputs["attention_mask"][0].astype(bool)
            out["rel_err"].setdefault(dtype, {})[name] = common.rel_err(got[:, real], ref[:, real])
    out["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    return out
