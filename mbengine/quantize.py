"""Post-training int8 quantization of a loaded model, calibrated on text.

What becomes int8 (``quantize``):

* every linear's weight, per output channel (``W[n] ~ scale[n] * q[n]``); its
  activations are quantized per row at run time by the kernel
  (:mod:`mbengine.kernels.qlinear`);
* the word embeddings, per row (dequantized on lookup);
* norms, biases, position and token-type embeddings stay float32.

MobileBERT's NoNorm lets a few channels of the residual stream grow to
~1e4-1e7 while the rest stay near 1; one such channel sets every row's
activation scale and flushes the others to zero. Two remedies, both chosen
from calibration data (the model run in float32 on sample text):

1. **Outlier channels**: for each linear, the input channels whose calibration
   maximum exceeds ``outlier_ratio`` times the median channel's maximum (at
   most ``max_outlier_fraction`` of them, the largest first) are taken out of
   the int8 product and applied in float32 in the kernel's epilogue.
2. **Mixed precision**: each linear's own error, with its own calibration
   inputs (int8 product vs float32 product), is measured; a linear whose
   relative error exceeds ``max_error`` stays float32.

:func:`quantize` takes float32 :class:`~mbengine.weights.PackedWeights` and
returns new int8 ones (the input is not changed); the choices and the numbers
behind them come back as a :class:`Report` and are stored in the checkpoint's
config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources

import numpy as np

from .config import MobileBertConfig
from .graph import Linear, build_graph, linear_ops
from .inputs import check_inputs
from .kernels import qlinear as kq
from .runner import Runner
from .weights import WORD_EMBEDDINGS, Int8Linear, PackedWeights

OUTLIER_RATIO = 16.0
MAX_OUTLIER_FRACTION = 1 / 16
MAX_ERROR = 0.05
ATTENTION = ("int8", "float32")  # how an int8 model runs attention (quantize's ``attention``)


@dataclass
class OpReport:
    name: str
    shape: tuple  # (K, N)
    outliers: int  # input channels applied in float32
    max_ratio: float  # largest channel maximum / median channel maximum, on the calibration data
    error: float  # relative error of the int8 product on the calibration inputs
    dtype: str  # "int8", or "float32" when the error was too large


@dataclass
class Report:
    calibration: str
    tokens: int
    ops: list[OpReport] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """What goes into the checkpoint's config: the settings and the decisions."""
        int8 = [op for op in self.ops if op.dtype == "int8"]
        return {
            "calibration": self.calibration,
            "calibration_tokens": self.tokens,
            **self.settings,
            "int8_linears": len(int8),
            "float32_linears": [op.name for op in self.ops if op.dtype != "int8"],
            "outlier_channels": int(sum(op.outliers for op in int8)),
            "max_linear_error": float(max((op.error for op in int8), default=0.0)),
        }

    def table(self) -> str:
        rows = ["| linear | K -> N | outliers | max/median | error | dtype |", "|---|---|---|---|---|---|"]
        rows += [
            f"| {op.name} | {op.shape[0]} -> {op.shape[1]} | {op.outliers} | {op.max_ratio:.3g} | "
            f"{op.error:.2e} | {op.dtype} |"
            for op in self.ops
        ]
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return asdict(self)


