"""The ``mbengine`` command line.

    mbengine demo [--model PATH] [--dir DIR] [--text T] [--batch 1] [--seq 128] [--threads N] [--repeats 10]
        Text through the whole path, offline: a full-size MobileBERT masked-LM
        (google/mobilebert-uncased's shape, seeded random weights, written once
        to a per-user cache with a WordPiece vocabulary trained on the spot),
        its tokenizer and the fill-mask pipeline. Shows the tokens, the
        (meaningless) answer, load, first-call and median times, the threads
        and the CPU's int8 kernel. --model runs real weights instead.
    mbengine run CHECKPOINT --ids "101 7592 102" [--threads N]
        Run a checkpoint on token ids and print the output shapes and values.
    mbengine convert SRC DST [--class MobileBertForMaskedLM] [--force]
        Write SRC (a Hugging Face checkpoint directory) as an engine checkpoint:
        weights packed for this CPU, loading memory-mapped with no work.
    mbengine info CHECKPOINT
        What a checkpoint holds: format, model class, sizes, tensors.
    mbengine fill-mask | text-classification | token-classification | feature-extraction MODEL [TEXT ...]
    mbengine question-answering MODEL --question Q [--context C]
    mbengine multiple-choice MODEL --prompt P --choice A --choice B ...
    mbengine next-sentence MODEL TEXT_A TEXT_B
        Run a task pipeline. Texts come from the arguments, else from --file
        (one per line), else from stdin; --json prints JSON; long inputs show
        progress on stderr.
    mbengine warmup CHECKPOINT
        Compile (or load from the cache) every kernel the checkpoint's model
        needs, so the first real request is fast. The cache lives in
        NUMBA_CACHE_DIR (default: __pycache__ next to the installed kernels,
        or a user cache directory when that is not writable).

MODEL, CHECKPOINT and SRC are checkpoint directories or Hugging Face Hub model
ids (``google/mobilebert-uncased``; ``--revision`` picks a branch, tag or
commit), downloaded once into the Hugging Face cache (mbengine.hub;
``pip install "mbengine[hub]"``).

Errors are one line on stderr, ``mbengine: error: ...`` (``--debug`` shows
the traceback instead), with exit status 2 for a bad command line (an unknown
option, a bad value, a file where a directory belongs), 1 for everything the
command could not do with what it was given (a broken checkpoint, bad input
text, an unreadable file; an internal error too, said as such) and 130 when
interrupted. Errors raised by the library name Python
arguments (``truncation=True``); the CLI says them in its own flags through
one table, :data:`CLI_WORDS`. User text quoted in an error is cut to its
first characters and its length.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def random_checkpoint(
    directory: str, config=None, seed: int = 0, std: float = 0.02, head: str | None = None, pooler: bool | None = None
) -> str:
    """Write a Hugging Face style checkpoint with seeded random weights; return its path.

    The base model, with a pooler unless ``pooler`` is False or ``head`` goes without one, plus the
    tensors of ``head`` (e.g. "masked_lm") that Hugging Face saves (not the ones tied to others).
    """
    from safetensors.numpy import save_file

    from .config import MobileBertConfig
    from .converters.canonical import TIED, model_shapes

    if config is None:
        config = MobileBertConfig(classifier_activation=False)  # google/mobilebert-uncased
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in sorted(model_shapes(config, head, pooler).items()):
        if name in TIED:
            continue
        if len(shape) == 1 and name.endswith(".weight"):  # norm scales
            tensors[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (std * rng.standard_normal(shape)).astype(np.float32)
    os.makedirs(directory, exist_ok=True)
    config.save_pretrained(directory)
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    return directory


class UsageError(ValueError):
    """A bad command-line option: exit status 2, as argparse's own usage errors."""


EXIT_ERROR, EXIT_USAGE = 1, 2
# the library's Python advice -> the same advice in this command line's flags
CLI_WORDS = {
    "pass truncation=True": "pass --truncation",
    "pass add_pooling_layer=False": "pass --no-pooler",
    "pass force=True (--force)": "pass --force",
    "load it with ": "pass --class ",
}
MAX_ERROR = 400  # characters of an error line; longer ones (quoted user text) are cut


