"""python -m bench NAME [options]: run one benchmark (or the suite, every one the README cites).

    python -m bench                   the benchmarks, one line each
    python -m bench NAME --help       one benchmark's options
    python -m bench suite --list      the results files the suite writes (bench/suite.py)

Every benchmark is a module of this package with a ``main(argv)``, listed in
:data:`BENCHMARKS`. Before importing it (and NumPy with it) this process drops
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE from its environment by re-executing
itself (:func:`bench.common.clean_blas_env`; ``--keep-blas-env`` keeps them).
"""

import importlib
import sys

from bench import common

# name: (module, what it measures); each module's results are bench/results/<name>.* unless its --name says otherwise
BENCHMARKS = {
    "model": ("bench.bench_model", "the whole encoder against PyTorch eager and ONNX Runtime, float32 and int8"),
    "kernels": ("bench.bench_kernels", "the kernels against NumPy/BLAS at the model's shapes, and the int8 linear"),
    "int8": ("bench.bench_int8", "int8 against float32: accuracy, size, memory; speed per compile target"),
    "profile": ("bench.bench_profile", "where the time goes: per-op profile against the GEMM peak"),
    "qattention": ("bench.bench_qattention", "int8 attention scores against float32: kernel, model, real weights"),
    "startup": ("bench.bench_startup", "import time, cold compile, warm first call, peak RSS"),
    "memory": ("bench.bench_memory", "where the resident memory goes, installed size, which Raspberry Pi fits"),
    "native": ("bench.bench_native", "the native kernel library against the Numba kernels: outputs and speed"),
    "contention": ("bench.bench_contention", "1 and 2 threads on an idle and on a busy machine"),
    "soak": ("bench.bench_soak", "RSS over tens of thousands of calls of varying shape"),
    "corpus": (
        "bench.bench_corpus",
        "embedding real text with the real MiniLM against sentence-transformers and ONNX Runtime",
    ),
    "dask": ("bench.bench_dask", "pipeline throughput on a Dask LocalCluster, 1 worker against 2"),
    "targets": ("bench.targets", "issue 19's speed targets against the model runs on file (nothing timed)"),
    "suite": ("bench.suite", "every benchmark as README.md cites it; --list: the results files, nothing run"),
}


def usage() -> str:
    width = max(map(len, BENCHMARKS))
    lines = ["usage: python -m bench NAME [options]   (python -m bench NAME --help: its options)", "", "benchmarks:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in BENCHMARKS.items()]
    lines += ["", f"{common.KEEP_ENV_FLAG}: keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (dropped by default)"]
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        sys.exit(f"unknown benchmark {name!r}\n\n{usage()}")
    common.clean_blas_env()  # may re-exec this process; before NumPy is imported
    module = importlib.import_module(BENCHMARKS[name][0])
    sys.argv = [f"python -m bench {name}", *rest]  # argparse's prog in the module's usage line
    module.main(rest)


if __name__ == "__main__":
    main()
