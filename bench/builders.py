"""What several benchmarks build, and the charts they draw.

Models and inputs: :func:`build_hf_model` (a random-weight Hugging Face
MobileBertModel, saved), :func:`make_inputs` (random token ids),
:func:`export_onnx` and :func:`quantize_int8` (the model for ONNX Runtime, fp32
and dynamic int8), :func:`quantize_engine` (an int8 engine checkpoint, as
``mbengine quantize`` makes it). torch, transformers and onnxruntime are
imported by the functions that need them, not here.

Charts (matplotlib, optional): :func:`plot_latency` (whole model: latency
against sequence length, ``python -m bench model``) and :func:`plot_kernels`
(kernels: GFLOP/s per shape, ``python -m bench kernels``).
"""

from __future__ import annotations

import numpy as np

from bench import common


# --------------------------------------------------------------------------- model + inputs
def build_hf_model(layers: int, path: str):
    """Random-weight HF MobileBertModel (google/mobilebert-uncased shapes), saved to ``path``."""
    import torch
    import transformers

    config = transformers.MobileBertConfig(classifier_activation=False, num_hidden_layers=layers)
    torch.manual_seed(0)
    model = transformers.MobileBertModel(config).eval()
    model.save_pretrained(path)
    return model


def make_inputs(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids, no padding, token types 0 then 1 (two segments)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    types = np.zeros((batch, seq), np.int64)
    types[:, seq // 2 :] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


# --------------------------------------------------------------------------- ONNX
def export_onnx(model, path: str, example: dict[str, np.ndarray]) -> str:
    """Export to ONNX (opset 17) with dynamic batch and sequence axes; returns how it was exported."""
    import warnings

    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
            )
            return out.last_hidden_state, out.pooler_output

    args = tuple(torch.from_numpy(example[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "seq"}
    axes["pooler_output"] = {0: "batch"}

    errors = []
    # the legacy TorchScript exporter first (no onnxscript needed), then the dynamo one
    for how, kwargs in (
        ("torchscript (dynamo=False)", {"dynamo": False, "dynamic_axes": axes}),
        ("dynamo", {"dynamo": True, "dynamic_shapes": None}),
    ):
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer and deprecation warnings of the exporter
                torch.onnx.export(
                    Wrapper(model).eval(),
                    args,
                    path,
                    input_names=names,
                    output_names=["last_hidden_state", "pooler_output"],
                    opset_version=17,
                    **kwargs,
                )
            return how
        except Exception as e:  # noqa: BLE001
            errors.append(f"{how}: {common.reason(e)}")
    raise RuntimeError("ONNX export failed: " + " | ".join(errors))


def quantize_int8(src: str, dst: str) -> None:
    """ONNX Runtime's dynamic quantization of ``src`` to ``dst`` (QInt8 weights)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a warning per integer tensor it cannot type
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


# --------------------------------------------------------------------------- mbengine int8
def quantize_engine(src: str, dst: str) -> dict:
    """src (HF directory) -> dst, an int8 engine checkpoint; the quantizer's summary."""
    import mbengine
    from mbengine import quantize as q8
    from mbengine.converters import engine

    model = mbengine.MobileBertModel.from_pretrained(src)
    description, batches = q8.calibration_batches(model.config, None, None)
    weights, report = q8.quantize(model.weights, batches, calibration=description)
    engine.write(weights, dst)
    return report.summary()


# --------------------------------------------------------------------------- charts
def _pyplot():
    """matplotlib.pyplot with the Agg backend, or None (and a message) if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return None
    return plt


def plot_latency(rows, path) -> bool:
    """Whole model: latency against sequence length, one line per (system, threads, batch).

    ``rows``: bench_model's result rows. Nothing is drawn (False) when no line has two points.
    """
    plt = _pyplot()
    if plt is None:
        return False
    series = {}
    for r in rows:
        series.setdefault((r["system"], r["threads"], r["batch"]), []).append((r["seq"], r["median_ms"]))
    if all(len(points) < 2 for points in series.values()):
        return False
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for (system, threads, batch), points in sorted(series.items()):
        points.sort()
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            linestyle="-" if system.startswith("mbengine") else "--",
            label=f"{system}, {threads} thr, batch {batch}",
        )
    ax.set_xlabel("sequence length")
    ax.set_ylabel("median latency, ms (log)")
    ax.set_yscale("log")
    ax.set_title("Full-size MobileBERT forward pass")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return True


def plot_kernels(rows, path, int8: str) -> bool:
    """Kernels: GFLOP/s of every system per linear shape, one panel per thread count.

    ``rows``: bench_kernels' result rows; ``int8``: the system name of the int8 linear (GOP/s), drawn when present.
    """
    plt = _pyplot()
    if plt is None:
        return False
    threads = sorted({r["threads"] for r in rows})
    fig, axes = plt.subplots(len(threads), 1, figsize=(13, 4.2 * len(threads)), squeeze=False)
    for ax, n in zip(axes[:, 0], threads):
        rs = [r for r in rows if r["threads"] == n]
        labels = [f"{r['shape']}\n{r['what']}" for r in rs]
        xs = np.arange(len(rs))
        systems = ["mbengine", "numpy x@w.T+b", "numpy dot(out=)+b"]
        if any(int8 in r["gflops"] for r in rs):
            systems.append(int8)
        width = 0.8 / len(systems)
        for i, sname in enumerate(systems):
            vals = [
                r["gflops"].get(sname, r["gflops"].get("numpy") if sname == "numpy x@w.T+b" else np.nan) for r in rs
            ]
            label = f"{sname} (GOP/s, {rs[0].get('int8', {}).get('variant', '')})" if sname == int8 else sname
            ax.bar(xs + (i - (len(systems) - 1) / 2) * width, vals, width, label=label)
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=6.5, rotation=30, ha="right")
        ax.set_ylabel("GFLOP/s (int8: GOP/s)" if int8 in systems else "GFLOP/s")
        ax.set_title(f"{n} thread{'s' if n > 1 else ''}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