def cli_message(e: BaseException) -> str:
    """The one line the CLI prints for ``e`` (module doc)."""
    lines = [line.strip() for line in str(e).strip().splitlines()] or [type(e).__name__]
    hint = getattr(e, "hint", None)
    if hint and len(lines) > 2 and lines[-1] == hint.strip():  # what to do first: a long list is cut below
        lines.insert(1, lines.pop())
    text = lines[0] + (": " + "; ".join(lines[1:]) if len(lines) > 1 else "")
    if isinstance(e, UnicodeDecodeError):
        text = f"not UTF-8 text ({e.reason} at byte {e.start})"
    for python, flag in CLI_WORDS.items():
        text = text.replace(python, flag)
    if len(text) > MAX_ERROR:
        text = f"{text[: MAX_ERROR - 60]}... [cut: the message is {len(text)} characters]"
    return f"mbengine: error: {text}"


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in the one-line format (module doc)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"mbengine: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _directory(path: str) -> str:
    """``path`` if it is not a file; a file given for a directory is a usage error naming its folder."""
    if os.path.isfile(path):
        folder = os.path.dirname(os.path.abspath(path))
        raise UsageError(f"{path} is a file; this needs a checkpoint directory: did you mean its folder {folder}?")
    return path


def _checkpoint(path: str, revision: str | None = None) -> str:
    """A checkpoint directory argument: a Hugging Face Hub model id becomes its snapshot in the Hugging Face
    cache (downloaded if needed, at ``--revision``); then as :func:`_directory`."""
    from . import hub

    return _directory(hub.local_path(path, revision))


DEMO_TEXT = "the capital of france is [MASK]."
BUSY = 1.5  # median / minimum above this: the demo says the machine looks busy


def demo_dir() -> str:
    """The demo checkpoint's default home: a per-user cache directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mbengine", "demo-mobilebert")


def demo_vocabulary(size: int) -> list[str]:
    """A WordPiece vocabulary of ``size`` tokens, trained now with ``tokenizers`` on mbengine's built-in
    sentences (mbengine/data/calibration.txt), padded with [unused<i>] tokens to the model's vocab size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from .quantize import sample_texts
    from .tokenizer import SPECIAL_TOKENS

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(sample_texts(), trainer)
    vocab = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    return vocab + [f"[unused{i}]" for i in range(size - len(vocab))]


