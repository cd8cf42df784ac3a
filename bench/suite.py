"""Every benchmark behind README.md's figures, each as the README states its command.

    python -m bench suite [--keep-blas-env]     run them all (hours), rewriting bench/results/
    python -m bench suite --list                the results files they write, one per line; runs nothing

:data:`SUITE` is the list of steps: the arguments of one ``python -m bench``
run and the files it writes under bench/results/. Each step runs in a fresh
process, in order; a step that fails stops the suite. A results file a step
declares but did not write is reported at the end (exit status 1).
tests/test_bench_suite.py checks that every results file README.md cites is
in this list.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from bench import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where `python -m bench` finds the package


def _files(name: str, *extra: str) -> tuple[str, ...]:
    """<name>.json and <name>.md (what common.write_results writes), then <name>.<ext> for each of ``extra``."""
    return tuple(f"{name}.{ext}" for ext in ("json", "md", *extra))


def _step(command: str, *extra: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A step from its ``python -m bench`` arguments as the README writes them, with the files it writes:
    under its --name, else the benchmark's name (:func:`_files`; ``extra``: more kinds, e.g. png)."""
    args = tuple(command.split())
    return args, _files(args[args.index("--name") + 1] if "--name" in args else args[0], *extra)


# (arguments of `python -m bench`, results files written under bench/results/). The png files are drawn
# with matplotlib (installed by the bench extra).
SUITE: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    _step("kernels --threads 1 2", "png"),
    _step("model --threads 1 2"),
    _step("model --seq 384 --threads 2 --name model_s384"),
    _step("model --batch 8 --rows half --threads 2 --name model_b8"),
    _step("model --batch 8 --seq 128 --rows ragged --threads 1 2 --name model_ragged_b8"),
    _step("model --batch 32 --seq 64 --rows ragged --threads 2 --name model_ragged_b32"),
    _step("model --seq 32 128 384 --threads 2 --name model_seq", "png"),
    # the README's second table: runs on a CPU with AVX2 only (Zen 3; int8 on maddubs): their files name the CPU
    _step("model --threads 1 2 --name model_avx2"),
    _step("model --seq 384 --threads 2 --name model_s384_avx2"),
    _step("model --batch 8 --rows half --threads 2 --name model_b8_avx2"),
    _step("model --batch 8 --seq 128 --rows ragged --threads 1 --name model_ragged_b8_1t_avx2"),
    _step("model --batch 8 --seq 128 --rows ragged --threads 2 --name model_ragged_b8_avx2"),
    _step("model --batch 32 --seq 64 --rows ragged --threads 2 --name model_ragged_b32_avx2"),
    # the README's third table: runs on an Intel Xeon with AMX (int8 on amx): their files name the CPU
    _step("model --threads 1 2 --name model_amx"),
    _step("model --batch 8 --seq 128 --rows ragged --threads 1 2 --name model_ragged_b8_amx"),
    _step("model --seq 384 --threads 2 --name model_s384_amx"),
    _step("model --batch 32 --seq 64 --rows ragged --threads 2 --name model_ragged_b32_amx"),
    _step("targets"),  # reads the model runs above (both CPUs' files): times nothing
    _step("profile"),
    _step("profile --dtype int8 --threads 1 2 --name profile_int8"),
    _step("profile --dtype int8 --seq 384 --threads 2 --name profile_int8_s384"),
    _step("qattention"),
    _step("int8"),  # all four sections, as the README's command runs it (section 4 too)
    _step("int8 --sections targets --name int8_targets"),
    _step("int8 --sections targets --targets host:maddubs host:maddubs7 --name int8_maddubs"),
    # on the Xeon with AMX: its int8 kernel against vnni forced
    _step("int8 --sections targets --targets host host:vnni --name int8_amx"),
    _step("startup"),
    # a second, separate run: start-up medians move with the machine (the README quotes both)
    _step("startup --name startup_repeat"),
    # the README quotes this run from a CPU with AVX2 only (Zen 3; int8 on maddubs): its file names the CPU
    _step("startup --name startup_avx2"),
    # and on the Xeon with AMX
    _step("startup --name startup_amx"),
    _step("memory"),
    _step("native"),
    _step("contention"),
    _step("soak"),
    _step("soak --calls 0 --fixed-calls 0 --text-calls 100000 --every 5000 --name soak_long"),
    _step("dask"),
    _step("corpus --int8"),
)


def results_files() -> list[str]:
    """Every results file the suite writes, in the order of its steps."""
    return [name for _, files in SUITE for name in files]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the results files the suite writes; run nothing")
    ap.add_argument(
        common.KEEP_ENV_FLAG,
        action="store_true",
        help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (passed on to every step)",
    )
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(results_files()))
        return
    extra = [common.KEEP_ENV_FLAG] if args.keep_blas_env else []
    missing = []
    for step, files in SUITE:
        print("== python -m bench", " ".join(step), flush=True)
        start = time.time()
        subprocess.run([sys.executable, "-m", "bench", *step, *extra], check=True, cwd=ROOT)
        for name in files:
            path = os.path.join(common.RESULTS_DIR, name)
            if not os.path.exists(path) or os.path.getmtime(path) < start - 1:
                missing.append(name)
                print(f"[suite] python -m bench {' '.join(step)} did not write bench/results/{name}", flush=True)
    if missing:
        sys.exit(f"[suite] results files not written: {', '.join(missing)}")
    print(f"[suite] wrote {len(results_files())} files in {common.RESULTS_DIR}")
