"""mbengine's kernels against their plain NumPy/BLAS equivalents at MobileBERT shapes.

    python -m bench kernels [--threads 1 2] [--seqs 128 384] [--repeats 30] [--no-int8] [--no-int8-generic]

For every (M, K, N) linear shape of the model (M = tokens) it times
``mbengine.kernels.linear.linear`` (bias epilogue only) against ``x @ w.T + b``
and against ``np.dot(x, wT, out=o); o += b`` with a pre-transposed contiguous
``wT``; and the fused attention kernel against a batched-matmul + softmax NumPy
version. Our kernels run with ``numba.set_num_threads(n)``, NumPy's BLAS with
``threadpoolctl.threadpool_limits(n)``. The systems are timed round robin
(each sample is as many back-to-back calls as fill ~``--sample-ms``).

GFLOP/s = 2*M*K*N / median time (linear), 4*B*heads*S*S*head_dim / median
(attention: QK^T and P.V, softmax not counted). Results go to
bench/results/kernels.json and kernels.md (and kernels.png with matplotlib,
drawn by :func:`bench.builders.plot_kernels`).

int8: at every linear shape ``mbengine.kernels.qlinear.qlinear`` (bias
epilogue only, no outlier channels; activations quantized per row inside the
call, weights int8 per output channel) is timed in the same round robin as
the others, as system ``mbengine int8``; GOP/s = 2*M*K*N / median, ratios
against our float32 kernel and ``x @ w.T + b``. The int8 micro-kernel variant
that ran (vnni / sdot / generic, :mod:`mbengine.kernels.qsimd`) is reported.
Two subprocesses (``python -m bench kernels --int8-worker``), each with a
fresh Numba cache so that the code is really compiled and ``inspect_asm()``
works (it refuses code loaded from the cache): one compiles this process's
variant and counts the dot-product / multiply instructions of ``qlinear``
and ``qmatmul_exact`` (whole module and the hottest inner loop), and checks
``qmatmul_exact`` bit for bit against NumPy int64; the other does the same
with ``MBENGINE_INT8_KERNEL=generic`` and times that variant interleaved with
our float32 kernel (no BLAS there, so no pause between samples), to show what
the dot-product instruction buys. ``--no-int8`` / ``--no-int8-generic`` skip them.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench import common
from bench.builders import plot_kernels

# (K, N) -> what the model uses it for; M is the number of tokens (batch 1 x seq)
LINEAR_SHAPES = [
    (512, 128, "bottleneck in / FFN out"),
    (512, 384, "fused bottleneck+attention+value"),
    (128, 256, "fused QK"),
    (128, 128, "attention output"),
    (128, 512, "FFN in / output bottleneck"),
    (384, 512, "embedding transformation"),
]
HEADS, HEAD_DIM = 4, 32


# --------------------------------------------------------------------------- linear
def linear_systems(M: int, K: int, N: int, rng: np.random.Generator, int8: bool = False, numpy: bool = True):
    """{name: callable} for one shape, plus a correctness report.

    ``int8``: add our int8 linear as system INT8; ``numpy``: the NumPy systems (off in the int8 worker,
    which must not wake OpenBLAS's threads).
    """
    from mbengine.kernels import linear as L

    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32) / np.float32(np.sqrt(K))
    b = rng.standard_normal(N, dtype=np.float32)
    wT = np.ascontiguousarray(w.T)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + b

    if hasattr(L, "pack"):  # current kernel: weights packed into panels once, at load
        wk = L.pack(w)
    else:  # (N, K) read-only weight
        wk = w.copy()
        wk.flags.writeable = False
    dummy_res = np.zeros((1, 1), np.float32)
    nw = np.ones(N, np.float32)
    nb = np.zeros(N, np.float32)
    out_ours = np.zeros((M, N), np.float32)
    out_dot = np.empty((M, N), np.float32)

    import numba

    threads = numba.get_num_threads()  # the caller has set it for this run
    linear_args = (x, 0, wk, b, 0, dummy_res, -1, 0, nw, nb, 1e-5, out_ours, 0)
    params = inspect.signature(L.linear.py_func).parameters  # older kernels lack the last arguments
    if "threads" in params:
        linear_args += (threads,)
    if "nxt" in params:  # nothing to prefetch: the bench times one op, its weight in cache
        linear_args += (np.zeros(1, np.uint8),)

    def ours():
        L.linear(*linear_args)

    def numpy_matmul():
        return x @ w.T + b

    def numpy_dot():
        np.dot(x, wT, out=out_dot)
        np.add(out_dot, b, out=out_dot)

    ours()
    fns = {"mbengine": ours}
    errors = {"mbengine": common.rel_err(out_ours, ref)}
    if int8:
        fns[INT8], out_q = int8_linear(x, w, b)
        fns[INT8]()
        errors[INT8] = common.rel_err(out_q, ref)
    if numpy:
        numpy_dot()
        errors.update(
            {"numpy x@w.T+b": common.rel_err(numpy_matmul(), ref), "numpy dot(out=)+b": common.rel_err(out_dot, ref)}
        )
        fns.update({"numpy x@w.T+b": numpy_matmul, "numpy dot(out=)+b": numpy_dot})
    return fns, errors


# --------------------------------------------------------------------------- int8
INT8 = "mbengine int8"  # the system name of our int8 linear
INT8_GENERIC = "mbengine int8 generic"  # the same, MBENGINE_INT8_KERNEL=generic (worker subprocess)
NUMPY_REF = "numpy x@w.T+b"  # the int8 ratios are against this one (and our float32 kernel)


def int8_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    """(callable, out): ``qlinear`` on float ``x`` (M, K) and weight ``w`` (N, K), bias epilogue only.

    The weight is quantized and packed as a converted model stores it (:meth:`mbengine.weights.Int8Linear.from_parts`,
    no outlier channels); the scratch ``qx`` / ``sx`` are allocated here, as the runner's arena does.
    """
    from mbengine.kernels import qlinear as Q
    from mbengine.weights import Int8Linear

    M, K = x.shape
    N = w.shape[0]
    wq, sw = Q.quantize_weight(w)
    qw = Int8Linear.from_parts(Q.pack(wq), sw, np.zeros(0, np.int64), np.zeros((0, N), np.float32))
    mask = qw.mask[:K]  # from_parts' mask covers the padded width; the graph cuts it to K the same way
    qx = Q.qx_scratch(M, qw.panels.shape[1])
    sx = np.zeros(M, np.float32)
    dummy_res = np.zeros((1, 1), np.float32)
    nw = np.ones(N, np.float32)
    nb = np.zeros(N, np.float32)
    out = np.zeros((M, N), np.float32)
    params = inspect.signature(Q.qlinear.py_func).parameters  # (earlier commits took fewer arguments)
    import numba

    threads = numba.get_num_threads()  # the caller has set it for this run
    extra = ((threads,) if "threads" in params else ()) + ((np.zeros(1, np.uint8),) if "nxt" in params else ())

    def run():
        Q.qlinear(
            x,
            0,
            mask,
            qx,
            sx,
            qw.panels,
            qw.scale,
            qw.corr,
            qw.outliers,
            qw.outlier_w,
            b,
            0,
            dummy_res,
            -1,
            0,
            nw,
            nb,
            1e-5,
            out,
            0,
            *extra,
        )

    return run, out


# instructions counted in the int8 kernels' assembly, per architecture; KEY: the ones that do the
# multiplications (the dot-product instruction or what the generic variant uses instead)
ASM_WATCH = {
    "x86_64": (
        "vpdpbusd",
        "vpdpbusds",
        "vpmaddubsw",
        "vpmaddwd",
        "vpsignb",
        "vpblendmb",
        "vpmulld",
        "vpmovsxbd",
        "vpmovsxbw",
        "vpbroadcastd",
        "vpermt2d",
    ),
    "aarch64": (
        "sdot",
        "smull",
        "smull2",
        "smlal",
        "smlal2",
        "sadalp",
        "mul",
        "mla",
        "sshll",
        "sshll2",
        "sxtl",
        "sxtl2",
        "addp",
        "saddlp",
        "ld1r",
    ),
}
ASM_KEY = {
    "x86_64": ("vpdpbusd", "vpdpbusds", "vpmaddubsw", "vpmaddwd", "vpmulld"),
    "aarch64": ("sdot", "smull", "smull2", "smlal", "smlal2", "mul", "mla"),
}
_LABEL = re.compile(r"^([.\w$]+):")
_X86_VREG = re.compile(r"%([xyz]mm\d+)")
_ARM_VREG = re.compile(r"\b(v\d+)\.")
_STACK = {"x86_64": re.compile(r"\(%rsp|\(%rbp"), "aarch64": re.compile(r"\[sp\b|\[x29\b")}  # spills, reloads


def _asm_arch(asm: str) -> str:
    return "x86_64" if "%r" in asm or "%e" in asm else "aarch64"


def _instructions(asm: str, arch: str):
    """[(mnemonic, operands)] and {label: index of the next instruction} of an assembly listing."""
    insns, labels = [], {}
    comment = "#" if arch == "x86_64" else "//"
    for line in asm.splitlines():
        line = line.split(comment, 1)[0].strip()
        if not line:
            continue
        m = _LABEL.match(line)
        if m:
            labels[m.group(1)] = len(insns)
            continue
        if line.startswith("."):  # a directive
            continue
        parts = line.split(None, 1)
        insns.append((parts[0].lower(), parts[1] if len(parts) > 1 else ""))
    return insns, labels


def _counted(mnemonic: str, operands: str, arch: str, watch) -> str | None:
    """The name ``mnemonic`` is counted under, or None. On aarch64 only vector forms count (``mul x0, ...``
    is address arithmetic, ``mul v0.4s, ...`` is not)."""
    if mnemonic not in watch:
        return None
    if arch == "aarch64" and not _ARM_VREG.search(operands):
        return None
    return mnemonic


def _vregs(operands: str, arch: str) -> list[str]:
    return (_X86_VREG if arch == "x86_64" else _ARM_VREG).findall(operands)


def asm_counts(asm: str, arch: str | None = None) -> dict:
    """Instruction counts of one compiled function (all of its module: wrapper and parallel-loop bodies).

    ``total``: every ASM_WATCH instruction of the architecture; ``vector_insns``: instructions with a zmm
    (x86) / NEON v register (aarch64) operand; ``loops``: the innermost loops (a backward branch to a label)
    that contain KEY instructions, most first (at most 4), each with its length, counts, the vector
    registers it uses and its stack references (register spills and reloads): the first is the
    micro-kernel's k loop.
    """
    arch = arch or _asm_arch(asm)
    watch, key = ASM_WATCH[arch], ASM_KEY[arch]
    insns, labels = _instructions(asm, arch)
    total = {m: 0 for m in watch}
    vector_insns = 0
    regs = set()
    loops = []
    for i, (mn, ops) in enumerate(insns):
        name = _counted(mn, ops, arch, watch)
        if name:
            total[name] += 1
        found = _vregs(ops, arch)
        if found:
            vector_insns += 1
            regs.update(found)
        branch = (
            mn.startswith("j")
            if arch == "x86_64"
            else (mn in ("b", "cbz", "cbnz", "tbz", "tbnz") or mn.startswith("b."))
        )
        if branch and ops:
            target = ops.split(",")[-1].strip()
            if target in labels and labels[target] <= i:
                loops.append((labels[target], i))
    inner = [lp for lp in loops if not any(o != lp and lp[0] <= o[0] and o[1] <= lp[1] for o in loops)]
    found_loops = []
    for a, z in inner:
        counts = {m: 0 for m in watch}
        lregs = set()
        stack = 0
        for mn, ops in insns[a : z + 1]:
            name = _counted(mn, ops, arch, watch)
            if name:
                counts[name] += 1
            lregs.update(_vregs(ops, arch))
            stack += bool(_STACK[arch].search(ops))
        if any(counts[k] for k in key):
            found_loops.append(
                {
                    "instructions": z + 1 - a,
                    "counts": {m: c for m, c in counts.items() if c},
                    "vector_registers": len(lregs),
                    "stack_refs": stack,
                }
            )
    found_loops.sort(key=lambda lp: -sum(lp["counts"].get(k, 0) for k in key))
    return {
        "arch": arch,
        "total": total,
        "vector_insns": vector_insns,
        "vector_registers": len(regs),
        "loops": found_loops[:4],
    }


def loop_summary(c: dict) -> str:
    """One line about the hottest int8 loop of :func:`asm_counts`' result."""
    if not c.get("loops"):
        return "no loop with multiply instructions found"
    lp = c["loops"][0]
    what = ", ".join(f"{n} {m}" for m, n in sorted(lp["counts"].items(), key=lambda kv: -kv[1]))
    reg = "zmm" if c["arch"] == "x86_64" else "v"
    return (
        f"{lp['instructions']}-instruction loop: {what}; {lp['vector_registers']} {reg} registers, "
        f"{lp['stack_refs']} stack references"
    )


def _exact_check(Q, rng) -> dict:
    """qmatmul_exact against NumPy's int64 product, bit for bit, on a few small shapes (full and partial
    tiles and panels, random and extreme values)."""
    cases = []
    for M, N, K, kind in (
        (9, 2 * Q.COLS + 3, 37, "uniform"),
        (16, Q.COLS, 128, "extremes"),
        (8, Q.COLS + 1, 4, "max"),
        (1, 1, 1, "min"),
        (20, 40, 130, "uniform"),
    ):
        if kind == "uniform":
            xq, wq = rng.integers(-127, 128, (M, K)), rng.integers(-127, 128, (N, K))
        elif kind == "extremes":
            xq, wq = rng.choice([-127, 127], (M, K)), rng.choice([-127, 127], (N, K))
        else:
            v = 127 if kind == "max" else -127
            xq, wq = np.full((M, K), v), np.full((N, K), v)
        xq = np.clip(xq, -Q.XMAX, Q.XMAX)  # the variant's activation range (63 for maddubs7)
        wp = Q.pack(wq.astype(np.int8))
        qx = Q.encode(xq, wp.shape[1])
        out = np.full((M, N), -7, np.int32)
        Q.qmatmul_exact(qx, wp, Q.correction(wp), out)
        ref = xq.astype(np.int64) @ wq.T.astype(np.int64)
        cases.append({"M": M, "N": N, "K": K, "values": kind, "equal": bool((out == ref).all())})
    return {"ok": all(c["equal"] for c in cases), "cases": cases}


def int8_asm_report() -> dict:
    """Compile qlinear (bench's argument types) and qmatmul_exact in this process, count their instructions.

    The dispatchers must not come from Numba's cache (inspect_asm() refuses cached code): the caller runs
    this in a process with a fresh NUMBA_CACHE_DIR, or with a forced variant (not cached).
    """
    import llvmlite.binding as llvm_binding
    import numba

    from mbengine.kernels import qlinear as Q

    rng = np.random.default_rng(0)
    exact = _exact_check(Q, rng)
    M, K, N = 20, 128, 2 * Q.COLS + 5  # full and one-row tiles, a partial panel (compiled either way)
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    run, _ = int8_linear(x, w, rng.standard_normal(N, dtype=np.float32))
    run()
    from mbengine.kernels.target import TARGET

    feats = llvm_binding.get_host_cpu_features()
    report = {
        "variant": Q.VARIANT,
        "target": TARGET.describe(),
        "offset": Q.OFFSET,
        "COLS": Q.COLS,
        "ROWS": Q.ROWS,
        "forced": os.environ.get("MBENGINE_INT8_KERNEL") or None,
        "llvm": ".".join(map(str, llvm_binding.llvm_version_info)),
        "llvm_host_cpu": llvm_binding.get_host_cpu_name(),
        "host_features": {k: bool(feats.get(k)) for k in ("avx512vnni", "avx512bw", "dotprod")},
        "numba_cpu_name": os.environ.get("NUMBA_CPU_NAME") or None,
        "numba": numba.__version__,
        "exact": exact,
        "functions": {},
    }
    for name, fn in (("qlinear", Q.qlinear), ("qmatmul_exact", Q.qmatmul_exact)):
        asm = fn.inspect_asm(fn.signatures[-1])
        if "Inspection disabled" in asm or not asm.strip():
            report["functions"][name] = {"error": "no assembly (cached code?)"}
            continue
        report["functions"][name] = asm_counts(asm)
        if os.environ.get("MBENGINE_BENCH_ASM_DIR"):  # keep the listing (aarch64 script)
            with open(os.path.join(os.environ["MBENGINE_BENCH_ASM_DIR"], f"{name}-{Q.VARIANT}.s"), "w") as f:
                f.write(asm)
    return report


def int8_worker(args) -> dict:
    """The subprocess's job (``--int8-worker asm|generic``): assembly counts, and for ``generic`` timings of
    this process's int8 variant interleaved with our float32 kernel at every shape and thread count."""
    out = {"asm": int8_asm_report()}
    if args.int8_worker != "generic":
        return out
    import numba

    rng = np.random.default_rng(0)
    rows = []
    for n in args.threads:
        if n > numba.config.NUMBA_NUM_THREADS:
            continue
        if args.wait_quiet > 0:
            common.wait_until_quiet(args.wait_quiet)
        numba.set_num_threads(n)
        for S in args.seqs:
            for K, N, label in LINEAR_SHAPES:
                M = S
                fns, errors = linear_systems(M, K, N, rng, int8=True, numpy=False)
                fns = {INT8_GENERIC: fns[INT8], "mbengine": fns["mbengine"]}
                number = {name: max(calibrate(fn, args.sample_ms / 1e3) for _ in range(2)) for name, fn in fns.items()}
                times, load, attempts = common.time_when_quiet(
                    fns, args.repeats, retries=args.retries, wait=args.wait_quiet, warmup=args.warmup, number=number
                )
                med = {name: common.median(t) for name, t in times.items()}
                rows.append(
                    {
                        "M": M,
                        "K": K,
                        "N": N,
                        "threads": n,
                        "median_us": {k: v * 1e6 for k, v in med.items()},
                        "gops": {k: 2.0 * M * K * N / v / 1e9 for k, v in med.items()},
                        "rel_err": errors[INT8],
                        "other_cpu": load["other_cpu"],
                    }
                )
                print(
                    f"  [generic worker] threads {n} {M}x{K}x{N}: {rows[-1]['gops'][INT8_GENERIC]:.1f} GOP/s, "
                    f"fp32 ours {rows[-1]['gops']['mbengine']:.1f}",
                    flush=True,
                )
    out["timings"] = rows
    return out


def run_int8_worker(mode: str, args) -> dict:
    """Run ``--int8-worker mode`` in a subprocess with a fresh Numba cache: its JSON result, or {"error": ...}."""
    tmp = tempfile.mkdtemp(prefix="mbengine-bench-int8-")
    try:
        env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tmp, "cache"))
        if mode == "generic":
            env["MBENGINE_INT8_KERNEL"] = "generic"
        result = os.path.join(tmp, "result.json")
        cmd = [
            sys.executable,
            "-m",
            "bench",
            "kernels",
            "--int8-worker",
            mode,
            "--int8-worker-out",
            result,
            "--threads",
            *map(str, args.threads),
            "--seqs",
            *map(str, args.seqs),
            "--repeats",
            str(args.repeats),
            "--warmup",
            str(args.warmup),
            "--sample-ms",
            str(args.sample_ms),
            "--retries",
            str(args.retries),
            "--wait-quiet",
            str(args.wait_quiet),
        ]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.run(cmd, cwd=root, env=env, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0 or not os.path.exists(result):
            tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
            print(f"int8 worker ({mode}) failed, exit {proc.returncode}: {tail[0][:300]}", flush=True)
            return {"error": f"exit {proc.returncode}: {tail[0][:300]}"}
        with open(result) as f:
            return json.load(f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_asm(label: str, rep: dict) -> None:
    if not rep or "error" in rep:
        print(f"int8 asm ({label}): {rep.get('error') if rep else 'not run'}")
        return
    ex = rep["exact"]
    cpu = rep["numba_cpu_name"] or rep["llvm_host_cpu"]
    print(
        f"int8 variant {rep['variant']} ({label}; LLVM {rep['llvm']}, CPU {cpu})"
        f": qmatmul_exact vs NumPy int64 {'bit-exact' if ex['ok'] else 'MISMATCH'} on {len(ex['cases'])} shapes"
    )
    for fname, c in rep["functions"].items():
        if "error" in c:
            print(f"  {fname}: {c['error']}")
            continue
        nz = ", ".join(f"{n} {m}" for m, n in c["total"].items() if n) or "none"
        reg = "zmm" if c["arch"] == "x86_64" else "NEON v-register"
        print(
            f"  {fname}: whole module {nz}; {c['vector_insns']} {reg} instructions, {c['vector_registers']} "
            f"registers; hottest loop: {loop_summary(c)}"
        )


# --------------------------------------------------------------------------- attention
def numpy_attention(qkv, mask_add, heads, D, scale):
    """Plain NumPy multi-head attention over a token-major [Q | K | V] buffer (batch 1 per mask row)."""
    B, S = mask_add.shape
    A = heads * D
    t = qkv.reshape(B, S, 3, heads, D)
    q = t[:, :, 0].transpose(0, 2, 1, 3)  # (B, H, S, D) views
    k = t[:, :, 1].transpose(0, 2, 3, 1)  # (B, H, D, S)
    v = t[:, :, 2].transpose(0, 2, 1, 3)
    s = np.matmul(q, k)
    s *= scale
    s += mask_add[:, None, None, :]
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    ctx = np.matmul(s, v)  # (B, H, S, D)
    return ctx.transpose(0, 2, 1, 3).reshape(B * S, A)


def attention_systems(B: int, S: int, rng: np.random.Generator):
    import numba

    from mbengine.kernels import attention as AT

    D, H = HEAD_DIM, HEADS
    A = H * D
    qkv = rng.standard_normal((B * S, 3 * A), dtype=np.float32)
    mask_add = np.zeros((B, S), np.float32)
    scale = np.float32(D**-0.5)
    out = np.zeros((B * S, A), np.float32)
    probs = np.zeros((1, 1, 1, 1), np.float32)

    # the scratch arguments have changed over versions: the ones after `want_probs` are scratch,
    # shaped by the module's scratch_shapes() when it has one, else known by name
    params = list(inspect.signature(AT.attention.py_func).parameters)
    given = dict(
        q=qkv,
        q_off=0,
        k=qkv,
        k_off=A,
        v=qkv,
        v_off=2 * A,
        mask_add=mask_add,
        starts=np.arange(B + 1, dtype=np.int64) * S,  # a padded batch: sequence b at rows b * S ..
        heads=H,
        head_dim=D,
        scale=scale,
        out=out,
        out_off=0,
        threads=numba.get_num_threads(),
        probs=probs,
        want_probs=0,
    )
    threads = numba.config.NUMBA_NUM_THREADS
    scratch_names = params[params.index("want_probs") + 1 :]
    if hasattr(AT, "scratch_shapes"):
        shapes = AT.scratch_shapes(B, S, H, D, threads)
        if len(shapes) != len(scratch_names):
            raise TypeError(f"scratch_shapes() gives {len(shapes)} arrays for parameters {scratch_names}")
        scratch = dict(zip(scratch_names, shapes))
    else:
        rows = getattr(AT, "ROWS_PER_TASK", getattr(AT, "ROWS", 16))
        scratch = {"scratch": (B * H, S), "vt": (B * H, D, S), "scores": (threads, rows, S)}
    args = []
    for p in params:
        if p in given:
            args.append(given[p])
        elif p in scratch:
            args.append(np.zeros(scratch[p], np.float32))
        else:
            raise TypeError(f"bench does not know attention() parameter {p!r}")

    def ours():
        AT.attention(*args)

    def numpy_att():
        return numpy_attention(qkv, mask_add, H, D, scale)

    ref = numpy_attention(qkv.astype(np.float64), mask_add.astype(np.float64), H, D, float(scale))
    ours()
    errors = {"mbengine": common.rel_err(out, ref), "numpy": common.rel_err(numpy_att(), ref)}
    return {"mbengine": ours, "numpy": numpy_att}, errors


# --------------------------------------------------------------------------- driver
def calibrate(fn, target: float, tries: int = 5, max_number: int = 10000) -> int:
    """How many back-to-back calls of ``fn`` take about ``target`` seconds, from the fastest of ``tries`` calls.

    :func:`common.calibrate` times one call. At 2 threads that call sometimes took a few ms (a pool woken
    while another one still spins, or a burst of foreign load), and then every sample of that system was a
    single call that starts by waking the thread pool: 25 us kernels timed at 115-140 us.
    """
    fn()
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return int(min(max_number, max(1, round(target / max(best, 1e-7)))))


def run(args) -> dict:
    import numba
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    int8_variant = None
    if args.int8:
        from mbengine.kernels.qlinear import VARIANT as int8_variant
    cases = []
    for S in args.seqs:
        for K, N, label in LINEAR_SHAPES:
            cases.append(("linear", label, S, K, N))
        cases.append(("attention", f"attention {HEADS}x{HEAD_DIM}", S, None, None))

    rows = []
    failures = []
    for n in args.threads:
        if n > numba.config.NUMBA_NUM_THREADS:
            print(f"skipping threads={n}: NUMBA_NUM_THREADS is {numba.config.NUMBA_NUM_THREADS}")
            continue
        if args.wait_quiet > 0:
            common.wait_until_quiet(args.wait_quiet)
        numba.set_num_threads(n)
        # OpenBLAS workers spin ~100 ms after a call: let them go idle before the next system runs
        # (the same pause after every system, so all start from the same state)
        gap = args.gap if args.gap is not None else (0.15 if n > 1 else 0.0)
        with threadpool_limits(limits=n, user_api="blas"):
            for kind, label, S, K, N in cases:
                try:
                    if kind == "linear":
                        M = S
                        fns, errors = linear_systems(M, K, N, rng, int8=args.int8)
                        flops = 2.0 * M * K * N
                        shape = f"{M}x{K}x{N}"
                    else:
                        fns, errors = attention_systems(1, S, rng)
                        flops = 4.0 * 1 * HEADS * S * S * HEAD_DIM
                        shape = f"B1 S{S} H{HEADS} D{HEAD_DIM}"
                    # twice, keeping the larger count: a burst of foreign load (or a pool still spinning) during
                    # one calibration makes calls look slow, never fast
                    number = {name: 1 for name in fns}
                    common.pause(gap)  # the correctness calls just woke OpenBLAS's workers: let them go idle first
                    for _ in range(2):
                        for name, fn in fns.items():
                            number[name] = max(number[name], calibrate(fn, args.sample_ms / 1e3))
                            common.pause(gap)
                except Exception as e:  # noqa: BLE001 - report the others
                    why = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:300]
                    print(f"threads {n}  {kind} {label} S{S}: FAILED, skipped ({why})", flush=True)
                    failures.append({"kernel": kind, "what": label, "seq": S, "threads": n, "error": why})
                    continue
                times, load, attempts = common.time_when_quiet(
                    fns,
                    args.repeats,
                    retries=args.retries,
                    wait=args.wait_quiet,
                    warmup=args.warmup,
                    number=number,
                    gap=gap,
                )
                st = {name: common.stats(t) for name, t in times.items()}
                gflops = {name: flops / s["median"] / 1e9 for name, s in st.items()}
                numpy_names = [x for x in fns if not x.startswith("mbengine")]
                best_np = max(numpy_names, key=lambda x: gflops[x])
                row = {
                    "kernel": kind,
                    "shape": shape,
                    "what": label,
                    "seq": S,
                    "M": S if kind == "linear" else None,
                    "K": K,
                    "N": N,
                    "threads": n,
                    "flop": flops,
                    "median_us": {k: v["median"] * 1e6 for k, v in st.items()},
                    "min_us": {k: v["min"] * 1e6 for k, v in st.items()},
                    "gflops": gflops,
                    "calls_per_sample": number,
                    "best_numpy": best_np,
                    "ratio_vs_best_numpy": gflops["mbengine"] / gflops[best_np],
                    "rel_err_vs_float64": errors,
                    "other_cpu": load["other_cpu"],
                    "steal": load.get("steal"),
                    "attempts": attempts,
                }
                if INT8 in fns:  # GOP/s for int8 (same count of multiply-adds)
                    g8 = gflops[INT8]
                    row["int8"] = {
                        "variant": int8_variant,
                        "gops": g8,
                        "ratio_vs_fp32_ours": g8 / gflops["mbengine"],
                        "ratio_vs_numpy": g8 / gflops[NUMPY_REF],
                        "ratio_vs_best_numpy": g8 / gflops[best_np],
                    }
                rows.append(row)
                line = (
                    f"threads {n}  {shape:>20}  {label:<34}"
                    f" ours {gflops['mbengine']:7.1f} GFLOP/s ({st['mbengine']['median'] * 1e6:8.1f} us)  "
                )
                line += "  ".join(f"{k} {gflops[k]:7.1f}" for k in numpy_names)
                line += f"  ours/numpy {row['ratio_vs_best_numpy']:.2f}  err {errors['mbengine']:.1e}"
                if load["other_cpu"] is not None:
                    line += f"  other load {100 * load['other_cpu']:.0f}%"
                print(line, flush=True)
                if "int8" in row:
                    q = row["int8"]
                    print(
                        f"{'':>36}{'int8 ' + q['variant']:<34} int8 {q['gops']:7.1f} GOP/s   "
                        f"({st[INT8]['median'] * 1e6:8.1f} us)  int8/fp32-ours {q['ratio_vs_fp32_ours']:.2f}  "
                        f"int8/numpy {q['ratio_vs_numpy']:.2f}  err {errors[INT8]:.1e}",
                        flush=True,
                    )
    return {"rows": rows, "failures": failures}


def table(rows) -> str:
    headers = [
        "kernel",
        "shape (MxKxN)",
        "used for",
        "threads",
        "ours µs",
        "ours GFLOP/s",
        "numpy x@w.T+b GFLOP/s",
        "numpy dot(out=)+b GFLOP/s",
        "ours / best numpy",
        "ours rel err",
        "other load %",
    ]
    out = []
    for r in rows:
        g = r["gflops"]
        out.append(
            [
                r["kernel"],
                r["shape"],
                r["what"],
                r["threads"],
                f"{r['median_us']['mbengine']:.1f}",
                f"{g['mbengine']:.1f}",
                f"{g.get('numpy x@w.T+b', g.get('numpy')):.1f}",
                f"{g['numpy dot(out=)+b']:.1f}" if "numpy dot(out=)+b" in g else "–",
                f"{r['ratio_vs_best_numpy']:.2f}",
                f"{r['rel_err_vs_float64']['mbengine']:.1e}",
                "–" if r.get("other_cpu") is None else f"{100 * r['other_cpu']:.0f}",
            ]
        )
    return common.markdown_table(headers, out)


def merge_generic(rows, timings) -> None:
    """Add the generic worker's timings (same shape and thread count) to the rows' int8 entries."""
    by_key = {(t["M"], t["K"], t["N"], t["threads"]): t for t in timings or []}
    for r in rows:
        t = by_key.get((r["M"], r["K"], r["N"], r["threads"])) if "int8" in r else None
        if t is None:
            continue
        g = t["gops"][INT8_GENERIC]
        r["int8"].update(
            {
                "generic_gops": g,
                "generic_ratio_vs_fp32_ours": g / t["gops"]["mbengine"],
                "generic_fp32_ours_gflops": t["gops"]["mbengine"],
                "ratio_vs_generic": r["int8"]["gops"] / g,
                "generic_rel_err": t["rel_err"],
            }
        )


def table_int8(rows) -> str:
    headers = [
        "shape (MxKxN)",
        "used for",
        "threads",
        "int8 variant",
        "int8 µs",
        "int8 GOP/s",
        "fp32 ours GFLOP/s",
        "numpy x@w.T+b GFLOP/s",
        "int8 / fp32 ours",
        "int8 / numpy",
        "generic int8 GOP/s",
        "generic / its fp32 ours",
        "int8 / generic",
        "int8 rel err",
        "other load %",
    ]
    out = []
    for r in rows:
        q = r.get("int8")
        if not q:
            continue
        g = r["gflops"]
        gen = "generic_gops" in q
        out.append(
            [
                r["shape"],
                r["what"],
                r["threads"],
                q["variant"],
                f"{r['median_us'][INT8]:.1f}",
                f"{q['gops']:.1f}",
                f"{g['mbengine']:.1f}",
                f"{g[NUMPY_REF]:.1f}",
                f"{q['ratio_vs_fp32_ours']:.2f}",
                f"{q['ratio_vs_numpy']:.2f}",
                f"{q['generic_gops']:.1f}" if gen else "–",
                f"{q['generic_ratio_vs_fp32_ours']:.2f}" if gen else "–",
                f"{q['ratio_vs_generic']:.2f}" if gen else "–",
                f"{r['rel_err_vs_float64'][INT8]:.1e}",
                "–" if r.get("other_cpu") is None else f"{100 * r['other_cpu']:.0f}",
            ]
        )
    return common.markdown_table(headers, out)


def table_asm(asm: dict) -> str:
    """The instruction counts of the int8 kernels, one row per (variant, function)."""
    reps = [rep for rep in asm.values() if rep and "functions" in rep]
    if not reps:
        return ""
    arch = next((c["arch"] for rep in reps for c in rep["functions"].values() if "arch" in c), "x86_64")
    counted = [
        m for m in ASM_WATCH[arch] if any(c.get("total", {}).get(m) for rep in reps for c in rep["functions"].values())
    ]
    reg = "zmm" if arch == "x86_64" else "NEON v"
    headers = ["variant", "function", *counted, f"{reg} instructions", "hottest loop", "qmatmul_exact bit-exact"]
    out = []
    for rep in reps:
        for fname, c in rep["functions"].items():
            if "error" in c:
                out.append([rep["variant"], fname, *["–"] * len(counted), "–", c["error"], "–"])
                continue
            out.append(
                [
                    rep["variant"],
                    fname,
                    *[c["total"].get(m, 0) for m in counted],
                    c["vector_insns"],
                    loop_summary(c),
                    "yes" if rep["exact"]["ok"] else "NO",
                ]
            )
    return common.markdown_table(headers, out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seqs", type=int, nargs="+", default=[128, 384], help="token counts M (batch 1)")
    ap.add_argument("--repeats", type=int, default=30, help="timed rounds per shape")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds per shape")
    ap.add_argument("--sample-ms", type=float, default=5.0, help="target length of one sample (back-to-back calls)")
    ap.add_argument(
        "--gap",
        type=float,
        default=None,
        help="seconds of pause (busy-wait on the main thread) after each sample (default: 0.15 s when "
        "threads > 1, so OpenBLAS's workers, which spin ~100 ms after a call, are idle again; "
        "none at 1 thread)",
    )
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        metavar="S",
        help="before each thread count, wait up to S seconds for other processes to go idle (0: don't)",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=2,
        help="time a case again (up to this many times) if other processes were busy meanwhile",
    )
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--name", default="kernels", help="results file name: bench/results/<name>.{json,md,png}")
    ap.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    ap.add_argument("--no-int8", dest="int8", action="store_false", help="leave out the int8 linear")
    ap.add_argument(
        "--no-int8-generic",
        dest="int8_generic",
        action="store_false",
        help="do not time the generic int8 variant (MBENGINE_INT8_KERNEL=generic subprocess)",
    )
    ap.add_argument("--int8-worker", choices=["asm", "generic"], help=argparse.SUPPRESS)
    ap.add_argument("--int8-worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.int8_worker:  # a subprocess of the run below (run_int8_worker)
        result = int8_worker(args)
        with open(args.int8_worker_out, "w") as f:
            json.dump(result, f, default=common._json_default)
        return

    env = common.environment()
    common.print_environment(env)
    git = env.get("git")  # the sources that ran: taken before the run (others may edit them meanwhile)
    mon = common.LoadMonitor().start()
    int8 = None
    if args.int8:  # the subprocesses first: assembly counts, then the generic variant's timings
        from mbengine.kernels.qlinear import VARIANT

        res = run_int8_worker("asm", args)
        int8 = {"variant": VARIANT, "asm": {VARIANT: res.get("asm") or {"error": res.get("error")}}}
        print_asm("this process's variant", int8["asm"][VARIANT])
        if args.int8_generic and VARIANT != "generic":
            gen = run_int8_worker("generic", args)
            int8["asm"]["generic"] = gen.get("asm") or {"error": gen.get("error")}
            int8["generic_timings"] = gen.get("timings")
            print_asm("MBENGINE_INT8_KERNEL=generic", int8["asm"]["generic"])
    data = run(args)
    if int8:
        merge_generic(data["rows"], int8.get("generic_timings"))
        data["int8"] = int8
    load = mon.stop()
    fr = [r["other_cpu"] for r in data["rows"] if r.get("other_cpu") is not None]
    warning = common.load_warning(
        {"other_cpu": max(fr), "other_cpus_equiv": max(fr) * (os.cpu_count() or 1)} if fr else {}
    )
    env = common.environment()  # again: threading layer and BLAS are known now
    env["git"] = git
    data = {
        "benchmark": "kernels",
        "date": common.now(),
        "command": common.command_line(),
        "environment": env,
        "settings": {k: v for k, v in vars(args).items()},
        "load": load,
        **data,
    }
    md = table(data["rows"])
    if int8:
        md += (
            "\n\n## int8 linear (`qlinear`, bias epilogue only)\n\n"
            + table_int8(data["rows"])
            + "\n\n## int8 micro-kernel: instructions in `inspect_asm()`\n\n"
            + table_asm(int8["asm"])
        )
    notes = [
        "GFLOP/s = 2·M·K·N / median (linear, bias epilogue only); 4·B·heads·S²·head_dim / median (attention)",
        "ours: numba.set_num_threads(n); numpy: threadpoolctl.threadpool_limits(n, 'blas'); "
        "systems timed round robin, each sample ~%g ms of back-to-back calls (count from the fastest of 5 calls, "
        "calibrated twice, larger count kept), %d rounds; %s"
        % (
            args.sample_ms,
            args.repeats,
            "0.15 s pause (main thread busy-waits) after every sample at >1 thread (OpenBLAS workers spin "
            "~100 ms after a call)"
            if args.gap is None
            else f"{args.gap:g} s pause after each sample",
        ),
        "rel err: ||ours - ref|| / ||ref|| against a float64 NumPy reference",
        "other load: CPU time used by other processes during that case, as a share of all CPUs",
    ]
    if int8:
        notes += [
            f"int8: `mbengine.kernels.qlinear.qlinear`, variant **{int8['variant']}**, bias epilogue only, no outlier "
            "channels, activations quantized per row inside the call (included in the time); weights int8 per "
            "output channel; GOP/s = 2·M·K·N / median; timed in the same round robin as the float32 systems; "
            "int8 rel err against the unquantized float64 product (quantization error)",
            "generic int8: MBENGINE_INT8_KERNEL=generic in a subprocess (run before the table above, same shapes, "
            "repeats and sample length), timed round robin with our float32 kernel there without pauses (no BLAS); "
            "'generic / its fp32 ours' is within that process, 'int8 / generic' across the two processes",
            "instruction counts: `inspect_asm()` of a fresh compile (subprocess with an empty NUMBA_CACHE_DIR) of "
            "`qlinear` (the bench's argument types) and `qmatmul_exact`, whole module (wrapper + parallel-loop "
            "bodies); hottest loop = the innermost loop with the most multiply instructions (the micro-kernel's k "
            "loop, 8 rows x COLS per iteration); bit-exact: `qmatmul_exact` == NumPy int64 on 5 small shapes",
        ]
    for f in data["failures"]:
        notes.append(f"FAILED (skipped): {f['kernel']} {f['what']} S{f['seq']} threads {f['threads']}: {f['error']}")
    if warning:
        notes.append(warning)
    jpath, mpath = common.write_results(args.name, data, table=md, title="Kernel benchmark", notes=notes)
    print()
    print(md)
    if not args.no_plot and data["rows"]:
        png = os.path.join(common.RESULTS_DIR, f"{args.name}.png")
        if plot_kernels(data["rows"], png, INT8):
            print(f"plot: {png}")
    if warning:
        print(warning)
    print(f"wrote {jpath}, {mpath}")
