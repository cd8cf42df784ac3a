"""Hugging Face MobileBertModel checkpoint -> LiteRT (.tflite), float32 and dynamic-range int8.

    TFVENV/bin/python bench/litert_convert.py HF_DIR OUT_DIR [--batch 1] [--seq 128]

Runs in the TensorFlow virtual environment that :mod:`bench.litert` creates
(TensorFlow is no dependency of mbengine or its benchmarks), as a script: it
imports nothing from this repository. It writes OUT_DIR/mobilebert-float32.tflite,
OUT_DIR/mobilebert-int8.tflite and OUT_DIR/convert.json (versions, seconds,
the tensors' names).

The route is transformers 4.x's TFMobileBertModel (transformers 5 dropped the
TensorFlow classes), built from HF_DIR's config.json, its variables set from
model.safetensors (read with safetensors.numpy) by transformers' PyTorch -> TF 2
weight loader, which maps the names and transposes the linear weights; torch
is not needed here. Every weight must be taken: a missing one is an error, not
a randomly initialised variable. The model is traced once as a ``tf.function`` with a fixed
signature, inputs ``input_ids``, ``attention_mask`` and ``token_type_ids`` of
shape (batch, seq) int32 (TFLite's gather and the TF model both index with
int32; int64 inputs would only add casts), output ``last_hidden_state``
(batch, seq, hidden) float32. Fixed shapes because that is how LiteRT is
deployed on a device: one shape, tensors allocated once.

int8 is TFLite's dynamic-range quantization: ``Optimize.DEFAULT`` without a
representative dataset, so weights are stored int8 (per channel) and
activations stay float32; kernels that support it (fully connected, with
XNNPACK) quantize activations on the fly.
"""

import argparse
import json
import os
import sys
import time

# transformers 4.x's TF models need Keras 2 (the tf-keras package); with this TF's own tf.keras is tf_keras too
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def convert(hf_dir: str, out_dir: str, batch: int, seq: int) -> dict:
    import tensorflow as tf
    import transformers

    t0 = time.perf_counter()
    # not from_pretrained(from_pt=True), which imports torch, nor from_pretrained on the safetensors file,
    # whose loader iterates over safe_open (not iterable in safetensors 0.7+): the tensors as NumPy arrays,
    # mapped to the TF variables (names, transposes) by transformers' own PyTorch -> TF 2 loader
    from safetensors.numpy import load_file
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    model = transformers.TFMobileBertModel(transformers.MobileBertConfig.from_pretrained(hf_dir))
    state = load_file(os.path.join(hf_dir, "model.safetensors"))
    model, loading = load_pytorch_state_dict_in_tf2_model(
        model, state, allow_missing_keys=True, output_loading_info=True
    )
    del state
    load_s = time.perf_counter() - t0
    # transformers loads with allow_missing_keys: a weight it could not map would stay random, silently
    problems = {k: v for k, v in loading.items() if v}
    if problems.get("missing_keys") or problems.get("mismatched_keys"):
        raise SystemExit(f"{hf_dir}: the TF model did not take every weight: {problems}")

    @tf.function(input_signature=[tf.TensorSpec((batch, seq), tf.int32, name=n) for n in NAMES])
    def serve(input_ids, attention_mask, token_type_ids):
        out = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, training=False)
        return {"last_hidden_state": out.last_hidden_state}

    concrete = serve.get_concrete_function()
    os.makedirs(out_dir, exist_ok=True)
    info = {
        "versions": {"tensorflow": tf.__version__, "transformers": transformers.__version__},
        "python": sys.version.split()[0],
        "inputs": {n: [batch, seq, "int32"] for n in NAMES},
        "output": "last_hidden_state",
        "load_s": round(load_s, 2),
        "unexpected_keys": problems.get("unexpected_keys", []),
        "files": {},
    }
    for dtype in ("float32", "int8"):
        t0 = time.perf_counter()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
        if dtype == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative dataset: dynamic range
        flatbuffer = converter.convert()
        path = os.path.join(out_dir, f"mobilebert-{dtype}.tflite")
        with open(path + ".part", "wb") as f:
            f.write(flatbuffer)
        os.replace(path + ".part", path)  # a killed conversion leaves no truncated model behind
        info["files"][dtype] = {
            "name": os.path.basename(path),
            "bytes": len(flatbuffer),
            "convert_s": round(time.perf_counter() - t0, 2),
        }
        print(f"wrote {path}: {len(flatbuffer) / 2**20:.1f} MiB", flush=True)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hf_dir", help="a saved Hugging Face MobileBertModel (config.json + model.safetensors)")
    parser.add_argument("out_dir")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    info = convert(args.hf_dir, args.out_dir, args.batch, args.seq)
    info["total_s"] = round(time.perf_counter() - t0, 2)
    with open(os.path.join(args.out_dir, "convert.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