def demo_checkpoint(directory: str, config=None) -> tuple[str, float | None]:
    """A MobileBertForMaskedLM (full size unless ``config``) with seeded random weights and a vocab.txt in
    ``directory`` (written once, atomically); returns (directory, seconds spent writing it, or None if it
    was there)."""
    from .config import MobileBertConfig
    from .converters.publish import Staging

    if all(os.path.isfile(os.path.join(directory, f)) for f in ("config.json", "model.safetensors", "vocab.txt")):
        return directory, None
    t0 = time.perf_counter()
    if config is None:
        config = MobileBertConfig(classifier_activation=False)
    config.extra["architectures"] = ["MobileBertForMaskedLM"]
    stage = Staging(directory)
    with stage as tmp:
        random_checkpoint(tmp, config, head="masked_lm")
        with open(os.path.join(tmp, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(demo_vocabulary(config.vocab_size)) + "\n")
        stage.publish()  # (replaces an incomplete or older demo directory in one step)
    return directory, time.perf_counter() - t0


def _timed(fn, repeats: int) -> np.ndarray:
    """Seconds of ``repeats`` calls of ``fn``, one by one."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.array(times)


def _check_demo_args(args) -> None:
    for name, low, high in (("batch", 1, 256), ("seq", 3, 512), ("repeats", 1, 100000)):
        value = getattr(args, name)
        if not low <= value <= high:
            raise UsageError(f"--{name} must be in [{low}, {high}], got {value}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")


def _demo(args) -> int:
    import warnings

    from .errors import PerformanceWarning

    with warnings.catch_warnings():
        # the demo's own last lines say which kernels ran and how to build the native library
        warnings.filterwarnings("ignore", message="running the kernels on Numba", category=PerformanceWarning)
        return _demo_run(args)


def _demo_run(args) -> int:
    from . import backend
    from .pipelines import pipeline

    _check_demo_args(args)
    if args.model is None:
        print(
            "mbengine demo: a full-size MobileBERT (google/mobilebert-uncased's shape) with RANDOM weights: "
            "its answers are meaningless, its speed is real. --model PATH runs real weights."
        )
        directory, wrote = demo_checkpoint(args.dir or demo_dir())
        if wrote is not None:
            print(
                f"wrote        {directory} in {wrote:.1f} s (seeded random weights; a WordPiece vocabulary "
                "trained just now on mbengine's built-in sentences)"
            )
    else:
        directory = _checkpoint(args.model, args.revision)  # (a Hub model id: its cached snapshot)
        if not os.path.isdir(directory):
            raise UsageError(
                f"--model {directory}: not a checkpoint directory (give a local directory with "
                "config.json and the weights, or a Hugging Face Hub model id)"
            )
    t0 = time.perf_counter()
    fill = pipeline("fill-mask", model=directory, threads=args.threads)
    print(f"loaded       {directory} in {(time.perf_counter() - t0) * 1e3:.0f} ms (memory-mapped)")
    text = args.text
    tokens = fill.tokenizer.convert_ids_to_tokens(np.asarray(fill.tokenizer(text)["input_ids"]).reshape(-1))
    t0 = time.perf_counter()
    answers = fill(text, top_k=3)
    first = time.perf_counter() - t0
    times = _timed(lambda: fill(text, top_k=3), args.repeats)
    shown = ", ".join(f"{a['token_str']!r} ({a['score']:.3f})" for a in answers)
    print(f"task         fill-mask on {text!r}: {len(tokens)} tokens {' '.join(tokens)}")
    print(f"answer       {shown}" + ("   (random weights: meaningless)" if args.model is None else ""))
    print(f"first call   {first:.2f} s (includes compiling the kernels, or loading them from the cache)")
    print(
        f"fill-mask    median {np.median(times) * 1e3:.1f} ms, min {np.min(times) * 1e3:.1f} ms over "
        f"{args.repeats} calls (tokenize, model, top 3)"
    )
    from .modeling import MobileBertModel

    # the encoder alone, as the README's speed table times it (the masked-LM head's logits, one per
    # vocabulary entry and token, would add more multiply-adds than the whole encoder)
    model = MobileBertModel.from_pretrained(directory, threads=args.threads, add_pooling_layer=False)
    rng = np.random.default_rng(1)
    ids = rng.integers(1000, model.config.vocab_size, (args.batch, args.seq))
    model(ids)
    model_times = _timed(lambda: model(ids), args.repeats)
    med, low = np.median(model_times), np.min(model_times)
    print(
        f"model        batch {args.batch} x seq {args.seq}: median {med * 1e3:.1f} ms, min {low * 1e3:.1f} ms "
        f"over {args.repeats} calls (the encoder, as in the README's speed table)"
    )
    kernels = backend.get()
    threads = args.threads or kernels.get_num_threads()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    layout = kernels.layout()
    print(
        f"threads      {threads} (of {usable} usable CPUs); kernels compiled for {layout.target}; "
        f"int8 kernel on this CPU: {layout.variant}; {_kernels_line(kernels)}"
    )
    if med > BUSY * low or np.median(times) > BUSY * np.min(times):
        print(
            f"note         the median is {max(med / low, np.median(times) / np.min(times)):.1f}x the minimum: "
            f"the machine looks busy. Try --threads 1, or as many threads as there are idle cores."
        )
    return 0


def _run(args) -> int:
    from .modeling import MobileBertModel

    try:
        ids = np.array([[int(t) for t in args.ids.replace(",", " ").split()]], dtype=np.int64)
    except ValueError:
        raise UsageError(f"--ids must be integers separated by spaces or commas, got {args.ids!r}") from None
    if ids.size == 0:
        raise UsageError("--ids is empty")
    model = MobileBertModel.from_pretrained(_checkpoint(args.checkpoint, args.revision), threads=args.threads)
    out = model(ids)
    np.set_printoptions(precision=4, suppress=False, linewidth=120)
    print("last_hidden_state", out.last_hidden_state.shape)
    print(out.last_hidden_state[0, :, :6])
    print("pooler_output", out.pooler_output.shape)
    print(out.pooler_output[:, :6])
    return 0


def _warmup(args) -> int:
    t0 = time.perf_counter()
    path = _checkpoint(args.checkpoint, args.revision)  # (a Hub model id: its cached snapshot)
    cls = model_class(path)  # the checkpoint's own class: its head's kernels too
    model = cls.from_pretrained(path, threads=args.threads, add_pooling_layer=None if args.pooler else False)
    _exercise(model)
    print(f"kernels for {args.checkpoint} ({cls.__name__}) ready in {time.perf_counter() - t0:.2f} s")
    if args.native:
        _build_native([model], lambda m: print(f"[{time.perf_counter() - t0:6.1f} s] {m}"))
    return 0


CLASSES = (
    "MobileBertModel",
    "MobileBertForPreTraining",
    "MobileBertForMaskedLM",
    "MobileBertForNextSentencePrediction",
    "MobileBertForSequenceClassification",
    "MobileBertForMultipleChoice",
    "MobileBertForTokenClassification",
    "MobileBertForQuestionAnswering",
)


def model_class(path, name=None):
    """The mbengine class for a checkpoint: ``name``, else its config's "architectures" when the tensors
    agree, else the head its tensor names hold (an engine checkpoint: the head it was written with)."""
    import mbengine

    from .modeling import HEAD_CLASS_NAMES, _read_config

    if name is None:
        raw = _read_config(os.fspath(path))
        meta = raw.get("mbengine")
        if isinstance(meta, dict):
            name = HEAD_CLASS_NAMES.get(meta.get("head"), "MobileBertModel")
        else:
            architectures = raw.get("architectures") or []
            # BERT checkpoints run as the MobileBERT class of the same head
            architectures = ["Mobile" + a if isinstance(a, str) and a.startswith("Bert") else a for a in architectures]
            declared = next((a for a in architectures if a in CLASSES), None)
            # (a base model loads from any checkpoint: its tensor names need not be read)
            name = declared if declared == "MobileBertModel" else _class_from_tensors(path, declared)
    if name not in CLASSES:
        raise ValueError(f"unknown model class {name!r}; choose one of {', '.join(CLASSES)}")
    return getattr(mbengine, name)


def _class_from_tensors(path, declared: str | None) -> str:
    """``declared`` if the checkpoint's tensors hold its head, else the class of the head they hold."""
    from .converters import canonical
    from .modeling import HEAD_CLASS_NAMES, tensor_names

    names = tensor_names(path)
    head, candidates = canonical.infer_head(names)
    inferred = {HEAD_CLASS_NAMES[h] for h in candidates} if candidates else {HEAD_CLASS_NAMES[head]}
    if declared in inferred:
        return declared
    if len(inferred) == 1:
        return inferred.pop()
    raise UsageError(
        f"{path} has {canonical.heads_present(names)}, which several classes use: pass --class "
        f"with one of {', '.join(sorted(inferred))}"
    )


def _convert(args) -> int:
    from . import hub
    from .converters import engine

    args.src = hub.local_path(args.src, args.revision)  # a Hub model id: its snapshot in the Hugging Face cache
    cls = model_class(args.src, args.model_class)
    if os.path.exists(args.dst) and not args.force:
        raise FileExistsError(f"{args.dst} exists; pass --force to replace it")
    t0 = time.perf_counter()
    kwargs = {"add_pooling_layer": False} if args.no_pooler else {}

    def step(message):
        print(f"[{time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)

    step(f"reading {args.src} as {cls.__name__}")
    weights = cls.from_pretrained(args.src, **kwargs).weights
    step(f"read, checked and packed: {len(weights.linears)} linears, {len(weights.tensors)} other tensors")
    if args.dtype == "int8":
        weights = _quantize_weights(weights, args, step)
    step(f"writing {args.dst}")
    out = engine.write(
        weights, args.dst, tokenizer_from=args.src if os.path.isdir(args.src) else None, force=args.force
    )
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"wrote {cls.__name__} to {out} ({size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    if args.native:
        step("compiling the converted model's kernels into the native library (--no-native skips it)")
        model = model_class(str(out)).from_pretrained(str(out))
        _exercise(model)
        _build_native([model], step)
    return 0


def _quantize_weights(weights, args, step):
    from . import quantize

    texts = None
    if args.calibration:
        with open(args.calibration, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
        if not texts:
            raise ValueError(f"{args.calibration} holds no text (one sentence per line expected)")
    tokenizer = None
    if os.path.isdir(args.src) and any(
        os.path.isfile(os.path.join(args.src, f)) for f in ("tokenizer.json", "vocab.txt")
    ):
        from .tokenizer import MobileBertTokenizer

        tokenizer = MobileBertTokenizer.from_pretrained(args.src)
    elif texts is not None:
        raise ValueError(f"--calibration needs a tokenizer (tokenizer.json or vocab.txt) in {args.src}")
    description, batches = quantize.calibration_batches(weights.config, texts, tokenizer)
    step(f"calibrating on {description}; quantizing")
    weights, report = quantize.quantize(weights, batches, calibration=description, attention=args.attention)
    summary = report.summary()
    step(
        f"{summary['int8_linears']} linears int8, {len(summary['float32_linears'])} kept float32, "
        f"{summary['outlier_channels']} outlier channels in float32, largest linear error "
        f"{summary['max_linear_error']:.2e}"
    )
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            f.write(report.table() + "\n")
    return weights


def _quantize(args) -> int:
    args.dtype = "int8"
    return _convert(args)


def _info(args) -> int:
    from . import safetensors_mmap
    from .config import MobileBertConfig

    args.checkpoint = _checkpoint(args.checkpoint, args.revision)  # (a Hub model id: its cached snapshot)
    config = MobileBertConfig.from_pretrained(args.checkpoint)
    meta = config.extra.get("mbengine")
    path = os.path.join(args.checkpoint, "model.safetensors")
    header, _ = safetensors_mmap.read_header(path)
    header.pop("__metadata__", None)
    params = sum(int(np.prod(v["shape"])) for v in header.values())
    c = config
    print(f"checkpoint   {args.checkpoint}")
    if isinstance(meta, dict):
        print(
            f"format       mbengine engine checkpoint v{meta.get('format_version')}, {meta.get('dtype')}, "
            f"panels of {meta.get('tile_cols')} columns, head {meta.get('head')}, pooler {meta.get('pooler')}"
        )
        q = meta.get("quantization")
        if isinstance(q, dict):
            from .kernels.layout import INT8_ATTENTION_FROM, INT8_ATTENTION_VARIANTS

            attention = (
                "attention float32"
                if q.get("attention") == "float32"
                else f"attention scores int8 from {INT8_ATTENTION_FROM} tokens on {'/'.join(INT8_ATTENTION_VARIANTS)}"
            )
            print(
                f"quantization {q.get('int8_linears')} linears int8, float32: "
                f"{', '.join(q.get('float32_linears') or []) or 'none'}; {q.get('outlier_channels')} outlier "
                f"channels; calibrated on {q.get('calibration')} ({q.get('calibration_tokens')} tokens); {attention}"
            )
    else:
        print(f"format       Hugging Face ({', '.join(c.extra.get('architectures') or ['no architectures'])})")
    print(
        f"model        {c.num_hidden_layers} layers, hidden {c.hidden_size}, true hidden {c.true_hidden_size}, "
        f"embedding {c.embedding_size}, {c.num_attention_heads} heads, intermediate {c.intermediate_size} "
        f"x {c.num_feedforward_networks} FFNs, {c.normalization_type}, {c.hidden_act}, vocab {c.vocab_size}"
    )
    print(f"tensors      {len(header)} ({params / 1e6:.1f} M values stored, {os.path.getsize(path) / 2**20:.1f} MiB)")
    files = sorted(os.listdir(args.checkpoint))
    print(f"files        {', '.join(files)}")
    from . import backend

    kernels = backend.get()
    layout = kernels.layout()
    print(f"kernels      compiled for {layout.target}; int8 micro-kernel {layout.variant}; {_kernels_line(kernels)}")
    return 0


def _kernels_line(kernels) -> str:
    if kernels.name == "native":
        return f"run from the native library {kernels.library.path} (Numba not loaded)"
    return "run on Numba (no native library for this build: `mbengine warmup CHECKPOINT` builds one)"


def _exercise(model) -> None:
    """Call ``model`` every way that needs its own kernel build: padded, with hidden states and attention
    probabilities, and a right-padded batch run on its real tokens (what pipelines send)."""
    ids = np.zeros((2, 1, 2) if model.HEAD == "multiple_choice" else (2, 2), np.int64)  # (batch, [choices,] seq)
    mask = np.ones_like(ids)
    mask[1, ..., 1:] = 0
    model(ids)
    model(ids, output_hidden_states=True, output_attentions=True)
    model(ids, attention_mask=mask)


def _native_arg(parser, what: str) -> None:
    parser.add_argument("--no-native", dest="native", action="store_false", help=what)


def _build_native(models, step) -> None:
    """Build (or extend) the native kernel library for the models' calls; a failure is reported, not raised:
    the models still run on Numba."""
    from .backend import build_native

    try:
        path = build_native(models)
    except (RuntimeError, OSError, ImportError) as e:
        step(f"native kernel library NOT built ({e}); models run on Numba (more memory, slower start)")
        return
    step(f"native kernel library ready: {path.with_suffix('.so')} (processes that load models need not import Numba)")


def _lines(data: bytes, name: str) -> list[str]:
    """The non-empty lines of UTF-8 ``data``; an undecodable line is an error naming ``name`` and the line."""
    texts = []
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{name}: line {number} is not UTF-8 text ({e.reason} at byte {e.start + 1} of the line)"
            ) from None
        if line.strip():
            texts.append(line)
    if not texts:
        raise ValueError(f"{name} has no text (only empty lines, or nothing)")
    return texts


def _read_texts(args) -> list[str]:
    if getattr(args, "texts", None):
        return list(args.texts)
    if getattr(args, "file", None):
        if os.path.isdir(args.file):
            raise UsageError(f"--file {args.file} is a directory; give a text file, one input per line")
        with open(args.file, "rb") as f:
            return _lines(f.read(), f"--file {args.file}")
    if sys.stdin.isatty():
        raise UsageError("no input: give texts as arguments, --file FILE, or pipe them on stdin")
    stream = getattr(sys.stdin, "buffer", None)  # (a text-only stand-in for stdin has none)
    return _lines(stream.read() if stream is not None else sys.stdin.read().encode("utf-8"), "stdin")


def _plain(x):
    """NumPy values as Python ones (for JSON and tables)."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


TABLE_CELL = 60  # characters of a table cell; longer text is cut with "..."


def _cell(v) -> str:
    text = f"{v:.4f}" if isinstance(v, float) else str(v)
    return text if len(text) <= TABLE_CELL else text[: TABLE_CELL - 3] + "..."


def table(rows: list[dict]) -> str:
    """Rows of one pipeline result as an aligned text table, the columns in the rows' key order."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    cells = [keys] + [[_cell(row.get(k, "")) for k in keys] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(keys))]
    numeric = [all(isinstance(row.get(k), (int, float)) for row in rows) for k in keys]
    lines = [
        "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip() for r in cells
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _print(result, as_json: bool) -> None:
    import json

    result = _plain(result)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    elif isinstance(result, list) and result and all(isinstance(r, dict) for r in result):
        print(table(result))
    elif isinstance(result, dict):
        print(table([result]))
    elif isinstance(result, list) and result and all(isinstance(v, (int, float)) for v in result):
        shown = ", ".join(f"{v:.4f}" for v in result[:6])
        print(f"vector of {len(result)}: [{shown}{', ...' if len(result) > 6 else ''}]  (--json prints it whole)")
    else:
        print(result)


def _task(args) -> int:
    from .pipelines import pipeline

    if getattr(args, "max_length", None) is not None and not args.truncation:
        raise UsageError("--max-length applies only with --truncation")
    pipe = pipeline(
        args.command,
        model=_checkpoint(args.model, args.revision),
        threads=args.threads,
        batch_size=args.batch_size,
        batch_tokens=args.batch_tokens,
    )
    task = args.command
    if task == "question-answering":
        if args.texts:
            raise UsageError(
                f"question-answering reads its context from --context, --file or stdin, not from "
                f"positional texts ({len(args.texts)} given after the checkpoint)"
            )
        context = args.context if args.context is not None else "\n".join(_read_texts(args))
        if not context.strip():
            raise ValueError("the context is empty")
        _print(
            pipe(
                args.question,
                context,
                top_k=args.top_k,
                doc_stride=args.doc_stride,
                max_answer_len=args.max_answer_len,
                handle_impossible_answer=args.impossible,
            ),
            args.json,
        )
        return 0
    if task == "multiple-choice":
        _print(pipe(args.prompt, args.choice, truncation=args.truncation), args.json)
        return 0
    if task == "next-sentence":
        _print(pipe(args.text_a, args.text_b, truncation=args.truncation), args.json)
        return 0
    texts = _read_texts(args)
    cut = {"truncation": True, "max_length": args.max_length} if getattr(args, "truncation", False) else {}
    kwargs = {
        "fill-mask": lambda: {
            "top_k": args.top_k,
            **({"targets": args.targets} if args.targets else {}),
            **({"tokenizer_kwargs": cut} if cut else {}),
        },
        "text-classification": lambda: {**({} if args.top_k is None else {"top_k": args.top_k}), **cut},
        "token-classification": lambda: {"aggregation_strategy": args.aggregation},
        "feature-extraction": lambda: {"pooling": args.pooling, "normalize": args.normalize, **cut},
    }[task]()
    step = max(args.batch_size * 8, 1)
    show = len(texts) > step and not args.json or len(texts) > 4 * step
    for start in range(0, len(texts), step):
        part = texts[start : start + step]
        results = pipe(part, **kwargs)
        for text, result in zip(part, results):
            if args.json:
                _print({"text": text, "result": result}, True)
            else:
                print(f"# {text}")
                _print(result, False)
        if show:
            done = min(start + step, len(texts))
            print(f"\r{done}/{len(texts)} texts", end="" if done < len(texts) else "\n", file=sys.stderr)
    return 0


def _batch_tokens(text: str):
    """--batch-tokens: "auto", "none" (None) or a number."""
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, 'none' or 'auto', got {text!r}") from None


def _add_tasks(sub) -> None:
    def common(p, texts=True):
        p.add_argument("model", help="checkpoint directory (model + tokenizer files) or Hugging Face Hub model id")
        _revision_arg(p)
        if texts:
            p.add_argument("texts", nargs="*", help="input texts (else --file, else stdin)")
            p.add_argument("--file", help="read texts from FILE, one per line")
        p.add_argument("--json", action="store_true", help="print JSON, one object per input")
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--batch-size", type=int, default=64, help="texts per model call, at most (default 64)")
        p.add_argument(
            "--batch-tokens",
            type=_batch_tokens,
            default="auto",
            help="real tokens per model call, at most: a number, 'none' (no cap) or 'auto' "
            "(the default: 2048, 256 for fill-mask)",
        )
        p.set_defaults(func=_task)

    def truncation(p, max_length=True):
        p.add_argument(
            "--truncation",
            action="store_true",
            help="cut inputs longer than the model takes (else such an input is an error)",
        )
        if max_length:
            p.add_argument(
                "--max-length",
                type=int,
                default=None,
                help="with --truncation: cut at this many tokens (default: the model's limit)",
            )

    p = sub.add_parser("fill-mask", help="predict [MASK] tokens")
    common(p)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--targets", nargs="+", help="only score these words")
    truncation(p)
    p = sub.add_parser("text-classification", help="classify texts")
    common(p)
    p.add_argument("--top-k", type=int, default=None, help="return the k best labels per text")
    truncation(p)
    p = sub.add_parser("token-classification", help="tag tokens / find entities")
    common(p)
    p.add_argument("--aggregation", default="simple", choices=["none", "simple", "first", "average", "max"])
    p = sub.add_parser("feature-extraction", help="embed texts")
    common(p)
    p.add_argument("--pooling", default="mean", choices=["cls", "mean"])
    p.add_argument("--normalize", action="store_true")
    truncation(p)
    p = sub.add_parser("question-answering", help="find answers in a context")
    common(p)
    p.add_argument("--question", required=True)
    p.add_argument("--context", help="the context (else --file or stdin)")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--max-answer-len", type=int, default=15)
    p.add_argument("--impossible", action="store_true", help="allow a null answer (SQuAD 2.0)")
    p = sub.add_parser("multiple-choice", help="pick the best continuation")
    common(p, texts=False)
    p.add_argument("--prompt", required=True)
    p.add_argument("--choice", action="append", required=True)
    truncation(p, max_length=False)
    p = sub.add_parser("next-sentence", help="probability that B follows A")
    common(p, texts=False)
    p.add_argument("text_a")
    p.add_argument("text_b")
    truncation(p, max_length=False)


def _calibration_args(p) -> None:
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="int8: calibration text, one sentence per line (default: built-in sentences; random "
        "token ids when SRC has no tokenizer)",
    )
    p.add_argument("--report", metavar="FILE", help="int8: write the per-linear quantization table (markdown)")
    p.add_argument(
        "--attention",
        choices=("int8", "float32"),
        default="int8",
        help="int8: attention's scores in int8 for long sequences on CPUs where that is faster (default) or "
        "attention in float32 everywhere",
    )


def _revision_arg(p) -> None:
    p.add_argument(
        "--revision",
        default=None,
        help="with a Hugging Face Hub model id: the branch, tag or commit hash (default: main)",
    )


def main(argv=None) -> int:
    from . import __version__
    from .errors import MBEngineError

    parser = _Parser(prog="mbengine", description="MobileBERT inference on Numba kernels")
    parser.add_argument("--version", action="version", version=f"mbengine {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run text through a full-size MobileBERT end to end (offline)")
    d.add_argument(
        "--model",
        metavar="PATH",
        help="a masked-LM checkpoint directory with a tokenizer, or a Hugging "
        "Face Hub model id (default: a full-size MobileBERT with random weights, written once)",
    )
    _revision_arg(d)
    d.add_argument("--dir", help=f"where the random-weight demo checkpoint lives (default: {demo_dir()})")
    d.add_argument("--text", default=DEMO_TEXT, help=f"text with one [MASK] (default: {DEMO_TEXT!r})")
    d.add_argument("--batch", type=int, default=1, help="batch of the model timing (default 1)")
    d.add_argument("--seq", type=int, default=128, help="sequence length of the model timing (default 128)")
    d.add_argument("--threads", type=int, default=None, help="threads (default: every CPU Numba uses)")
    d.add_argument("--repeats", type=int, default=10, help="timed calls (default 10)")
    d.set_defaults(func=_demo)
    r = sub.add_parser("run", help="run a checkpoint on token ids")
    r.add_argument("checkpoint")
    r.add_argument("--ids", required=True, help='token ids, e.g. "101 7592 2088 102"')
    _revision_arg(r)
    r.add_argument("--threads", type=int, default=None)
    r.set_defaults(func=_run)
    cv = sub.add_parser("convert", help="write a checkpoint as an engine checkpoint (packed, memory-mapped)")
    cv.add_argument("src")
    cv.add_argument("dst")
    cv.add_argument("--class", dest="model_class", default=None, help="model class (default: from config.json)")
    cv.add_argument("--no-pooler", action="store_true", help="the source has no pooler weights")
    cv.add_argument("--dtype", choices=["float32", "int8"], default="float32")
    cv.add_argument("--force", action="store_true", help="replace DST if it exists")
    _revision_arg(cv)
    _calibration_args(cv)
    _native_arg(cv, "do not build the native kernel library for the converted model")
    cv.set_defaults(func=_convert)
    qz = sub.add_parser("quantize", help="write an int8 engine checkpoint from a float32 one (or any checkpoint)")
    qz.add_argument("src")
    qz.add_argument("dst")
    qz.add_argument("--class", dest="model_class", default=None, help="model class (default: from config.json)")
    qz.add_argument("--no-pooler", action="store_true", help="the source has no pooler weights")
    qz.add_argument("--force", action="store_true", help="replace DST if it exists")
    _revision_arg(qz)
    _calibration_args(qz)
    _native_arg(qz, "do not build the native kernel library for the quantized model")
    qz.set_defaults(func=_quantize)
    inf = sub.add_parser("info", help="describe a checkpoint")
    inf.add_argument("checkpoint")
    _revision_arg(inf)
    inf.set_defaults(func=_info)
    _add_tasks(sub)
    w = sub.add_parser(
        "warmup",
        help="compile every kernel a checkpoint needs: the Numba cache and the native kernel library",
    )
    w.add_argument("checkpoint")
    w.add_argument("--threads", type=int, default=None)
    _revision_arg(w)
    w.add_argument(
        "--no-pooler",
        dest="pooler",
        action="store_false",
        help="the checkpoint has no pooler (masked-LM, token-classification, QA models)",
    )
    _native_arg(w, "only fill the Numba cache; do not build the native kernel library")
    w.set_defaults(func=_warmup)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (MBEngineError, ValueError, TypeError, OSError) as e:
        if args.debug:
            raise
        print(cli_message(e), file=sys.stderr)
        return EXIT_USAGE if isinstance(e, UsageError) else EXIT_ERROR
    except KeyboardInterrupt:
        print("mbengine: error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 (a bug of ours: still one line, and how to see more)
        if args.debug:
            raise
        print(
            cli_message(
                RuntimeError(
                    f"internal error ({type(e).__name__}: {e}); run again with --debug for "
                    "the traceback, and please report it"
                )
            ),
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
