"""What several benchmarks build, and the charts they draw.

Models and inputs: :func:`build_hf_model` (a random-weight Hugging Face
MobileBertModel, saved), :func:`make_inputs` (random token ids, every row full
or some rows right padded), :func:`model_flops` (the model's FLOPs for given
sequence lengths, from its config), :func:`export_onnx` and
:func:`quantize_int8` (the model for ONNX Runtime, fp32 and dynamic int8),
:func:`quantize_openvino` (NNCF's static int8 model for OpenVINO),
:func:`quantize_engine` (an int8 engine checkpoint, as ``mbengine quantize``
makes it). torch, transformers, onnxruntime, openvino and nncf are imported
by the functions that need them, not here.

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


ROW_MODES = ("full", "half", "ragged")


def make_inputs(batch: int, seq: int, vocab: int, seed: int = 0, rows: str = "full") -> dict[str, np.ndarray]:
    """Random token ids of shape (batch, seq), right padded as ``rows`` says.

    ``rows``: ``"full"``, every row is ``seq`` real tokens; ``"half"``, the
    later half of the rows (``batch // 2`` of them) holds ``seq // 2`` real
    tokens, the rest is padding; ``"ragged"``, each row's length is drawn
    uniformly from ``seq // 8`` to ``seq`` (seeded by ``seed``), except the
    first row, which is full (so the batch is ``seq`` long). Real tokens have
    token types 0 then 1 (two segments, split at half the row's length) and
    mask 1; padding has id 0 (``[PAD]``), type 0 and mask 0. The ids of the
    real tokens do not depend on ``rows``.
    """
    if rows not in ROW_MODES:
        raise ValueError(f"rows must be one of {ROW_MODES}, got {rows!r}")
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, seq), dtype=np.int64)
    lengths = np.full(batch, seq, np.int64)
    if rows == "half":
        lengths[batch - batch // 2 :] = max(1, seq // 2)
    elif rows == "ragged":
        lengths = rng.integers(max(1, seq // 8), seq + 1, size=batch, dtype=np.int64)
        lengths[0] = seq
    positions = np.arange(seq)
    mask = (positions[None, :] < lengths[:, None]).astype(np.int64)
    types = ((positions[None, :] >= (lengths // 2)[:, None]) & (mask == 1)).astype(np.int64)
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def layer_linears(config) -> list[tuple[str, int, int]]:
    """(name, in features, out features) of every linear one encoder layer runs, as Hugging Face's MobileBertLayer.

    With MobileBertConfig() (hidden 512, intra_bottleneck 128 = true hidden, 4 heads of 32, intermediate 512,
    4 feed-forward networks, key_query_shared_bottleneck, no use_bottleneck_attention) that is:
    bottleneck.input 512->128 (the attention block's residual) and bottleneck.attention 512->128 (the shared
    query/key input); query and key 128->128 each, value 512->128 (it reads the layer's 512-wide input unless
    use_bottleneck_attention); attention.output.dense 128->128; three FFNLayers of 128->512->128; the layer's
    own intermediate 128->512 and output.dense 512->128; output.bottleneck 128->512 back to the hidden size.
    """
    c = config
    hidden, true_hidden, inter = c.hidden_size, c.true_hidden_size, c.intermediate_size
    all_heads = c.num_attention_heads * int(true_hidden / c.num_attention_heads)
    out = []
    if c.use_bottleneck:
        out.append(("bottleneck.input", hidden, c.intra_bottleneck_size))
        if c.key_query_shared_bottleneck and not c.use_bottleneck_attention:
            out.append(("bottleneck.attention", hidden, c.intra_bottleneck_size))
    out += [
        ("attention.self.query", true_hidden, all_heads),
        ("attention.self.key", true_hidden, all_heads),
        ("attention.self.value", true_hidden if c.use_bottleneck_attention else hidden, all_heads),
        ("attention.output.dense", true_hidden, true_hidden),
    ]
    for i in range(c.num_feedforward_networks - 1):
        out += [(f"ffn.{i}.intermediate.dense", true_hidden, inter), (f"ffn.{i}.output.dense", inter, true_hidden)]
    out += [("intermediate.dense", true_hidden, inter), ("output.dense", inter, true_hidden)]
    if c.use_bottleneck:
        out.append(("output.bottleneck.dense", true_hidden, hidden))
    return out


def model_flops(config, lengths) -> float:
    """FLOPs of MobileBertModel's forward pass over sequences of the given real lengths (padding not counted).

    Every linear counts 2 * tokens * in * out: the embedding transformation (trigram input, 3 * 128 -> 512),
    :func:`layer_linears` of each layer, and the pooler's dense (only with classifier_activation, one row per
    sequence). Attention counts 2 * 2 * L**2 * all_head_size per sequence of length L and layer (scores, then
    probabilities times values). Norms, activations, softmax and embedding lookups are left out.
    """
    c = config
    lengths = np.asarray(lengths, np.float64)
    tokens = float(lengths.sum())
    all_heads = c.num_attention_heads * int(c.true_hidden_size / c.num_attention_heads)
    per_layer = sum(2.0 * tokens * k * n for _, k, n in layer_linears(c))
    per_layer += 4.0 * float((lengths**2).sum()) * all_heads
    flops = c.num_hidden_layers * per_layer
    if c.trigram_input or c.embedding_size != c.hidden_size:
        flops += 2.0 * tokens * c.embedding_size * (3 if c.trigram_input else 1) * c.hidden_size
    if getattr(c, "classifier_activation", False):
        flops += 2.0 * len(lengths) * c.hidden_size * c.hidden_size
    return flops


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


def quantize_openvino(src: str, dst: str, vocab: int, samples: int = 128, seq: int = 128) -> str:
    """NNCF's post-training (static) int8 quantization of the ONNX model ``src`` for OpenVINO, saved as IR ``dst``.

    ``dst`` is the .xml path (weights go to the .bin beside it, not compressed to fp16). Calibration:
    ``samples`` sequences of ``make_inputs(samples, seq, vocab, seed=1, rows="ragged")``, one per batch. NNCF
    runs with ``model_type=nncf.ModelType.TRANSFORMER`` and its defaults otherwise. Returns a description of
    the calibration set.
    """
    import nncf
    import openvino as ov

    model = ov.Core().read_model(src)
    calibration = make_inputs(samples, seq, vocab, seed=1, rows="ragged")
    items = [{k: v[i : i + 1] for k, v in calibration.items()} for i in range(samples)]
    quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=samples)
    ov.save_model(quantized, dst, compress_to_fp16=False)
    return (
        f"{samples} random-id sequences of up to {seq} tokens (lengths uniform {max(1, seq // 8)}..{seq}, "
        "right padded, seed 1), batch 1"
    )


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