# -------------------------------------------------------------- calibration
def sample_texts() -> list[str]:
    """The built-in calibration sentences (general English, one per line)."""
    text = resources.files("mbengine").joinpath("data/calibration.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def calibration_batches(
    config: MobileBertConfig, texts=None, tokenizer=None, *, batch_size: int = 8, max_length: int = 128, seed: int = 0
):
    """(description, [(input_ids, attention_mask, token_type_ids)]) to calibrate a model of ``config`` with.

    Text (``texts`` or the built-in sentences) needs a tokenizer; without one,
    random token ids are used (and said so in the description).
    """
    if tokenizer is not None:
        source = "built-in sentences" if texts is None else "given texts"
        texts = list(texts) if texts is not None else sample_texts()
        if not texts:
            raise ValueError("no calibration texts")
        # sentence pairs, as the model was trained; an odd last sentence goes alone
        firsts, seconds = texts[0 : len(texts) - 1 : 2], texts[1::2]
        chunks = [(firsts[i : i + batch_size], seconds[i : i + batch_size]) for i in range(0, len(firsts), batch_size)]
        if len(texts) % 2:
            chunks.append(([texts[-1]], None))
        batches = []
        for a, b in chunks:
            # (no longer than the model's positions: a small model's calibration must not fail)
            enc = tokenizer(a, b, padding=True, truncation=True, max_length=_text_length(config, max_length))
            batches.append(
                (np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"]), np.asarray(enc["token_type_ids"]))
            )
        return f"{source} ({len(texts)})", batches
    if texts is not None:
        raise ValueError("calibration texts need a tokenizer")
    rng = np.random.default_rng(seed)
    c = config
    seq = min(max_length, c.max_position_embeddings)
    ids = rng.integers(1, c.vocab_size, (batch_size, seq))
    return "random token ids", [(ids, np.ones_like(ids), np.zeros_like(ids))]


def _text_length(config, max_length: int) -> int:
    """Calibration text's token cap: ``max_length``, and no more than the model's positions (when known)."""
    return max_length if config is None else min(max_length, config.max_position_embeddings)


# -------------------------------------------------------------- quantization
def quantize_linear(w: np.ndarray, outliers=(), quantized: tuple | None = None) -> Int8Linear:
    """The int8 form of an (N, K) float weight, with ``outliers`` (input channels) kept in float32.

    ``quantized``: :func:`_inlier_weight` of the same weight and outliers, if already made.
    """
    outliers = np.asarray(sorted(int(i) for i in outliers), np.int64)
    wq, scale = quantized if quantized is not None else _inlier_weight(w, outliers)
    return Int8Linear.from_parts(kq.pack(wq), scale, outliers, np.ascontiguousarray(w[:, outliers].T, np.float32))


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An embedding table as int8 rows with one float32 scale per row."""
    return kq.quantize_weight(table)


def choose_outliers(amax: np.ndarray, ratio: float, max_fraction: float) -> tuple[np.ndarray, float]:
    """Input channels whose maximum exceeds ``ratio`` x the median channel's (largest first, capped)."""
    median = float(np.median(amax))
    floor = median if median > 0 else float(amax.max(initial=0.0)) or 1.0
    ratios = amax / floor
    cap = int(max_fraction * amax.shape[0])
    order = np.argsort(-ratios, kind="stable")
    chosen = [int(i) for i in order[:cap] if ratios[i] > ratio]
    return np.asarray(chosen, np.int64), float(ratios.max(initial=0.0))


def _inlier_weight(w: np.ndarray, outliers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, scales) of ``w`` without its outlier input channels, as the kernel gets them."""
    w_in = np.array(w, np.float32)  # a copy
    w_in[:, outliers] = 0.0
    return kq.quantize_weight(w_in)


def _simulate(x: np.ndarray, w: np.ndarray, wq: np.ndarray, sw: np.ndarray, outliers: np.ndarray) -> np.ndarray:
    """The int8 product as the kernel forms it, in float64 (for measuring the error); w, wq: float64."""
    x = x.astype(np.float64)
    inl = x.copy()
    inl[:, outliers] = 0.0
    sx = np.abs(inl).max(axis=1) / kq.XMAX
    sx[sx == 0] = 1.0
    qx = np.clip(np.rint(inl / sx[:, None]), -kq.XMAX, kq.XMAX)
    y = (qx @ wq.T) * sx[:, None] * sw.astype(np.float64)[None, :]
    return y + x[:, outliers] @ w[:, outliers].T


ERROR_ROWS = 256  # rows per step of the error measurement: a 30522-wide decoder output is 62 MB of float64 each


def quantize(
    weights: PackedWeights,
    batches,
    *,
    calibration: str = "",
    outlier_ratio: float = OUTLIER_RATIO,
    max_outlier_fraction: float = MAX_OUTLIER_FRACTION,
    max_error: float = MAX_ERROR,
    attention: str = "int8",
) -> tuple[PackedWeights, Report]:
    """The int8 form of float32 ``weights`` (any head), and what was decided and measured.

    ``batches``: [(input_ids, attention_mask, token_type_ids)] run in float32 to
    collect each linear's input statistics (:func:`calibration_batches`).
    ``attention``: ``"int8"``, attention's scores in integers at run time where that is
    faster (kernels.qattention: queries and keys quantized per row, nothing to calibrate;
    sequences of kernels.layout.INT8_ATTENTION_FROM tokens or more, on the int8 variants of
    INT8_ATTENTION_VARIANTS), or ``"float32"``, attention as the float32 model runs it
    everywhere. Recorded in the summary, which the model reads.
    ``weights`` are not changed.
    """
    if weights.dtype != "float32":
        raise ValueError(f"the weights are already {weights.dtype}")
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
    runner = Runner(build_graph(weights))
    ops = list(linear_ops(runner.graph))
    dense = {op.name: op.weight.dense() for op in ops}
    amax = {op.name: np.zeros(op.x.width) for op in ops}
    inputs = [check_inputs(weights.config, *batch) for batch in batches]
    tokens = sum(int(np.asarray(mask).sum()) for _, mask, _, _ in inputs)

    def run(observe):
        for ids, mask, types, positions in inputs:
            runner.run(ids, mask, types, positions, observe=observe, collect=lambda arena: None)

    def stats(op, arena):
        if isinstance(op, Linear):
            rows = _visible_rows(arena, op)
            np.maximum(amax[op.name], np.abs(rows).max(axis=0, initial=0.0), out=amax[op.name])

    run(stats)
    chosen, ratios = {}, {}
    for op in ops:
        chosen[op.name], ratios[op.name] = choose_outliers(amax[op.name], outlier_ratio, max_outlier_fraction)
    err_num = {op.name: 0.0 for op in ops}
    err_den = {op.name: 0.0 for op in ops}
    inlier_weights = {op.name: _inlier_weight(dense[op.name], chosen[op.name]) for op in ops}

    def errors(op, arena):
        if isinstance(op, Linear):
            rows = _visible_rows(arena, op)
            w = dense[op.name].astype(np.float64)
            wq, sw = inlier_weights[op.name]
            wq = wq.astype(np.float64)
            for start in range(0, rows.shape[0], ERROR_ROWS):
                x = rows[start : start + ERROR_ROWS]
                exact = x.astype(np.float64) @ w.T
                err_num[op.name] += float(np.sum((_simulate(x, w, wq, sw, chosen[op.name]) - exact) ** 2))
                err_den[op.name] += float(np.sum(exact**2))

    run(errors)
    report = Report(
        calibration,
        tokens,
        settings={
            "outlier_ratio": outlier_ratio,
            "max_outlier_fraction": max_outlier_fraction,
            "max_error": max_error,
            "attention": attention,
        },
    )
    linears = dict(weights.linears)
    for op in ops:
        error = (err_num[op.name] / err_den[op.name]) ** 0.5 if err_den[op.name] > 0 else 0.0
        dtype = "int8" if error <= max_error else "float32"
        report.ops.append(
            OpReport(op.name, (op.x.width, op.out.width), len(chosen[op.name]), ratios[op.name], error, dtype)
        )
        if dtype == "int8":
            linears[op.name] = quantize_linear(dense[op.name], chosen[op.name], inlier_weights[op.name])
    table, scale = quantize_rows(weights.tensors[WORD_EMBEDDINGS])
    scale.flags.writeable = False
    table.flags.writeable = False
    quantized = weights.replace(
        tensors={**weights.tensors, WORD_EMBEDDINGS: table},
        linears=linears,
        row_scales={WORD_EMBEDDINGS: scale},
        quantization=report.summary(),
    )
    return quantized, report


def _visible_rows(arena, op) -> np.ndarray:
    """The op's input rows that belong to real tokens (padding rows say nothing about the data)."""
    x = arena.view(op.x)
    if x.shape[0] == arena.attention_mask.size:
        return x[arena.attention_mask.reshape(-1) != 0]
    return x
