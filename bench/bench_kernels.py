"""mbengine's kernels against their plain NumPy/BLAS equivalents at MobileBERT shapes.

    python bench/bench_kernels.py [--threads 1 2] [--seqs 128 384] [--repeats 30]

For every (M, K, N) linear shape of the model (M = tokens) it times
``mbengine.kernels.linear.linear`` (bias epilogue only) against ``x @ w.T + b``
and against ``np.dot(x, wT, out=o); o += b`` with a pre-transposed contiguous
``wT``; and the fused attention kernel against a batched-matmul + softmax NumPy
version. Our kernels run with ``numba.set_num_threads(n)``, NumPy's BLAS with
``threadpoolctl.threadpool_limits(n)``. The systems are timed round robin
(each sample is as many back-to-back calls as fill ~``--sample-ms``).

GFLOP/s = 2*M*K*N / median time (linear), 4*B*heads*S*S*head_dim / median
(attention: QK^T and P.V, softmax not counted). Results go to
bench/results/kernels.json and kernels.md (and kernels.png with matplotlib).
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import clean_blas_env  # noqa: E402

clean_blas_env()  # before NumPy loads OpenBLAS

import argparse  # noqa: E402
import inspect  # noqa: E402

import numpy as np  # noqa: E402

from bench import common  # noqa: E402

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
def linear_systems(M: int, K: int, N: int, rng: np.random.Generator):
    """{name: callable} for one shape, plus a correctness report."""
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

    def ours():
        L.linear(x, 0, wk, b, 0, dummy_res, -1, 0, nw, nb, 1e-5, out_ours, 0)

    def numpy_matmul():
        return x @ w.T + b

    def numpy_dot():
        np.dot(x, wT, out=out_dot)
        np.add(out_dot, b, out=out_dot)

    ours()
    numpy_dot()
    errors = {
        "mbengine": common.rel_err(out_ours, ref),
        "numpy x@w.T+b": common.rel_err(numpy_matmul(), ref),
        "numpy dot(out=)+b": common.rel_err(out_dot, ref),
    }
    fns = {"mbengine": ours, "numpy x@w.T+b": numpy_matmul, "numpy dot(out=)+b": numpy_dot}
    return fns, errors


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
    from mbengine.kernels import attention as AT

    import numba

    D, H = HEAD_DIM, HEADS
    A = H * D
    qkv = rng.standard_normal((B * S, 3 * A), dtype=np.float32)
    mask_add = np.zeros((B, S), np.float32)
    scale = np.float32(D ** -0.5)
    out = np.zeros((B * S, A), np.float32)
    probs = np.zeros((1, 1, 1, 1), np.float32)

    # the scratch arguments have changed over versions: the ones after `want_probs` are scratch,
    # shaped by the module's scratch_shapes() when it has one, else known by name
    params = list(inspect.signature(AT.attention.py_func).parameters)
    given = dict(q=qkv, q_off=0, k=qkv, k_off=A, v=qkv, v_off=2 * A, mask_add=mask_add, heads=H, head_dim=D,
                 scale=scale, out=out, out_off=0, probs=probs, want_probs=0)
    threads = numba.config.NUMBA_NUM_THREADS
    scratch_names = params[params.index("want_probs") + 1:]
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
def run(args) -> dict:
    import numba
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
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
                        fns, errors = linear_systems(M, K, N, rng)
                        flops = 2.0 * M * K * N
                        shape = f"{M}x{K}x{N}"
                    else:
                        fns, errors = attention_systems(1, S, rng)
                        flops = 4.0 * 1 * HEADS * S * S * HEAD_DIM
                        shape = f"B1 S{S} H{HEADS} D{HEAD_DIM}"
                    number = {}
                    for name, fn in fns.items():
                        number[name] = common.calibrate(fn, args.sample_ms / 1e3)
                        common.pause(gap)
                except Exception as e:  # noqa: BLE001 - report the others
                    why = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:300]
                    print(f"threads {n}  {kind} {label} S{S}: FAILED, skipped ({why})", flush=True)
                    failures.append({"kernel": kind, "what": label, "seq": S, "threads": n, "error": why})
                    continue
                times, load, attempts = common.time_when_quiet(
                    fns, args.repeats, retries=args.retries, wait=args.wait_quiet,
                    warmup=args.warmup, number=number, gap=gap)
                st = {name: common.stats(t) for name, t in times.items()}
                gflops = {name: flops / s["median"] / 1e9 for name, s in st.items()}
                numpy_names = [x for x in fns if x != "mbengine"]
                best_np = max(numpy_names, key=lambda x: gflops[x])
                row = {
                    "kernel": kind, "shape": shape, "what": label, "seq": S, "M": S if kind == "linear" else None,
                    "K": K, "N": N, "threads": n, "flop": flops,
                    "median_us": {k: v["median"] * 1e6 for k, v in st.items()},
                    "min_us": {k: v["min"] * 1e6 for k, v in st.items()},
                    "gflops": gflops,
                    "calls_per_sample": number,
                    "best_numpy": best_np,
                    "ratio_vs_best_numpy": gflops["mbengine"] / gflops[best_np],
                    "rel_err_vs_float64": errors,
                    "other_cpu": load["other_cpu"], "steal": load.get("steal"),
                    "attempts": attempts,
                }
                rows.append(row)
                line = (f"threads {n}  {shape:>20}  {label:<34}"
                        f" ours {gflops['mbengine']:7.1f} GFLOP/s ({st['mbengine']['median'] * 1e6:8.1f} us)  ")
                line += "  ".join(f"{k} {gflops[k]:7.1f}" for k in numpy_names)
                line += f"  ours/numpy {row['ratio_vs_best_numpy']:.2f}  err {errors['mbengine']:.1e}"
                if load["other_cpu"] is not None:
                    line += f"  other load {100 * load['other_cpu']:.0f}%"
                print(line, flush=True)
    return {"rows": rows, "failures": failures}


def table(rows) -> str:
    headers = ["kernel", "shape (MxKxN)", "used for", "threads", "ours µs", "ours GFLOP/s",
               "numpy x@w.T+b GFLOP/s", "numpy dot(out=)+b GFLOP/s", "ours / best numpy", "ours rel err",
               "other load %"]
    out = []
    for r in rows:
        g = r["gflops"]
        out.append([r["kernel"], r["shape"], r["what"], r["threads"], f"{r['median_us']['mbengine']:.1f}",
                    f"{g['mbengine']:.1f}",
                    f"{g.get('numpy x@w.T+b', g.get('numpy')):.1f}",
                    f"{g['numpy dot(out=)+b']:.1f}" if "numpy dot(out=)+b" in g else "–",
                    f"{r['ratio_vs_best_numpy']:.2f}", f"{r['rel_err_vs_float64']['mbengine']:.1e}",
                    "–" if r.get("other_cpu") is None else f"{100 * r['other_cpu']:.0f}"])
    return common.markdown_table(headers, out)


def plot(rows, path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return False
    threads = sorted({r["threads"] for r in rows})
    fig, axes = plt.subplots(len(threads), 1, figsize=(13, 4.2 * len(threads)), squeeze=False)
    for ax, n in zip(axes[:, 0], threads):
        rs = [r for r in rows if r["threads"] == n]
        labels = [f"{r['shape']}\n{r['what']}" for r in rs]
        xs = np.arange(len(rs))
        systems = ["mbengine", "numpy x@w.T+b", "numpy dot(out=)+b"]
        width = 0.27
        for i, sname in enumerate(systems):
            vals = [r["gflops"].get(sname, r["gflops"].get("numpy") if sname == "numpy x@w.T+b" else np.nan)
                    for r in rs]
            ax.bar(xs + (i - 1) * width, vals, width, label=sname)
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=6.5, rotation=30, ha="right")
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"{n} thread{'s' if n > 1 else ''}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seqs", type=int, nargs="+", default=[128, 384], help="token counts M (batch 1)")
    ap.add_argument("--repeats", type=int, default=30, help="timed rounds per shape")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds per shape")
    ap.add_argument("--sample-ms", type=float, default=5.0, help="target length of one sample (back-to-back calls)")
    ap.add_argument("--gap", type=float, default=None,
                    help="seconds of pause (busy-wait on the main thread) after each sample (default: 0.15 s when "
                         "threads > 1, so OpenBLAS's workers, which spin ~100 ms after a call, are idle again; "
                         "none at 1 thread)")
    ap.add_argument("--wait-quiet", type=float, default=120.0, metavar="S",
                    help="before each thread count, wait up to S seconds for other processes to go idle (0: don't)")
    ap.add_argument("--retries", type=int, default=2,
                    help="time a case again (up to this many times) if other processes were busy meanwhile")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--name", default="kernels", help="results file name: bench/results/<name>.{json,md,png}")
    ap.add_argument(common.KEEP_ENV_FLAG, action="store_true", help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE")
    args = ap.parse_args(argv)

    env = common.environment()
    common.print_environment(env)
    git = env.get("git")  # the sources that ran: taken before the run (others may edit them meanwhile)
    mon = common.LoadMonitor().start()
    data = run(args)
    load = mon.stop()
    fr = [r["other_cpu"] for r in data["rows"] if r.get("other_cpu") is not None]
    warning = common.load_warning({"other_cpu": max(fr), "other_cpus_equiv": max(fr) * (os.cpu_count() or 1)}
                                  if fr else {})
    env = common.environment()  # again: threading layer and BLAS are known now
    env["git"] = git
    data = {"benchmark": "kernels", "date": common.now(), "command": common.command_line(), "environment": env,
            "settings": {k: v for k, v in vars(args).items()}, "load": load, **data}
    md = table(data["rows"])
    notes = ["GFLOP/s = 2·M·K·N / median (linear, bias epilogue only); 4·B·heads·S²·head_dim / median (attention)",
             "ours: numba.set_num_threads(n); numpy: threadpoolctl.threadpool_limits(n, 'blas'); "
             "systems timed round robin, each sample ~%g ms of back-to-back calls, %d rounds; %s"
             % (args.sample_ms, args.repeats,
                "0.15 s pause (main thread busy-waits) after every sample at >1 thread (OpenBLAS workers spin "
                "~100 ms after a call)" if args.gap is None else f"{args.gap:g} s pause after each sample"),
             "rel err: ||ours - ref|| / ||ref|| against a float64 NumPy reference",
             "other load: CPU time used by other processes during that case, as a share of all CPUs"]
    for f in data["failures"]:
        notes.append(f"FAILED (skipped): {f['kernel']} {f['what']} S{f['seq']} threads {f['threads']}: {f['error']}")
    if warning:
        notes.append(warning)
    jpath, mpath = common.write_results(args.name, data, table=md, title="Kernel benchmark", notes=notes)
    print()
    print(md)
    if not args.no_plot and data["rows"]:
        png = os.path.join(common.RESULTS_DIR, f"{args.name}.png")
        if plot(data["rows"], png):
            print(f"plot: {png}")
    if warning:
        print(warning)
    print(f"wrote {jpath}, {mpath}")


if __name__ == "__main__":
    main()
