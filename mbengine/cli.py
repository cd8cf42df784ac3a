"""The ``mbengine`` command line.

    mbengine demo [--dir DIR] [--batch 1] [--seq 128] [--threads N] [--repeats 10]
        Write a full-size MobileBERT (google/mobilebert-uncased architecture,
        seeded random weights) as a Hugging Face checkpoint, load it memory-
        mapped and run it: shows load time, first-call (compile) time and the
        median latency. Offline; nothing is downloaded.
    mbengine run CHECKPOINT --ids "101 7592 102" [--threads N]
        Run a checkpoint on token ids and print the output shapes and values.
    mbengine warmup CHECKPOINT
        Compile (or load from the cache) every kernel the checkpoint's model
        needs, so the first real request is fast. The cache lives in
        NUMBA_CACHE_DIR (default: __pycache__ next to the installed kernels,
        or a user cache directory when that is not writable).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def random_checkpoint(directory: str, config=None, seed: int = 0, std: float = 0.02) -> str:
    """Write a Hugging Face style checkpoint with seeded random weights; return its path."""
    from safetensors.numpy import save_file

    from .config import MobileBertConfig
    from .converters.canonical import expected_shapes

    if config is None:
        config = MobileBertConfig(classifier_activation=False)  # google/mobilebert-uncased
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in sorted(expected_shapes(config).items()):
        if len(shape) == 1 and name.endswith(".weight"):  # norm scales
            tensors[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (std * rng.standard_normal(shape)).astype(np.float32)
    os.makedirs(directory, exist_ok=True)
    config.save_pretrained(directory)
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    return directory


def _demo(args) -> int:
    from .modeling import MobileBertModel

    directory = args.dir or os.path.join(tempfile.gettempdir(), "mbengine-demo-mobilebert")
    if not os.path.exists(os.path.join(directory, "model.safetensors")):
        t0 = time.perf_counter()
        random_checkpoint(directory)
        print(f"wrote a random full-size MobileBERT to {directory} in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    model = MobileBertModel.from_pretrained(directory, threads=args.threads)
    print(f"loaded {directory} in {(time.perf_counter() - t0) * 1e3:.0f} ms (memory-mapped)")
    rng = np.random.default_rng(1)
    ids = rng.integers(1000, model.config.vocab_size, (args.batch, args.seq))
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    t0 = time.perf_counter()
    out = model(ids)
    print(f"first call (includes kernel compile or cache load): {time.perf_counter() - t0:.2f} s")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = model(ids)
        times.append(time.perf_counter() - t0)
    h = out.last_hidden_state
    print(f"last_hidden_state {h.shape} {h.dtype}, |max| {np.abs(h).max():.3g}; pooler_output {out.pooler_output.shape}")
    threads = args.threads or "default"
    print(f"batch {args.batch} x seq {args.seq}, threads {threads}: median {np.median(times) * 1e3:.1f} ms, "
          f"min {np.min(times) * 1e3:.1f} ms over {args.repeats} calls")
    return 0


def _run(args) -> int:
    from .modeling import MobileBertModel

    model = MobileBertModel.from_pretrained(args.checkpoint, threads=args.threads)
    try:
        ids = np.array([[int(t) for t in args.ids.replace(",", " ").split()]], dtype=np.int64)
    except ValueError:
        print(f"--ids must be integers separated by spaces, got {args.ids!r}", file=sys.stderr)
        return 2
    out = model(ids)
    np.set_printoptions(precision=4, suppress=False, linewidth=120)
    print("last_hidden_state", out.last_hidden_state.shape)
    print(out.last_hidden_state[0, :, :6])
    print("pooler_output", out.pooler_output.shape)
    print(out.pooler_output[:, :6])
    return 0


def _warmup(args) -> int:
    from .modeling import MobileBertModel

    t0 = time.perf_counter()
    model = MobileBertModel.from_pretrained(args.checkpoint, threads=args.threads,
                                            add_pooling_layer=None if args.pooler else False)
    ids = np.zeros((1, 2), np.int64)
    model(ids)
    model(ids, output_hidden_states=True, output_attentions=True)
    print(f"kernels for {args.checkpoint} ready in {time.perf_counter() - t0:.2f} s")
    return 0


def main(argv=None) -> int:
    from . import __version__
    from .errors import MBEngineError

    parser = argparse.ArgumentParser(prog="mbengine", description="MobileBERT inference on Numba kernels")
    parser.add_argument("--version", action="version", version=f"mbengine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run a full-size random-weight MobileBERT end to end")
    d.add_argument("--dir", help="where to write the demo checkpoint (default: a temp directory)")
    d.add_argument("--batch", type=int, default=1)
    d.add_argument("--seq", type=int, default=128)
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--repeats", type=int, default=10)
    d.set_defaults(func=_demo)
    r = sub.add_parser("run", help="run a checkpoint on token ids")
    r.add_argument("checkpoint")
    r.add_argument("--ids", required=True, help='token ids, e.g. "101 7592 2088 102"')
    r.add_argument("--threads", type=int, default=None)
    r.set_defaults(func=_run)
    w = sub.add_parser("warmup", help="compile every kernel a checkpoint needs (fills the Numba cache)")
    w.add_argument("checkpoint")
    w.add_argument("--threads", type=int, default=None)
    w.add_argument("--no-pooler", dest="pooler", action="store_false",
                   help="the checkpoint has no pooler (masked-LM, token-classification, QA models)")
    w.set_defaults(func=_warmup)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (MBEngineError, ValueError) as e:
        print(f"mbengine: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
